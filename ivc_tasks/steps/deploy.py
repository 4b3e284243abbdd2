"""deploy: ensure-secgroups, then create-instance and attach-volume for every declared server.

Everything is planned before anything changes: the security groups, and for each server its
image, flavor, networks, groups, keypair and volumes, so that a bad reference is a ConfigError
(exit 2) with nothing touched. Then the steps run in order and stop at the first failure,
which ``DeployFailed`` reports together with the steps that did run.

With ``parallel`` > 1 (``--parallel``, ``IVC_PARALLEL``), the security groups (and keypairs)
come first, then each server's create-instance and attach-volume run side by side, up to
``parallel`` servers at once, their waits served by one shared poller (``resources.poller``). The
first failure stops new work (servers not started are left alone), running ones finish, and
``DeployFailed`` names each server: changed or not, failed, not started. Each log line of a
server's job starts with its name; the result ends with one summary line per server.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import IvcError
from ivc_tasks.resources.lock import GROUPS_LOCK, held
from ivc_tasks.resources.poller import shared_poller
from ivc_tasks.resources.resolve import forget, list_security_groups, list_servers, prefetch
from ivc_tasks.resources.servers import made_by_run
from ivc_tasks.result import StepResult
from ivc_tasks.spec import Spec
from ivc_tasks.steps.checks import console_preflight
from ivc_tasks.steps.gates import GateResult, deploy_gate, describe_gate
from ivc_tasks.steps.instances import apply_instance_locked, describe_instance, plan_instance
from ivc_tasks.steps.keypairs import apply_keypairs, describe_keypairs, take_keypairs
from ivc_tasks.steps.parallel import run_jobs
from ivc_tasks.steps.quota_check import check_quota
from ivc_tasks.steps.secgroups import (
    SecGroupsPlan,
    apply_secgroups,
    describe_secgroups,
    plan_secgroups,
)
from ivc_tasks.steps.volumes import AttachPlan, apply_attach, describe_attach, plan_attach

STEP = "deploy"


@dataclass
class ServerSummary:
    """How one server's part of a parallel deploy ended: ``outcome`` is ``done``, ``failed``
    or ``not started``."""

    name: str
    outcome: str
    changed: bool = False
    seconds: float = 0.0
    failed_step: str | None = None
    error: str | None = None

    def line(self) -> str:
        if self.outcome == "not started":
            return f"{self.name}: not started (an earlier server failed), unchanged"
        what = "changed" if self.changed else "unchanged"
        if self.outcome == "failed":
            return f"{self.name}: FAILED at {self.failed_step} after {self.seconds:.1f} s " \
                   f"({what}): {self.error}"
        return f"{self.name}: done in {self.seconds:.1f} s ({what})"


@dataclass
class DeployResult:
    """The steps that ran (or would run, in a dry run), in order; with ``--parallel``, one
    summary per server too."""

    dry_run: bool = False
    steps: list[StepResult] = field(default_factory=list)
    servers: list[ServerSummary] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(step.changed for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": STEP,
            "changed": self.changed,
            "dry_run": self.dry_run,
            "actions": [{"step": s.step, "target": s.target, **a.to_dict()}
                        for s in self.steps for a in s.actions],
            "steps": [s.to_dict() for s in self.steps],
            "warnings": [w for s in self.steps for w in s.warnings],
            **({"servers": [dataclasses.asdict(s) for s in self.servers]}
               if self.servers else {}),
        }

    def lines(self) -> list[str]:
        return [line for step in self.steps for line in step.lines()] + \
            [s.line() for s in self.servers]


class DeployFailed(IvcError):
    """A step of a deploy failed; ``result`` holds the steps that completed before it.

    Its exit code is the failed step's (1 for a cloud failure).
    """

    def __init__(self, step: str, target: str | None, cause: IvcError, result: DeployResult):
        self.step, self.target, self.cause, self.result = step, target, cause, result
        self.exit_code = cause.exit_code
        if result.servers:  # side by side: each server's outcome
            failed = [s for s in result.servers if s.outcome == "failed"]
            super().__init__(f"deploy: {len(failed)} of {len(result.servers)} servers failed "
                             f"({', '.join(s.name for s in failed)}); each server:\n  "
                             + "\n  ".join(s.line() for s in result.servers))
            return
        done = ", ".join(f"{s.step}{' ' + s.target if s.target else ''}"
                         f"{' (changed)' if s.changed else ''}" for s in result.steps) or "none"
        where = f"{step} {target}" if target else step
        super().__init__(f"deploy stopped at {where}: {cause}\n  steps completed: {done}")


def deploy(cloud: Cloud, spec: Spec, *, dry_run: bool = False, timeout: float | None = None,
           parallel: int | None = None, skip_checks: bool = False) -> DeployResult:
    """Plan every step, then run them in order, stopping at the first failure.

    :param dry_run: return the plans; change nothing.
    :param timeout: seconds to wait for each server to be ACTIVE (default boot_timeout).
    :param parallel: servers at once (default ``cloud.settings.parallel``, i.e. IVC_PARALLEL, 1).
    :param skip_checks: a server this run creates is not gated by its checks (loud).
    :raises ConfigError: invalid input or a missing resource (before any change).
    :raises CloudError: a listing failed while planning (before any change).
    :raises DeployFailed: a step failed; earlier steps' changes stay.
    """
    prefetch(cloud, *([list_security_groups] if spec.secgroups else []),
             *([list_servers] if spec.servers else []))
    sg_plan = plan_secgroups(cloud, spec)
    pending_groups = {gp.declared.name for gp in sg_plan.groups if gp.existing is None}
    instance_plans = [plan_instance(cloud, spec, name, pending_groups=pending_groups)
                      for name in spec.servers]
    attach_plans = {p.name: plan_attach(cloud, spec, p.name, server=p.existing)
                    for p in instance_plans if p.existing is not None and p.declared.volumes}
    keypairs = take_keypairs(instance_plans)  # each declared keypair once, before any server
    if not skip_checks:  # a cloud that refuses the console: refused here, before any change
        console_preflight(cloud, [p.declared for p in instance_plans if p.existing is None],
                          next((p.existing.id for p in instance_plans if p.existing), None))
    result = DeployResult(dry_run=dry_run)
    if not dry_run:  # every server it creates, before any change (exit 2, nothing changed)
        check_quota(cloud, spec, creates=[p.name for p in instance_plans if p.existing is None])
    if dry_run:
        result.steps.append(describe_secgroups(sg_plan))
        if keypairs:
            result.steps.append(describe_keypairs(keypairs))
        for plan in instance_plans:
            result.steps.append(describe_instance(cloud, plan, group_ids=sg_plan.ids))
            if plan.name in attach_plans:
                result.steps.append(describe_attach(attach_plans[plan.name]))
            if plan.existing is None:
                what = describe_gate(plan.declared, skip=skip_checks)
                result.steps.append(GateResult("check", plan.name, dry_run=True,
                                               info={"checks": what}, plan=what))
        return result

    def run(step: str, target: str | None, fn, *args, **kwargs) -> StepResult:
        try:
            outcome = fn(*args, **kwargs)
        except IvcError as exc:
            raise DeployFailed(step, target, exc, result) from exc
        if outcome is not None:  # (a server not created by this run has no check step)
            result.steps.append(outcome)
        return outcome

    groups = run("ensure-secgroups", None, ensure_secgroups_locked, cloud, spec, sg_plan)
    group_ids = {**sg_plan.ids, **groups.info.get("ids", {})}
    if keypairs:
        run("ensure-keypairs", None, apply_keypairs, cloud, keypairs)
    workers = cloud.settings.parallel if parallel is None else parallel
    if workers > 1 and len(instance_plans) > 1:
        return _side_by_side(cloud, spec, instance_plans, attach_plans, group_ids, result,
                             timeout=timeout, workers=workers, skip_checks=skip_checks)
    for plan in instance_plans:
        made = run("create-instance", plan.name, apply_instance_locked, cloud, spec, plan,
                   group_ids=group_ids, timeout=timeout)
        if plan.declared.volumes:
            run("attach-volume", plan.name, _attach, cloud, spec, plan.name,
                attach_plans.get(plan.name))
        run("check", plan.name, deploy_gate, cloud, plan.declared, made, skip=skip_checks)
    return result


class _ServerFailed(Exception):
    """One server's job failed at ``step``, after the steps in ``done``."""

    def __init__(self, step: str, cause: IvcError, done: list[StepResult]):
        super().__init__(str(cause))
        self.step, self.cause, self.done = step, cause, done


