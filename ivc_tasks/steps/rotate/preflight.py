"""preflight: everything one rotation needs, checked before anything changes (listings only).

Declarations valid, every referenced resource found, user_data rendered (the spec loader checks
its size), every declared volume available or attached only to this server's servers, and the
decision (``decide``) made from one server listing.

Identity: the servers of the name must have been made from these declarations (``ivc_spec``,
``servers.check_same_spec``). A rotate never leaves a volume the old server held detached
without being asked: an undeclared volume attached to the old server stops the rotate (exit 2)
unless ``--detach-undeclared``. Adopting (``--adopt``: the old server is one ivc did not make)
is the explicit request: its undeclared volumes are named in a warning and stay, detached.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import CloudError, ConfigError
from ivc_tasks.hints import did_you_mean
from ivc_tasks.hints import listed as listed_names
from ivc_tasks.resources.attachments import VOLUME_BUSY, volume_problem
from ivc_tasks.resources.floating_ips import server_floating_ip
from ivc_tasks.resources.lock import lock_name, lock_text
from ivc_tasks.resources.markers import Markers
from ivc_tasks.resources.resolve import list_keypairs, list_servers, list_volumes, pick
from ivc_tasks.resources.servers import (
    META_ENV,
    META_MANAGED,
    META_NAME,
    WAITING_STATES,
    attached_ids,
    check_same_spec,
    declared_server,
    generation,
    is_managed,
    managed_servers,
    present,
    unmanaged_twins,
)
from ivc_tasks.spec import Server, Spec
from ivc_tasks.steps.instances import InstancePlan, plan_instance
from ivc_tasks.steps.rotate.decide import CONFLICT, CREATE, ROTATE, Decision, Seen, decide


@dataclass(frozen=True)
class RotateOptions:
    """What the flags say; every other timing is the run's Settings, on the Cloud."""

    stop: bool = True
    boot_timeout: float | None = None  # default cloud.settings.boot_timeout
    parallel: int = 1
    adopt: str | None = None  # a server ivc did not make (id or name), to take over
    detach_undeclared: bool = False  # let undeclared volumes of the old server stay detached
    skip_checks: bool = False  # --skip-checks: no ready or healthy gate (loud)


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


def _plan_new_server(cloud: Cloud, spec: Spec, name: str, pending_groups: Iterable[str],
                     replacing: Iterable[str] = ()) -> InstancePlan:
    """Resolve everything a NEW server for ``name`` needs, even though one exists.

    ``plan_instance`` resolves only when it finds no server, so it is given a view of the cloud
    whose server listing leaves this name's servers out (the other listings are shared).
    """
    view = cloud.worker_view(servers=[s for s in list_servers(cloud)
                                      if not is_managed(s, cloud.env, name)
                                      and s not in unmanaged_twins(cloud, name)])
    plan = plan_instance(view, spec, name, pending_groups=set(pending_groups),
                         boot_volumes=False, replacing=set(replacing))
    cloud.listings.take_from(view.listings, skip=("servers",))
    return plan


def check_floating_choice(cloud: Cloud, prepared: Prepared) -> None:
    """No external network chosen for a new floating IP is an error only when one is needed:
    when no server of the rotation holds one to move (moving one needs no choice).

    :raises ConfigError: one is needed, and several external networks leave it open.
    """
    floating = prepared.plan.floating if prepared.plan is not None else None
    if floating is None or floating.network is not None:
        return
    if not any(server_floating_ip(cloud, s)[1] is not None for s in prepared.servers.values()):
        raise ConfigError(floating.problem)


