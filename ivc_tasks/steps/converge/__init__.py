"""converge: bring an environment to its declarations, replacing only what must be replaced.

  plan.py    what each server needs and why, from one ``status`` (the drift ``status`` shows)
  apply.py   the in-place changes (security groups, metadata, volumes, floating IP)
and here, the order: ensure the security groups and keypairs; create the missing servers
(each under its lock, looking again there: a concurrent run may have made it); change in place
what can be; rotate what must be replaced, at most ``max_unavailable`` at a time, through
rotate's entry point (``steps.rotate.rotate``: its preflight, locks, checks and rollback); the
first failed rotation stops new ones, the rest are named untouched; then, with ``prune``, delete
the servers this environment made that are no longer declared (``steps.destroy``: volumes
detached and kept, ivc's floating IP released). A second converge changes nothing.

Exit codes (``ConvergeFailed``): 3 when every failed rotation rolled back (the old servers
serve as before), else 1; 2 for invalid input (nothing changed); 4 a lock held.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import EXIT_ROLLED_BACK, IvcError, RolledBack
from ivc_tasks.resources.resolve import forget
from ivc_tasks.result import StepResult
from ivc_tasks.spec import Spec
from ivc_tasks.steps.converge.apply import create_one, ensure_shared, update_one
from ivc_tasks.steps.converge.plan import (
    CREATE,
    ROTATE,
    UNCHANGED,
    UNDECLARED,
    UPDATE,
    ServerPlan,
    plan_converge,
)
from ivc_tasks.steps.quota_check import check_quota

log = logging.getLogger("ivc")
STEP = "converge"


@dataclass
class ConvergeResult:
    dry_run: bool = False
    max_unavailable: int = 1
    servers: list[ServerPlan] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        if self.dry_run:
            return False
        return any(s.changed for s in self.steps) or any(
            p.outcome in ("created", "updated", "rotated", "pruned") for p in self.servers)

    def planned(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for p in self.servers:
            out.setdefault(p.action, []).append(p.name)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"step": STEP, "changed": self.changed, "dry_run": self.dry_run,
                "max_unavailable": self.max_unavailable,
                "servers": [p.to_dict(dry_run=self.dry_run) for p in self.servers],
                "planned": self.planned(),
                "actions": [{"step": s.step, "target": s.target, **a.to_dict()}
                            for s in self.steps for a in s.actions],
                "warnings": self.warnings + [w for s in self.steps for w in s.warnings]}

    def lines(self) -> list[str]:
        head = [line for s in self.steps for line in s.lines() if s.changed or self.dry_run]
        body = [p.line(dry_run=self.dry_run) for p in self.servers]
        if not self.servers:
            body = ["no server declared, none made by ivc in this environment"]
        tail = "nothing to change" if not self.dry_run and not self.changed else ""
        return head + body + ([tail] if tail else [])


class ConvergeFailed(IvcError):
    """A rotation (or a create, an update) failed; ``result`` names every server's outcome."""

    def __init__(self, message: str, result: ConvergeResult, exit_code: int):
        self.result, self.exit_code = result, exit_code
        super().__init__(message)


