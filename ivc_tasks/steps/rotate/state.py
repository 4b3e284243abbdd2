"""One rotation's state, in one typed record, and what every phase works with.

``RotationState`` is everything a rotation knows as it runs (the old and new servers, the old
server's status before the rotation, the kept ports, the floating IPs to move...). It is
frozen: a phase (``forward.py``, ``rollback.py``) is a function ``phase(run, state) ->
Learned`` that returns what it learned, and only the executor applies it
(``state.learn(learned)``). ``Run`` is what does not change while a rotation runs: the cloud,
the preflight, the flags, the lock and the report the phases write to.

``initial_state`` is the one place that decides, from the preflight, what the rotation starts
from, the old server's status ("was") included: the executor runs from it and the dry run
describes from it, so they cannot disagree.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypedDict

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import IvcError
from ivc_tasks.resources.lock import ServerLock
from ivc_tasks.resources.markers import Markers, port_move
from ivc_tasks.steps.rotate.decide import ROTATE
from ivc_tasks.steps.rotate.preflight import Prepared, RotateOptions
from ivc_tasks.steps.rotate.report import PhaseRecord, RotationReport

log = logging.getLogger("ivc")


class Learned(TypedDict, total=False):
    """What a phase learned: the fields of ``RotationState`` it changes."""

    old: Any | None
    new: Any | None
    ports: Mapping[str, Any | None]
    fips: Mapping[str, tuple[str, str]]
    outage_start: float | None
    new_fresh: bool


class PhaseFailed(Exception):
    """A phase failed after it learned something the rollback needs (the new server it made):
    the executor records ``learned``, then handles ``cause``."""

    def __init__(self, cause: IvcError, learned: Learned):
        super().__init__(str(cause))
        self.cause, self.learned = cause, learned


@dataclass(frozen=True)
class RotationState:
    """What one rotation knows, as of the last phase (frozen; see ``learn``).

    :ivar kind: the decision being carried out (``decide.py``); ``ROTATE`` once a resumed
        rotation was rolled back and is done afresh (``again``).
    :ivar old_id: the old server's id (also when it is gone: from the new one's markers).
    :ivar old: the old server as last fetched (None: gone).
    :ivar new: the new server as last fetched (None: not made yet).
    :ivar was: the old server's status before the rotation (a rollback starts it again when
        it was ACTIVE); decided once, by ``initial_state``.
    :ivar ports: the kept ports (``keep_address``): network id -> port (None: to make).
    :ivar listed_volumes: the declared volumes as preflight listed them, while nothing can
        have moved them since (a plain rotation, before ``delete-old``); else {}.
    :ivar fips: ``{floating ip id: (port id, network id)}`` to move, from the markers.
    :ivar outage_start: when the old server stopped serving (clock), for the report.
    :ivar new_fresh: ``new`` is as fetched since the last metadata change (saves a GET).
    :ivar again: the rotation is being done afresh after a rollback (``rotate-again``).
    """

    kind: str
    old_id: str | None
    old: Any | None = None
    new: Any | None = None
    was: str | None = None
    ports: Mapping[str, Any | None] = field(default_factory=dict)
    listed_volumes: Mapping[str, Any] = field(default_factory=dict)
    fips: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    outage_start: float | None = None
    new_fresh: bool = True
    again: bool = False

    def learn(self, learned: Learned | None = None, **more: Any) -> RotationState:
        """This state with what a phase learned."""
        return dataclasses.replace(self, **{**(learned or {}), **more})

    @property
    def keep_port(self) -> bool:
        """Whether a kept port exists to move (it moves before the new server is made)."""
        return any(p is not None for p in self.ports.values())


def was_status(old: Any | None, new: Any | None, ports: Mapping[str, Any | None],
               listed_status: str | None) -> str | None:
    """The old server's status before the rotation: what the new server's markers say, else
    what a kept port's move tags say (the port moved before the new server existed), else its
    status as this run listed it."""
    old_id = old.id if old is not None else Markers.of(new).replaces
    moves = [m for p in ports.values() if (m := port_move(p)) is not None and m.from_id == old_id]
    return (Markers.of(new).was or Markers.of(old).was
            or next((m.was for m in moves if m.was), None) or listed_status)


def initial_state(prepared: Prepared) -> RotationState:
    """What a rotation starts from (the executor runs from it, the dry run describes it)."""
    decision = prepared.decision
    old = prepared.servers.get(decision.old.id) if decision.old else None
    new = prepared.servers.get(decision.new.id) if decision.new else None
    ports = dict(prepared.plan.ports) if prepared.plan is not None else {}
    return RotationState(
        kind=decision.kind, old_id=old.id if old is not None else Markers.of(new).replaces,
        old=old, new=new, ports=ports,
        was=was_status(old, new, ports, decision.old.status if decision.old else None),
        listed_volumes=dict(prepared.listed_volumes) if decision.kind == ROTATE else {})


@dataclass
class Run:
    """What does not change while one server's rotation runs; the report its phases fill."""

    cloud: Cloud
    prepared: Prepared
    options: RotateOptions
    lock: ServerLock | None
    report: RotationReport

    @property
    def name(self) -> str:
        return self.prepared.name

    @property
    def conn(self) -> Any:
        return self.cloud.conn

    @property
    def boot_timeout(self) -> float:
        return self.options.boot_timeout or self.cloud.settings.boot_timeout

    @contextmanager
    def phase(self, name: str, note: str = "") -> Iterator[PhaseRecord]:
        """Verify the lock, announce and time a phase (``phase: <name> (server S)``)."""
        if self.lock is not None:
            self.lock.verify()
        log.info("phase: %s (server %s)", name, self.name)
        record = PhaseRecord(name, note=note)
        self.report.phases.append(record)
        start = self.cloud.clock()
        try:
            yield record
        except BaseException:
            record.ok = False
            raise
        finally:
            record.seconds = self.cloud.clock() - start