def adopted_server(cloud: Cloud, spec: Spec, name: str, ref: str) -> Any:
    """The server ``--adopt`` names (an id, else a name), which ivc must not have made.

    :raises ConfigError: none, several, or one ivc made.
    """
    listing = present(list_servers(cloud))
    found = [s for s in listing if s.id == ref] or [s for s in listing if s.name == ref]
    if not found:
        names = sorted({s.name for s in listing if (s.metadata or {}).get(META_MANAGED) != "1"})
        raise ConfigError(f"--adopt {ref!r}: no server with that id or name in the project; "
                          + did_you_mean(ref, names, otherwise="servers ivc did not make: "
                                         + listed_names(names, none="none")))
    if len(found) > 1:
        raise ConfigError(f"--adopt {ref!r}: {len(found)} servers of that name ("
                          + ", ".join(f"{s.id} {s.status}" for s in found)
                          + "); give the id of the one to adopt")
    server = found[0]
    meta = server.metadata or {}
    if is_managed(server, cloud.env, name):
        raise ConfigError(f"--adopt {ref!r}: server {server.id} is ivc's server {name} already; "
                          f"`invoke rotate --name {name}` (without --adopt) replaces it")
    if meta.get(META_MANAGED) == "1":
        raise ConfigError(f"--adopt {ref!r}: server {server.id} was made by ivc (environment "
                          f"{meta.get(META_ENV)!r}, server {meta.get(META_NAME)!r}); ivc adopts "
                          "only servers it did not make")
    return server


def preflight(cloud: Cloud, spec: Spec, name: str, *, pending_groups: Iterable[str] = (),
              options: RotateOptions | None = None) -> Prepared:
    """Check everything one rotation needs before anything changes (listings only).

    :param options: ``adopt`` (take over a server ivc did not make) and ``detach_undeclared``
        are read here.
    :raises ConfigError: undeclared name, a reference that does not resolve, a volume attached
        to a server that is not this one's, servers ivc cannot account for, servers made from
        other declarations, undeclared volumes on the old server (without
        ``detach_undeclared``), an ``adopt`` that names no server ivc did not make.
    :raises CloudCallError: a listing failed.
    """
    options = options or RotateOptions()
    declared = declared_server(spec, name)
    found = managed_servers(cloud, name)
    check_same_spec(spec, name, found)
    # the old server of a rotation under way that ivc did not make (an adoption): by its id
    by_id = {s.id: s for s in list_servers(cloud)}
    ids = {s.id for s in found}
    replaced = [by_id[r] for r in dict.fromkeys(Markers.of(s).replaces for s in found)
                if r and r not in ids and r in by_id
                and (by_id[r].metadata or {}).get(META_MANAGED) != "1"]
    adopt = adopted_server(cloud, spec, name, options.adopt) if options.adopt else None
    decision = decide([Seen.of(s) for s in found + replaced],
                      adopt=Seen.of(adopt) if adopt is not None else None)
    servers = {s.id: s for s in [*found, *replaced, *([adopt] if adopt is not None else [])]}
    if decision.kind == CONFLICT:
        _refuse_conflict(name, decision, found, adopt)
    prepared = Prepared(declared=declared, decision=decision, servers=servers)
    if decision.kind == CREATE:
        prepared.plan = plan_instance(cloud, spec, name, pending_groups=set(pending_groups))
        prepared.volumes = {ref: v.id for ref, v in prepared.plan.boot_volumes.items()}
        return prepared
    prepared.plan = _plan_new_server(cloud, spec, name, pending_groups, replacing=servers)
    old = decision.old
    check_floating_choice(cloud, prepared)
    if decision.adopt and adopt.name != name:
        prepared.warnings.append(f"server {name}: adopting {adopt.name!r} ({adopt.id}): the "
                                 f"new server is named {name!r}")
    twins = [s for s in unmanaged_twins(cloud, name) if s.id not in servers]
    if twins and decision.kind == ROTATE:
        prepared.warnings.append(
            f"server {name}: ivc leaves alone the server(s) of that name it did not make: "
            + ", ".join(f"{s.id} ({s.status})" for s in twins))
    if old is not None and old.status in WAITING_STATES and decision.kind == ROTATE:
        raise CloudError(f"server {name} ({old.id}) is {old.status}; run rotate again once it "
                         "has settled")
    # this name's servers, and the old server a rotation under way replaces (gone already, a
    # volume may still be detaching from it)
    ours = set(servers) | {s.replaces for s in (decision.old, decision.new)
                           if s is not None and s.replaces}
    _check_volumes(cloud, spec, prepared, ours)
    if old is not None and decision.kind == ROTATE:
        _check_undeclared(cloud, spec, prepared, servers[old.id], options)
    return prepared


