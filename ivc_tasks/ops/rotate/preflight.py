"""preflight: everything one rotation needs, checked before anything changes (listings only).

Declarations valid, every referenced resource found, user_data rendered (the spec loader checks
its size), every declared volume available or attached only to this server's servers, and the
decision (``decide``) made from one server listing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import CloudError, ConfigError
from ivc_tasks.ops.attachments import VOLUME_BUSY, volume_holders
from ivc_tasks.ops.instances import InstancePlan, plan_instance
from ivc_tasks.ops.lock import lock_name, parse_holder
from ivc_tasks.ops.resolve import list_keypairs, list_servers, list_volumes, pick
from ivc_tasks.ops.rotate.decide import CONFLICT, CREATE, ROTATE, Decision, Seen, decide
from ivc_tasks.ops.servers import (
    META_ROTATION, WAITING_STATES, attached_ids, declared_server, generation, is_managed,
    managed_servers, server_label,
)
from ivc_tasks.spec import Server, Spec


@dataclass(frozen=True)
class RotateOptions:
    """What the flags say; every other timing is the run's Settings, on the Cloud."""

    stop: bool = True
    boot_timeout: float | None = None  # default cloud.boot_timeout
    parallel: int = 1


@dataclass
class Prepared:
    """The preflight of one server: its declaration, the decision, and what it needs."""

    declared: Server
    decision: Decision
    servers: dict[str, Any]  # id -> listed server
    plan: InstancePlan | None = None  # the new server's plan (resolved references)
    volumes: dict[str, str] = field(default_factory=dict)  # declared ref -> volume id
    listed_volumes: dict[str, Any] = field(default_factory=dict)  # ref -> volume as listed
    warnings: list[str] = field(default_factory=list)
    group_ids: dict[str, str] = field(default_factory=dict)  # security group name -> id

    @property
    def name(self) -> str:
        return self.declared.name


def _plan_new_server(cloud: Cloud, spec: Spec, name: str, pending_groups: Iterable[str]
                     ) -> InstancePlan:
    """Resolve everything a NEW server for ``name`` needs, even though one exists.

    ``plan_instance`` resolves only when it finds no server, so it is given a view of the cloud
    whose server listing leaves this name's servers out (the other listings are shared).
    """
    view = dataclasses.replace(cloud, cache=dict(cloud.cache))
    view.cache["servers"] = [s for s in list_servers(cloud) if not is_managed(s, cloud.env, name)]
    plan = plan_instance(view, spec, name, pending_groups=set(pending_groups),
                         boot_volumes=False)
    cloud.cache.update({k: v for k, v in view.cache.items() if k != "servers"})
    return plan


def preflight(cloud: Cloud, spec: Spec, name: str, *, pending_groups: Iterable[str] = ()
              ) -> Prepared:
    """Check everything one rotation needs before anything changes (listings only).

    :raises ConfigError: undeclared name, a reference that does not resolve, a volume attached
        to a server that is not this one's, servers ivc cannot account for.
    :raises CloudCallError: a listing failed.
    """
    declared = declared_server(spec, name)
    found = managed_servers(cloud, name)
    decision = decide([Seen.of(s) for s in found])
    servers = {s.id: s for s in found}
    if decision.kind == CONFLICT:
        listed = ", ".join(f"{s.id} ({s.status}, gen {generation(s)}"
                           + (f", rotation {s.metadata.get(META_ROTATION)}"
                              if (s.metadata or {}).get(META_ROTATION) else "") + ")"
                           for s in found)
        raise ConfigError(f"server {name}: {decision.reason}: {listed}; ivc will not guess which "
                          f"one serves: delete the extra ones (openstack server delete <id>) "
                          f"and run again")
    prepared = Prepared(declared=declared, decision=decision, servers=servers)
    if decision.kind == CREATE:
        prepared.plan = plan_instance(cloud, spec, name, pending_groups=set(pending_groups))
        prepared.volumes = {ref: v.id for ref, v in prepared.plan.boot_volumes.items()}
        return prepared
    prepared.plan = _plan_new_server(cloud, spec, name, pending_groups)
    old = decision.old
    if old is not None and old.status in WAITING_STATES and decision.kind == ROTATE:
        raise CloudError(f"server {name} ({old.id}) is {old.status}; run rotate again once it "
                         "has settled")
    # this name's servers, and the old server a rotation under way replaces (gone already, a
    # volume may still be detaching from it)
    ours = set(servers) | {s.replaces for s in (decision.old, decision.new)
                           if s is not None and s.replaces}
    listed = list_volumes(cloud)
    for i, ref in enumerate(declared.volumes):
        entry = f"servers.{name}.volumes[{i}]"
        volume = pick(listed, ref, kind="volume", spec_path=spec.path, entry=entry,
                      fix="ivc never creates volumes: create it, or fix the name")
        holders = set(volume_holders(volume))
        foreign = holders - ours
        if foreign:
            raise ConfigError(f"{spec.path}: {entry}: volume {ref!r} ({volume.id}) is attached "
                              f"to server {server_label(cloud, next(iter(foreign)))}, not to {name}; "
                              "detach it there first (ivc never moves a volume implicitly)")
        settled = ("available", "in-use") if decision.kind == ROTATE else \
            ("available", "in-use", *VOLUME_BUSY)
        if volume.status not in settled:
            raise ConfigError(f"{spec.path}: {entry}: volume {ref!r} ({volume.id}) is "
                              f"{volume.status!r}; fix it in the cloud first")
        prepared.volumes[ref] = volume.id
        prepared.listed_volumes[ref] = volume
    if old is not None and decision.kind == ROTATE:
        server = servers[old.id]
        undeclared = attached_ids(server) - set(prepared.volumes.values())
        if undeclared:
            prepared.warnings.append(
                f"server {name}: volumes {', '.join(sorted(undeclared))} are attached but not "
                "declared: rotate does not move them; deleting the old server detaches them "
                "(they stay, available)")
    return prepared


def lock_holder(cloud: Cloud, name: str) -> str | None:
    """Who holds the server's lock, from the keypair listing (for a dry run); None if free."""
    wanted = lock_name(cloud.env, name)
    for keypair in list_keypairs(cloud):
        if keypair.name == wanted:
            holder = parse_holder(getattr(keypair, "public_key", None))
            return (f"locked by {holder.describe()}" if holder else
                    f"locked (keypair {wanted})") + ": a real run would exit 4"
    return None
