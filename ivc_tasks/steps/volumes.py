"""attach-volume: attach a server's declared, existing volumes to it. ivc never creates or
deletes a volume.

Find, compare, act only if needed:
  * a volume that the server's ``ivc_vol:<volume>`` metadata records, and that Nova lists as
    attached to the server, is attached: no Cinder request at all (the steady state);
  * otherwise ONE request lists the project's volumes (attachments included); each declared
    volume is resolved by name or id. Missing or ambiguous, attached to another server (named),
    or not available: ConfigError before anything is attached, ALL volumes checked first;
  * each volume to attach is fetched fresh, attached, and polled every ``poll_interval`` until
    ``in-use``; ``error_attaching``, ``error``, or back to ``available`` (Nova rolled the attach
    back) is a failure (openstacksdk's own waits would wait for the timeout instead);
  * finally one request records the attached volumes in the server's metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import CloudError, ConfigError
from ivc_tasks.hints import did_you_mean, listed
from ivc_tasks.resources.attachments import (
    send_attach,
    volume_holders,
    volume_problem,
    wait_attached,
)
from ivc_tasks.resources.resolve import list_volumes, pick
from ivc_tasks.resources.servers import (
    attached_ids,
    declared_server,
    error_hint,
    fault_message,
    managed_servers,
    recorded_attached,
    set_metadata,
    volume_key,
)
from ivc_tasks.resources.waits import get_volume
from ivc_tasks.result import Action, StepResult
from ivc_tasks.spec import Server, Spec

log = logging.getLogger("ivc")
STEP = "attach-volume"


@dataclass
class VolumePlan:
    """One declared volume: ``attach`` it, or it is attached (``record`` it if not recorded)."""

    ref: str
    volume_id: str
    volume: Any | None = None
    attach: bool = False
    record: bool = False


@dataclass
class AttachPlan:
    declared: Server
    server: Any
    volumes: list[VolumePlan] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.declared.name


def select_volumes(cloud: Cloud, spec: Spec, declared: Server, volumes: Iterable[str] = ()
                   ) -> list[str]:
    """The declared volumes of the server, or the subset ``volumes`` of them.

    A given volume may name a declared one by its name or its id (that takes one listing).

    :raises ConfigError: a given volume is not one of the server's declared volumes.
    """
    given = list(dict.fromkeys(volumes or ()))
    unknown = [ref for ref in given if ref not in declared.volumes]
    if unknown:
        volumes_listed = list_volumes(cloud)
        declared_by_id = {v.id: ref for ref in declared.volumes for v in volumes_listed
                          if ref in (v.id, v.name)}
        for ref in unknown:
            matches = {declared_by_id[v.id] for v in volumes_listed
                       if ref in (v.id, v.name) and v.id in declared_by_id}
            if len(matches) != 1:
                hint = did_you_mean(ref, declared.volumes,
                                    otherwise=f"declared: {listed(declared.volumes)}")
                raise ConfigError(f"{spec.path}: --volume {ref!r}: not a volume of servers."
                                  f"{declared.name}.volumes; {hint}")
            given[given.index(ref)] = matches.pop()
    return list(dict.fromkeys(given)) or list(declared.volumes)


def find_server(cloud: Cloud, spec: Spec, name: str) -> Any:
    """The server ivc made for ``name`` (newest generation).

    :raises ConfigError: there is none. :raises CloudError: it is in ERROR.
    """
    found = managed_servers(cloud, name)
    if not found:
        raise ConfigError(f"{spec.path}: servers.{name}: no server made by ivc for {name!r} in "
                          f"environment {cloud.env!r}; run `invoke create-instance --name "
                          f"{name}` first")
    server = found[0]
    if server.status == "ERROR":
        raise CloudError(f"server {name} ({server.id}) is in ERROR: {fault_message(server)}; "
                         f"{error_hint(name)}")
    return server


def plan_attach(cloud: Cloud, spec: Spec, name: str, volumes: Iterable[str] = (), *,
                server: Any | None = None) -> AttachPlan:
    """Check every volume to attach to server ``name`` before anything is attached.

    :param server: the server, when the caller has it (deploy); else it is looked up.
    :raises ConfigError: unknown or undeclared volume, ambiguous name, a volume attached to
        another server or not available, or no such server.
    :raises CloudError: the server is in ERROR; a listing failed.
    """
    declared = declared_server(spec, name)
    refs = select_volumes(cloud, spec, declared, volumes)
    server = server if server is not None else find_server(cloud, spec, name)
    plan = AttachPlan(declared=declared, server=server)
    pending = []
    for ref in refs:
        volume_id = recorded_attached(server, ref)
        if volume_id:
            plan.volumes.append(VolumePlan(ref=ref, volume_id=volume_id))
        else:
            pending.append(ref)
    if not pending:
        return plan
    listed = list_volumes(cloud)
    attached_here = attached_ids(server)
    for ref in pending:
        entry = f"servers.{name}.volumes[{declared.volumes.index(ref)}]"
        volume = pick(listed, ref, kind="volume", spec_path=spec.path, entry=entry,
                      fix="ivc never creates volumes: create it, or fix the name")
        if volume.id in attached_here or server.id in volume_holders(volume):
            plan.volumes.append(VolumePlan(ref=ref, volume_id=volume.id, volume=volume,
                                           record=True))
        elif problem := volume_problem(cloud, volume, ref, server=name):
            raise ConfigError(f"{spec.path}: {entry}: {problem}")
        else:
            plan.volumes.append(VolumePlan(ref=ref, volume_id=volume.id, volume=volume,
                                           attach=True, record=True))
    return plan


def apply_attach(cloud: Cloud, plan: AttachPlan, *, timeout: float | None = None) -> StepResult:
    """Attach what the plan says, wait for each, and record them in the server's metadata.

    :raises CloudError: an attach failed or timed out, or a cloud call failed.
    :raises ConfigError: a volume got attached elsewhere since the plan was made.
    """
    name, server = plan.name, plan.server
    result = StepResult(step=STEP, target=name)
    record: dict[str, str] = {}
    for vp in plan.volumes:
        if vp.attach:
            fresh = get_volume(cloud, vp.volume_id)
            if fresh is None:
                raise CloudError(f"volume {vp.ref!r} ({vp.volume_id}) was deleted meanwhile; "
                                 "fix the declarations or restore it")
            if server.id not in volume_holders(fresh):
                problem = volume_problem(cloud, fresh, vp.ref, server=name)
                if problem:  # it changed since the plan checked it
                    raise (ConfigError if problem.elsewhere else CloudError)(
                        f"{problem} (it changed since this run checked it)")
                send_attach(cloud, vp.volume_id, vp.ref, server.id, name)
                wait_attached(cloud, vp.volume_id, vp.ref, server.id,
                              cloud.settings.volume_timeout if timeout is None else timeout, eager=False)
                log.info("volume %s is in-use by %s", vp.ref, name)
                result.actions.append(Action("attach", "volume", vp.ref, f"to {name}", {
                    "id": vp.volume_id, "server": name, "server_id": server.id}))
        if vp.record:
            record[volume_key(vp.ref)] = vp.volume_id
    if record:
        set_metadata(cloud, server, f"record volumes in the metadata of {name}", record)
        if not result.actions:
            result.actions.append(Action("record", "server_metadata", name,
                                         ", ".join(sorted(record)), {"keys": sorted(record)}))
    cloud.listings.forget("volumes")
    result.info = {"server_id": server.id,
                   "volumes": {vp.ref: vp.volume_id for vp in plan.volumes}}
    return result


def describe_attach(plan: AttachPlan) -> StepResult:
    """What ``apply_attach`` would do, for a dry run."""
    result = StepResult(step=STEP, target=plan.name, dry_run=True)
    for vp in plan.volumes:
        if vp.attach:
            result.actions.append(Action("attach", "volume", vp.ref, f"to {plan.name}", {
                "id": vp.volume_id, "server": plan.name}))
    recorded = sorted(volume_key(vp.ref) for vp in plan.volumes if vp.record and not vp.attach)
    if recorded and not result.actions:
        result.actions.append(Action("record", "server_metadata", plan.name,
                                     ", ".join(recorded), {"keys": recorded}))
    result.info = {"server_id": plan.server.id,
                   "volumes": {vp.ref: vp.volume_id for vp in plan.volumes}}
    return result


def attach_volume(cloud: Cloud, spec: Spec, name: str, volumes: Iterable[str] = (), *,
                  dry_run: bool = False, timeout: float | None = None) -> StepResult:
    """Attach the declared volumes (all, or ``volumes``) of server ``name`` to it.

    :param dry_run: return the plan; change nothing.
    :param timeout: seconds to wait for each volume to be in-use (default volume_timeout).
    :raises ConfigError: invalid input, a volume attached elsewhere (before any change).
    :raises CloudError: an attach failed or timed out.
    """
    plan = plan_attach(cloud, spec, name, volumes)
    return describe_attach(plan) if dry_run else apply_attach(cloud, plan, timeout=timeout)