def converge(cloud: Cloud, spec: Spec, *, max_unavailable: int = 1, prune: bool = False,
             dry_run: bool = False) -> ConvergeResult:
    """Make the environment match its declarations (see the module's docstring).

    :param max_unavailable: rotations at once (each takes its server out for its outage).
    :param prune: delete the servers of this environment that are no longer declared.
    :param dry_run: the plan (actions and reasons); change nothing.
    :raises ConfigError: invalid input or a missing resource (nothing changed).
    :raises ConvergeFailed: a server failed; the others' outcomes are in its result.
    """
    plans = plan_converge(cloud, spec)
    result = ConvergeResult(dry_run=dry_run, max_unavailable=max_unavailable, servers=plans)
    # the peak need (creates, and one extra server per rotation in flight) before any change
    result.warnings += check_quota(
        cloud, spec, creates=[p.name for p in plans if p.action == CREATE],
        rotations=[p.name for p in plans if p.action == ROTATE], in_flight=max_unavailable)
    if dry_run:
        result.steps += ensure_shared(cloud, spec, dry_run=True)
        if not prune:
            return result
        for p in plans:
            if p.action == UNDECLARED:
                p.reasons = ["no longer declared: deleted by --prune (volumes detached and kept)"]
        return result
    result.steps += ensure_shared(cloud, spec)
    failed: list[tuple[ServerPlan, IvcError]] = []
    for p in (p for p in plans if p.action == CREATE):
        _timed(cloud, p, "created", failed, lambda p=p: create_one(cloud, spec, p))
    for p in (p for p in plans if p.action == UPDATE):
        _timed(cloud, p, "updated", failed, lambda p=p: update_one(cloud, spec, p))
    for p in plans:
        if p.action == UNCHANGED:
            p.outcome = "unchanged"
    rotations = [p for p in plans if p.action == ROTATE]
    if rotations and not failed:
        _rotate(cloud, spec, rotations, max_unavailable, failed)
    elif rotations:
        for p in rotations:
            p.outcome, p.error = "not started", "an earlier server failed"
    undeclared = [p for p in plans if p.action == UNDECLARED]
    for p in undeclared:
        p.outcome = "left alone"
    if prune and undeclared and not failed:
        _prune(cloud, spec, undeclared, failed)
    forget(cloud, "servers", "volumes", "floating_ips")
    if failed:
        codes = {exc.exit_code for _, exc in failed}
        code = EXIT_ROLLED_BACK if codes == {EXIT_ROLLED_BACK} else \
            codes.pop() if len(codes) == 1 else 1
        untouched = [p.name for p in plans if p.outcome == "not started"]
        raise ConvergeFailed(
            "converge: " + "; ".join(f"{p.name} {p.action} failed: {exc}" for p, exc in failed)
            + (f"; not started (untouched): {', '.join(untouched)}" if untouched else ""),
            result, code)
    return result


def _timed(cloud: Cloud, plan: ServerPlan, outcome: str,
           failed: list[tuple[ServerPlan, IvcError]], fn: Any) -> None:
    start = cloud.clock()
    try:
        changed = fn()
        plan.outcome = outcome if changed is not False else "unchanged"
    except IvcError as exc:
        plan.outcome, plan.error = "failed", str(exc)
        failed.append((plan, exc))
    plan.seconds = cloud.clock() - start


def _rotate(cloud: Cloud, spec: Spec, plans: list[ServerPlan], max_unavailable: int,
            failed: list[tuple[ServerPlan, IvcError]]) -> None:
    """Rotate the servers through rotate's entry point, ``max_unavailable`` at a time."""
    from ivc_tasks.steps.rotate import RotateFailed, RotateOptions, rotate

    names = [p.name for p in plans]
    by_name = {p.name: p for p in plans}
    start = cloud.clock()
    try:
        outcome = rotate(cloud, spec, names, options=RotateOptions(parallel=max_unavailable))
        errors: dict[str, IvcError] = {}
    except RotateFailed as exc:
        outcome = exc.result
        errors = {n: e for n, e in getattr(exc, "failures", [])}
        if not errors:
            errors = {r.name: RolledBack(r.error) if exc.exit_code == EXIT_ROLLED_BACK
                      else exc for r in outcome.rotations if r.error and
                      not r.error.startswith("not started")}
    except (RolledBack, IvcError) as exc:
        outcome = getattr(exc, "result", None)
        if outcome is None:  # refused before any change (invalid input, a lock): raise it
            raise
        errors = {names[0]: exc}
    for report in outcome.rotations:
        p = by_name.get(report.name)
        if p is None:
            continue
        p.seconds = sum(ph.seconds or 0 for ph in report.phases) or cloud.clock() - start
        if report.error and report.error.startswith("not started"):
            p.outcome, p.error = "not started", "an earlier rotation failed"
        elif report.error:
            exc = errors.get(report.name) or IvcError(report.error)
            p.outcome = "rolled back" if exc.exit_code == EXIT_ROLLED_BACK else "failed"
            p.error = report.error
            failed.append((p, exc))
        else:
            p.outcome = "rotated"
    for p in plans:
        p.outcome = p.outcome or "not started"


def _prune(cloud: Cloud, spec: Spec, plans: list[ServerPlan],
           failed: list[tuple[ServerPlan, IvcError]]) -> None:
    from ivc_tasks.steps.destroy import destroy

    done: set[str] = set()
    for p in plans:
        if p.name in done:
            p.outcome = "pruned"
            continue
        done.add(p.name)
        _timed(cloud, p, "pruned", failed, lambda p=p: destroy(cloud, spec, p.name).changed)