def _refuse_conflict(name: str, decision: Decision, found: list[Any], adopt: Any | None
                     ) -> NoReturn:
    """:raises ConfigError: servers ivc cannot account for (it will not guess which serves)."""
    if adopt is not None and found:
        raise ConfigError(f"server {name}: {decision.reason}: "
                          + ", ".join(f"{s.id} ({s.status}, gen {generation(s)})" for s in found)
                          + f"; to replace {adopt.id} by it, delete one of them first")
    listed = ", ".join(f"{s.id} ({s.status}, gen {generation(s)}"
                           + (f", rotation {Markers.of(s).rotation}"
                              if Markers.of(s).rotation else "") + ")"
                           for s in found)
    raise ConfigError(f"server {name}: {decision.reason}: {listed}; ivc will not guess which "
                      f"one serves: delete the extra ones (openstack server delete <id>) "
                      f"and run again")


def _check_volumes(cloud: Cloud, spec: Spec, prepared: Prepared, ours: set[str]) -> None:
    """Resolve every declared volume; each must be available or held by ``ours`` only.

    :raises ConfigError: a missing volume, one attached elsewhere, one in a failed state.
    """
    name, decision = prepared.name, prepared.decision
    listed = list_volumes(cloud)
    for i, ref in enumerate(prepared.declared.volumes):
        entry = f"servers.{name}.volumes[{i}]"
        volume = pick(listed, ref, kind="volume", spec_path=spec.path, entry=entry,
                      fix="ivc never creates volumes: create it, or fix the name")
        settled = ("available", "in-use") if decision.kind == ROTATE else \
            ("available", "in-use", *VOLUME_BUSY)
        problem = volume_problem(cloud, volume, ref, server=name, ours=ours, settled=settled)
        if problem:
            raise ConfigError(f"{spec.path}: {entry}: {problem}")
        prepared.volumes[ref] = volume.id
        prepared.listed_volumes[ref] = volume


def _check_undeclared(cloud: Cloud, spec: Spec, prepared: Prepared, server: Any,
                      options: RotateOptions) -> None:
    """Volumes on the old server that the declaration does not list: refused, unless adopting
    or asked (``--detach-undeclared``): then a warning (they stay, detached).

    :raises ConfigError: there are some, and neither applies.
    """
    name, old = prepared.name, server
    undeclared = attached_ids(server) - set(prepared.volumes.values())
    if undeclared:
        described = ", ".join(_volume_label(cloud, vid) for vid in sorted(undeclared))
        if not (prepared.decision.adopt or options.detach_undeclared):
            raise ConfigError(
                f"{spec.path}: server {name} ({old.id}) holds volumes that servers.{name}"
                f".volumes does not declare: {described}; a rotate would leave them "
                f"detached: declare them (they move to the new server) or pass "
                "--detach-undeclared (they stay, available, detached)")
        prepared.warnings.append(
            f"server {name}: volumes {described} are attached to {old.id} but not "
            "declared: they do not move; deleting the old server detaches them (they "
            "stay, available)")


def _volume_label(cloud: Cloud, volume_id: str) -> str:
    """``'name' (id)`` of a volume, from the listing already made."""
    for volume in list_volumes(cloud):
        if volume.id == volume_id:
            return f"{volume.name!r} ({volume_id})" if volume.name else volume_id
    return volume_id


def lock_holder(cloud: Cloud, name: str) -> str | None:
    """Who holds the server's lock, from the keypair listing (for a dry run); None if free."""
    wanted = lock_name(cloud.env, name)
    for keypair in list_keypairs(cloud):
        if keypair.name == wanted:
            return lock_text(keypair, cloud.wall_clock()) + ": a real run would exit 4"
    return None
