"""The two gates of a rotation, as phases (``phase(run, state) -> Learned``, as ``forward.py``s).

  ready-gate    after create, BEFORE the old server is stopped: the checks that need neither
                the volumes nor the address (``cloud_init``, and ``command`` checks without
                ``{address}``). A failure rolls back: the new server is deleted, the old one
                was never touched (no outage); exit 3.
  healthy-gate  after the volumes and floating IPs moved, before delete-old: every check,
                ``{address}`` being the address clients use now (the moved floating IP).
                A failure rolls back: the address and volumes go back, the old server starts,
                and its own checks run again (``recheck_old``); exit 3 naming the check.

A crash during a gate needs nothing of its own: a gate changes nothing, and a rerun resumes
from the markers and runs the gate again. ``--skip-checks`` (``RotateOptions.skip_checks``)
skips both, loudly. After the healthy gate (or after create, for a server rotate creates), the
new server's host keys go to the environment's known_hosts file.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ivc_tasks.errors import IvcError
from ivc_tasks.steps.checks import ALL, HEALTHY, READY, ChecksFailed, check_server
from ivc_tasks.steps.gates import record_host_keys, skipped_warning

if TYPE_CHECKING:
    from ivc_tasks.steps.rotate.state import Learned, RotationState, Run

log = logging.getLogger("ivc")


def _gate(r: Run, s: RotationState, gate: str) -> Learned:
    new_id = s.new.id if s.new is not None else r.report.new_id
    if new_id is None:  # pragma: no cover - the gates run after create
        return {}
    if r.options.skip_checks:
        with r.phase(f"{gate}-gate", note="SKIPPED (--skip-checks)"):
            r.report.warnings.append(skipped_warning(r.name, new_id))
        return {}
    with r.phase(f"{gate}-gate") as record:
        report = check_server(r.cloud, r.prepared.declared, new_id,
                              gate=READY if gate == READY else ALL)
        record.note = "; ".join(o.line() for o in report.outcomes) or "no checks declared"
        record.checks = [o.to_dict() for o in report.outcomes]
        if not report.ok:
            raise ChecksFailed(report, f"the {gate} gate failed")
    if gate == HEALTHY or s.old is None:
        r.report.warnings += record_host_keys(r.cloud, r.name, new_id)
    return {}


def ready_gate(r: Run, s: RotationState) -> Learned:
    """The ready gate (see the module's docstring); learns nothing.

    :raises ChecksFailed: a check failed; the executor rolls back.
    """
    return _gate(r, s, READY)


def healthy_gate(r: Run, s: RotationState) -> Learned:
    """The healthy gate (see the module's docstring); learns nothing.

    :raises ChecksFailed: a check failed; the executor rolls back.
    """
    return _gate(r, s, HEALTHY)


def recheck_old(r: Run, s: RotationState, phase: str) -> str:
    """After a rollback from the healthy gate: the old server's own checks, run again; the text
    the RolledBack message ends with ("" for any other phase)."""
    if phase != "healthy-gate" or r.options.skip_checks or s.old_id is None:
        return ""
    try:
        report = check_server(r.cloud, r.prepared.declared, s.old_id, gate=ALL)
    except IvcError as exc:
        return f"; its checks could not run again: {exc}"
    if report.ok:
        return "; its checks pass again"
    bad = report.failed
    return (f"; ITS OWN CHECKS FAIL TOO: {bad.name} {bad.outcome}: {bad.answer}" if bad else "")
