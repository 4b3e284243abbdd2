"""Carry out one server's decision: run its phases (``phases.plan_phases``) in order.

The rotation's state is one frozen record (``state.RotationState``); each phase returns what it
learned and only this module applies it. Decided here, once: what the rotation starts from
(``state.initial_state``: the old server's status, "was", included), when the new server is
ready for the forward phases, the point of no return, and whether a resumed rotation that was
rolled back is done afresh ("rotate-again", recorded here only).

A phase that fails before ``delete-old`` rolls the rotation back (``rollback.py``; exit 3); from
``delete-old`` on it is a CloudError (exit 1) and a rerun finishes the rotation. The lock is
verified before every phase (``Run.phase``).

Adding a phase (a gate, say): write ``def gate(r: Run, s: RotationState) -> Learned`` (in
``forward.py`` or its own module), name it in ``phases.PHASES`` and where ``plan_phases``
places it, add it to ``RUNNERS`` below and a note to ``describe.NOTES``; the coverage test
(tests/unit/test_rotate_logic.py) fails until all three agree. A gate that raises an IvcError
before ``delete-old`` is rolled back like any failing phase.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import CloudError, IvcError, RolledBack
from ivc_tasks.resources.lock import LockLost, ServerLock
from ivc_tasks.resources.markers import Markers
from ivc_tasks.resources.resolve import forget
from ivc_tasks.resources.servers import generation
from ivc_tasks.resources.waits import get_server
from ivc_tasks.steps.rotate.decide import CREATE, FINISH, FORWARD, ROLLBACK, ROTATE
from ivc_tasks.steps.rotate.forward import (
    create,
    delete_old,
    finish,
    move_floating_ips,
    move_port,
    move_volumes,
    stop_old,
)
from ivc_tasks.steps.rotate.gates import healthy_gate, ready_gate
from ivc_tasks.steps.rotate.phases import POINT_OF_NO_RETURN, plan_phases
from ivc_tasks.steps.rotate.preflight import Prepared, RotateOptions
from ivc_tasks.steps.rotate.report import PhaseRecord, RotationReport
from ivc_tasks.steps.rotate.rollback import resume_rollback, roll_back
from ivc_tasks.steps.rotate.state import (
    Learned,
    PhaseFailed,
    RotationState,
    Run,
    initial_state,
    was_status,
)

log = logging.getLogger("ivc")

Phase = Callable[[Run, RotationState], Learned]
RUNNERS: dict[str, Phase] = {
    "rollback": resume_rollback,
    "create": create,
    "ready-gate": ready_gate,
    "healthy-gate": healthy_gate,
    "stop": stop_old,
    "move-port": move_port,
    "move-volumes": move_volumes,
    "move-floating-ip": move_floating_ips,
    "delete-old": delete_old,
    "finish": finish,
}
OUTCOMES = {CREATE: "created", ROTATE: "rotated", FORWARD: "resumed: rolled forward",
            FINISH: "resumed: rolled forward", ROLLBACK: "resumed: rolled back, then rotated"}


class Rotation:
    """One server's rotation: runs the phases, holds the one state record."""

    def __init__(self, cloud: Cloud, prepared: Prepared, options: RotateOptions,
                 lock: ServerLock | None, report: RotationReport):
        self.r = Run(cloud, prepared, options, lock, report)
        self.state = initial_state(prepared)

    # -- running ---------------------------------------------------------------------------
    def run(self) -> None:
        r, s = self.r, self.state
        r.report.old_id = s.old_id
        decision = r.prepared.decision
        if s.kind in (FORWARD, FINISH):
            log.info("server %s: resuming rotation %s: %s; rolling forward", r.name,
                     Markers.of(s.new).rotation, decision.reason)
            if not decision.wait_for_new:
                self.state = s.learn(new=get_server(r.cloud, s.new.id) or s.new)
        self.execute(plan_phases(s.kind, old_status=s.old.status if s.old else None,
                                 wait_for_new=decision.wait_for_new, keep_port=s.keep_port))
        r.report.outcome = OUTCOMES[ROLLBACK] if self.state.again else \
            "adopted" if decision.adopt else OUTCOMES[s.kind]

    def execute(self, names: list[str]) -> None:
        ready = "create" not in names and "rollback" not in names  # the new one exists
        if ready and self.state.new is not None:
            self.state = self._ready(self.state)
        for i, name in enumerate(names):
            if name == POINT_OF_NO_RETURN:  # nothing listed earlier is trusted from here on
                self.state = self.state.learn(listed_volumes={})
            try:
                try:
                    self.state = self.state.learn(RUNNERS[name](self.r, self.state))
                except PhaseFailed as failed:  # what it learned first (the new server it made)
                    self.state = self.state.learn(failed.learned)
                    raise failed.cause from None
            except LockLost:
                raise
            except IvcError as exc:
                self._failed(name, exc, past_return=POINT_OF_NO_RETURN in names[:i + 1])
                return  # rotated afresh after a rollback
            if name == "rollback":  # a resumed rotation rolled back: now rotate afresh
                self.state = self._afresh()
            elif name == "create" and self.state.new is not None and self.state.kind != CREATE:
                self.state = self._ready(self.state)

    def _ready(self, s: RotationState) -> RotationState:
        """The new server is ACTIVE: what the forward phases work from."""
        r = self.r
        old = s.old
        if s.kind != ROTATE:  # resuming: the old server as the cloud shows it now
            old = get_server(r.cloud, s.old_id) if s.old_id else None
        r.report.new_id = s.new.id
        r.report.generation = generation(s.new)
        return s.learn(old=old, fips=Markers.of(s.new).fips or Markers.of(old).fips)

    def _failed(self, phase: str, exc: IvcError, *, past_return: bool) -> None:
        """A phase failed: roll back (raises RolledBack), or say how to finish (CloudError);
        only a resumed rotation whose new server never came up is rolled back and then done
        afresh (returns)."""
        r, s = self.r, self.state
        if phase == "rollback" or s.kind == CREATE:
            raise exc
        if phase == "create" and s.new is not None and s.kind in (FORWARD, FINISH):
            if s.kind == FINISH:  # resuming, the old server gone: nothing to go back to
                raise exc
            try:
                roll_back(r, s, "create", exc)
            except RolledBack:
                self.state = self._afresh()
                self.execute(plan_phases(ROTATE, old_status=self.state.old.status,
                                         keep_port=self.state.keep_port))
                return
        if past_return or (s.new is not None and s.old is None):
            raise CloudError(_no_way_back(r.name, s, phase, exc)) from None
        roll_back(r, s, phase, exc)
        raise AssertionError("unreachable: roll_back raises")  # pragma: no cover

    def _afresh(self) -> RotationState:
        """After a resumed rotation was rolled back: the run was asked to rotate, so the old
        server, as the cloud shows it now, is rotated (the ``rotate-again`` phase)."""
        r, s = self.r, self.state
        r.report.phases.append(PhaseRecord("rotate-again", note="after the rollback"))
        fresh = get_server(r.cloud, s.old_id)
        if fresh is None:  # pragma: no cover - rollback keeps the old server
            raise CloudError(f"server {r.name}: the old server {s.old_id} is gone")
        forget(r.cloud, "floating_ips")
        r.report.decision = f"{ROLLBACK}+{ROTATE}"
        return RotationState(kind=ROTATE, old_id=fresh.id, old=fresh, new=None,
                             was=was_status(fresh, None, {}, fresh.status), ports=s.ports,
                             again=True)


def _no_way_back(name: str, s: RotationState, phase: str, exc: IvcError) -> str:
    """What happened, when the old server is deleted (or gone) and the rotation cannot finish."""
    rerun = f"run `invoke rotate --name {name}` again to finish it"
    if s.new is None:  # keep_address + ERROR: the old server went first to free its port
        return (f"rotate {name}: the old server {s.old_id} is deleted (it was in ERROR; "
                f"deleting it freed its kept port) but phase {phase} failed and no new server "
                f"was made: {exc}; {rerun} (it creates the server)")
    return (f"rotate {name}: the new server {s.new.id} is ACTIVE but the rotation could not "
            f"complete (phase {phase}): {exc}; {rerun}")