def _side_by_side(cloud: Cloud, spec: Spec, plans: list[Any], attach_plans: dict[str, Any],
                  group_ids: dict[str, str], result: DeployResult, *, timeout: float | None,
                  workers: int, skip_checks: bool = False) -> DeployResult:
    """Each server's create-instance and attach-volume, up to ``workers`` servers at once.

    :raises DeployFailed: a server failed (the others that had started finished first).
    """
    def one(plan: Any) -> list[StepResult]:
        view = cloud.worker_view()  # its own lookups
        done: list[StepResult] = []
        step = "create-instance"
        try:
            made = apply_instance_locked(view, spec, plan, group_ids=group_ids,
                                         timeout=timeout)
            done.append(made)
            if plan.declared.volumes:
                step = "attach-volume"
                done.append(_attach(view, spec, plan.name, attach_plans.get(plan.name)))
            step = "check"
            gated = deploy_gate(view, plan.declared, made, skip=skip_checks)
            done += [gated] if gated is not None else []
        except IvcError as exc:
            raise _ServerFailed(step, exc, done) from exc
        return done

    with shared_poller(cloud):
        outcomes = run_jobs({p.name: (lambda p=p: one(p)) for p in plans}, workers=workers)
    forget(cloud, "servers", "volumes", "floating_ips")
    first: tuple[str, IvcError] | None = None
    for plan in plans:
        outcome = outcomes[plan.name]
        error = outcome.error
        if isinstance(error, _ServerFailed):
            steps = error.done
        elif error is not None:
            raise error  # not an IvcError: a bug, reported as such by the task
        else:
            steps = outcome.value or []
        result.steps.extend(steps)
        summary = ServerSummary(plan.name, "done" if outcome.ok else "failed" if outcome.started
                                else "not started", changed=any(s.changed for s in steps),
                                seconds=round(outcome.seconds, 1))
        if isinstance(error, _ServerFailed):
            summary.failed_step, summary.error = error.step, str(error.cause)
            first = first or (error.step, error.cause)
            summary.changed = summary.changed or _changed_before_failing(cloud, plan)
        result.servers.append(summary)
    if first is not None:
        step, cause = first
        failed = next(s.name for s in result.servers if s.outcome == "failed")
        raise DeployFailed(step, failed, cause, result)
    return result


