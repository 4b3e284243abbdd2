"""deploy: ensure-secgroups, then create-instance and attach-volume for every declared server.

Everything is planned before anything changes: the security groups, and for each server its
image, flavor, networks, groups, keypair and volumes, so that a bad reference is a ConfigError
(exit 2) with nothing touched. Then the steps run in order and stop at the first failure,
which ``DeployFailed`` reports together with the steps that did run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import IvcError
from ivc_tasks.ops.instances import (
    apply_instance, apply_keypairs, describe_instance, plan_instance, take_keypairs,
)
from ivc_tasks.ops.resolve import list_security_groups, list_servers, prefetch
from ivc_tasks.ops.result import StepResult
from ivc_tasks.ops.secgroups import apply_secgroups, describe_secgroups, plan_secgroups
from ivc_tasks.ops.volumes import AttachPlan, apply_attach, describe_attach, plan_attach
from ivc_tasks.spec import Spec

STEP = "deploy"


@dataclass
class DeployResult:
    """The steps that ran (or would run, in a dry run), in order."""

    dry_run: bool = False
    steps: list[StepResult] = field(default_factory=list)

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
        }

    def lines(self) -> list[str]:
        return [line for step in self.steps for line in step.lines()]


class DeployFailed(IvcError):
    """A step of a deploy failed; ``result`` holds the steps that completed before it.

    Its exit code is the failed step's (1 for a cloud failure).
    """

    def __init__(self, step: str, target: str | None, cause: IvcError, result: DeployResult):
        self.step, self.target, self.cause, self.result = step, target, cause, result
        self.exit_code = cause.exit_code
        done = ", ".join(f"{s.step}{' ' + s.target if s.target else ''}"
                         f"{' (changed)' if s.changed else ''}" for s in result.steps) or "none"
        where = f"{step} {target}" if target else step
        super().__init__(f"deploy stopped at {where}: {cause}\n  steps completed: {done}")


def deploy(cloud: Cloud, spec: Spec, *, dry_run: bool = False, timeout: float | None = None
           ) -> DeployResult:
    """Plan every step, then run them in order, stopping at the first failure.

    :param dry_run: return the plans; change nothing.
    :param timeout: seconds to wait for each server to be ACTIVE (default boot_timeout).
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
    result = DeployResult(dry_run=dry_run)
    if dry_run:
        result.steps.append(describe_secgroups(sg_plan))
        if keypairs:
            result.steps.append(apply_keypairs(cloud, keypairs, dry_run=True))
        for plan in instance_plans:
            result.steps.append(describe_instance(cloud, plan, group_ids=sg_plan.ids))
            if plan.name in attach_plans:
                result.steps.append(describe_attach(attach_plans[plan.name]))
        return result

    def run(step: str, target: str | None, fn, *args, **kwargs) -> StepResult:
        try:
            outcome = fn(*args, **kwargs)
        except IvcError as exc:
            raise DeployFailed(step, target, exc, result) from exc
        result.steps.append(outcome)
        return outcome

    groups = run("ensure-secgroups", None, apply_secgroups, cloud, sg_plan)
    group_ids = {**sg_plan.ids, **groups.info.get("ids", {})}
    if keypairs:
        run("ensure-keypairs", None, apply_keypairs, cloud, keypairs)
    for plan in instance_plans:
        run("create-instance", plan.name, apply_instance, cloud, plan, group_ids=group_ids,
            timeout=timeout)
        if not plan.declared.volumes:
            continue
        run("attach-volume", plan.name, _attach, cloud, spec, plan.name,
            attach_plans.get(plan.name))
    return result


def _attach(cloud: Cloud, spec: Spec, name: str, plan: AttachPlan | None) -> StepResult:
    """Attach-volume in a deploy. A server created in this run has its volumes attached at
    boot: planning it makes no request (its latest fetch holds its metadata and volumes)."""
    if plan is None:
        plan = plan_attach(cloud, spec, name, server=cloud.cache.get(f"server:{name}"))
    return apply_attach(cloud, plan)
