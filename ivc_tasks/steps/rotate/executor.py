"""Carry out one server's decision: run its phases (``phases.plan_phases``) in order.

A phase that fails before ``delete-old`` rolls the rotation back (``rollback.py``; exit 3); from
``delete-old`` on it is a CloudError (exit 1) and a rerun finishes the rotation. The lock is
verified before every phase.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import CloudError, IvcError, RolledBack
from ivc_tasks.resources.lock import LockLost, ServerLock
from ivc_tasks.resources.resolve import forget
from ivc_tasks.steps.rotate import forward, gates, rollback
from ivc_tasks.steps.rotate.decide import CREATE, FINISH, FORWARD, ROLLBACK, ROTATE, Decision, Seen
from ivc_tasks.steps.rotate.markers import fip_markers, markers_of
from ivc_tasks.steps.rotate.phases import POINT_OF_NO_RETURN, plan_phases
from ivc_tasks.steps.rotate.preflight import Prepared, RotateOptions
from ivc_tasks.steps.rotate.report import PhaseRecord, RotationReport
from ivc_tasks.resources.servers import META_REPLACES, META_ROTATION, generation
from ivc_tasks.resources.waits import get_server

log = logging.getLogger("ivc")

RUNNERS = {
    "rollback": rollback.resume_rollback,
    "create": forward.create,
    "ready-gate": gates.ready_gate,
    "healthy-gate": gates.healthy_gate,
    "stop": forward.stop_old,
    "move-port": forward.move_port,
    "move-volumes": forward.move_volumes,
    "move-floating-ip": forward.move_floating_ips,
    "delete-old": forward.delete_old,
    "finish": forward.finish,
}
OUTCOMES = {CREATE: "created", ROTATE: "rotated", FORWARD: "resumed: rolled forward",
            FINISH: "resumed: rolled forward", ROLLBACK: "resumed: rolled back, then rotated"}


class Rotation:
    """One server's rotation: what it knows of the old and new servers, and its report."""

    def __init__(self, cloud: Cloud, prepared: Prepared, options: RotateOptions,
                 lock: ServerLock | None, report: RotationReport):
        self.cloud, self.prepared, self.options, self.lock = cloud, prepared, options, lock
        self.report = report
        self.name = prepared.name
        self.conn = cloud.conn
        decision = prepared.decision
        self.kind = decision.kind
        self.old_listed = decision.old  # the old server as this run first listed it
        self.old: Any | None = prepared.servers.get(decision.old.id) if decision.old else None
        self.new: Any | None = prepared.servers.get(decision.new.id) if decision.new else None
        self.old_id: str | None = self.old.id if self.old is not None else \
            markers_of(self.new).get(META_REPLACES)
        self.as_listed = self.kind == ROTATE  # nothing moved since preflight listed it
        self.fips: dict[str, tuple[str, str]] = {}
        self.outage_start: float | None = None
        self.metadata_changed = False
        self.no_return = False  # the old server is gone (or being deleted): no rollback
        self.rotated_again = False
        self._forward_ready = False

    @property
    def keep_port(self) -> bool:
        """Whether a kept port (``keep_address``) exists to move: it moves before create."""
        plan = self.prepared.plan
        return plan is not None and any(p is not None for p in plan.ports.values())

    @property
    def boot_timeout(self) -> float:
        return self.options.boot_timeout or self.cloud.settings.boot_timeout

    @contextmanager
    def phase(self, name: str, note: str = "") -> Iterator[PhaseRecord]:
        """Announce and time a phase (``phase: <name> (server S)`` on stderr)."""
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

    # -- running ---------------------------------------------------------------------------
    def run(self) -> None:
        self.report.old_id = self.old_id
        if self.kind in (FORWARD, FINISH):
            log.info("server %s: resuming rotation %s: %s; rolling forward", self.name,
                     markers_of(self.new).get(META_ROTATION), self.prepared.decision.reason)
            if not self.prepared.decision.wait_for_new:
                self.new = get_server(self.cloud, self.new.id) or self.new
        names = plan_phases(self.kind, old_status=self.old.status if self.old else None,
                            wait_for_new=self.prepared.decision.wait_for_new,
                            keep_port=self.keep_port)
        self.execute(names)
        self.report.outcome = OUTCOMES[ROLLBACK] if self.rotated_again else \
            "adopted" if self.prepared.decision.adopt else OUTCOMES[self.kind]

    def execute(self, names: list[str]) -> None:
        for name in names:
            if name not in ("rollback", "create") and not self._forward_ready \
                    and self.new is not None:  # (a kept port moves before the new server)
                self._ready_forward()
            if name == POINT_OF_NO_RETURN:
                self.no_return = True
            try:
                RUNNERS[name](self)
            except LockLost:
                raise
            except IvcError as exc:
                self._failed(name, exc)  # raises, or rotated afresh after a rollback
                return

    def _ready_forward(self) -> None:
        """The new server is ACTIVE: what the forward phases work from."""
        if not self.as_listed:  # resuming: the old server as the cloud shows it now
            self.old = get_server(self.cloud, self.old_id) if self.old_id else None
        self.report.new_id = self.new.id
        self.report.generation = generation(self.new)
        self.fips = fip_markers(self.new.metadata) or fip_markers(markers_of(self.old))
        if self.old is None:
            self.no_return = True
        self._forward_ready = True

    def _failed(self, phase: str, exc: IvcError) -> None:
        """A phase failed: roll back (raises RolledBack), or say how to finish (CloudError);
        only a resumed rotation whose new server never came up is rolled back and then done
        afresh (returns)."""
        if phase == "rollback" or self.kind == CREATE:
            raise exc
        if phase == "create" and self.new is not None and self.kind in (FORWARD, FINISH):
            if self.old_listed is None:  # resuming, the old server gone: nothing to go back to
                raise exc
            try:
                rollback.roll_back(self, "create", exc)
            except RolledBack:
                self.rotate_again()
                return
        if self.no_return:
            new_id = self.new.id if self.new is not None else "?"
            raise CloudError(f"rotate {self.name}: the new server {new_id} is ACTIVE but the "
                             f"rotation could not complete: {exc}; run `invoke rotate --name "
                             f"{self.name}` again to finish it") from None
        rollback.roll_back(self, phase, exc)
        raise AssertionError("unreachable: roll_back raises")  # pragma: no cover

    def rotate_again(self) -> None:
        """After a resumed rotation was rolled back: the run was asked to rotate, so rotate."""
        self.report.phases.append(PhaseRecord("rotate-again", note="after the rollback"))
        self.prepare_again()
        self.execute(plan_phases(ROTATE, old_status=self.old.status, keep_port=self.keep_port))

    def prepare_again(self) -> None:
        """Reset to a plain rotation of the old server as the cloud shows it now."""
        fresh = get_server(self.cloud, self.old_id)
        if fresh is None:  # pragma: no cover - rollback keeps the old server
            raise CloudError(f"server {self.name}: the old server {self.old_id} is gone")
        self.prepared.servers = {self.old_id: fresh}
        self.prepared.listed_volumes = {}  # the rollback moved them since preflight
        forget(self.cloud, "floating_ips")
        self.prepared.decision = Decision(ROTATE, old=Seen.of(fresh), reason="after rollback")
        self.report.decision = f"{ROLLBACK}+{ROTATE}"
        self.kind, self.old, self.new = ROTATE, fresh, None
        self.old_listed = self.prepared.decision.old
        self.as_listed, self.no_return, self._forward_ready = True, False, False
        self.rotated_again = True