def ensure_secgroups_locked(cloud: Cloud, spec: Spec, plan: SecGroupsPlan) -> StepResult:
    """ensure-secgroups under the environment's groups lock when it creates anything (two
    deploys at once would otherwise both create a group of the same name); planned again
    under the lock."""
    if not any(gp.existing is None for gp in plan.groups):
        return apply_secgroups(cloud, plan)
    with held(cloud, GROUPS_LOCK, op="ensure-secgroups"):
        forget(cloud, "security_groups")
        return apply_secgroups(cloud, plan_secgroups(cloud, spec, [gp.declared.name
                                                                   for gp in plan.groups]))


def _changed_before_failing(cloud: Cloud, plan: Any) -> bool:
    """A server whose create-instance failed after its create request (it went to ERROR, or
    timed out) did change the cloud: a server exists now that did not."""
    if plan.existing is not None:
        return False
    try:
        return made_by_run(cloud, plan.name) is not None
    except IvcError:
        return False


def _attach(cloud: Cloud, spec: Spec, name: str, plan: AttachPlan | None) -> StepResult:
    """Attach-volume in a deploy. A server created in this run has its volumes attached at
    boot: planning it makes no request (its latest fetch holds its metadata and volumes)."""
    if plan is None:
        plan = plan_attach(cloud, spec, name, server=cloud.listings.get(f"server:{name}"))
    return apply_attach(cloud, plan)
