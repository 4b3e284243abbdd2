"""create-instance: make one declared server exist and be ACTIVE, with its floating IP.

plan_instance (reads, validates) -> describe_instance (what --dry-run prints) -> apply_instance.
The server is found by its metadata tags (``resources.servers``), not by its name.

Found and ACTIVE: nothing to do. BUILD: wait. ERROR: fail, saying ``rotate`` replaces it.
Missing: resolve everything it needs (image, flavor, networks, security groups, keypair, boot
volumes; any of them missing is a ConfigError before anything is created), ensure a declared
keypair, then create it and wait for ACTIVE. The declared volumes that are available are
attached at boot (block device mapping, never deleted with the server): they are there when
cloud-init first runs, and it saves an attach round trip; ``ivc_vol:<volume>`` metadata records
which volume each declared name resolved to, so that later runs can tell that it is still
attached without asking Cinder.

A create is not blindly retried: before re-sending it, ivc lists the servers and takes the one
tagged with this run's id, if the lost attempt made it.

The ``create-instance`` task gates the server it creates as ``deploy`` does
(``create_instance``, ``steps/gates.deploy_gate``): done only when its checks pass.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import CloudError, ConfigError
from ivc_tasks.resources.attachments import volume_problem
from ivc_tasks.resources.floating_ips import (
    FloatingPlan,
    ensure_floating_ip,
    is_public,
    plan_floating,
    server_floating_ip,
)
from ivc_tasks.resources.ports import ensure_kept_ports, kept_port_name, plan_kept_ports
from ivc_tasks.resources.resolve import (
    find_images,
    forget,
    list_flavors,
    list_networks,
    list_servers,
    list_volumes,
    pick,
)
from ivc_tasks.resources.servers import (
    META_RUN,
    META_USERDATA,
    WAITING_STATES,
    check_same_spec,
    create_server,
    declared_server,
    error_hint,
    fault_message,
    generation,
    managed_servers,
    server_info,
    server_metadata,
    spec_identity,
    twin_error,
    unmanaged_twins,
)
from ivc_tasks.resources.waits import wait_server
from ivc_tasks.result import Action, StepResult, userdata_summary
from ivc_tasks.spec import Server, Spec, needs_config_drive
from ivc_tasks.steps.keypairs import ensure_keypair, plan_keypair
from ivc_tasks.steps.secgroups import groups_by_name
from ivc_tasks.userdata import legacy_digest, userdata_digest

log = logging.getLogger("ivc")
STEP = "create-instance"


# -- the plan ------------------------------------------------------------------------------
@dataclass
class InstancePlan:
    """What create-instance will do for one server.

    ``existing`` is the server found (None: create it); the other fields are resolved only
    when the server is to be created (or, for ``floating``, when its IP must be checked).
    """

    declared: Server
    existing: Any | None = None
    others: list[Any] = field(default_factory=list)
    image: Any | None = None
    flavor: Any | None = None
    networks: list[Any] = field(default_factory=list)
    groups: dict[str, str | None] = field(default_factory=dict)  # name -> id (None: to create)
    keypair: str | None = None
    create_keypair: Any | None = None  # a spec Keypair to create first
    config_drive: bool = False
    boot_volumes: dict[str, Any] = field(default_factory=dict)  # declared ref -> volume
    floating: FloatingPlan | None = None
    ports: dict[str, Any] = field(default_factory=dict)  # network id -> kept port (None: to make)
    spec_id: str | None = None  # which declarations make it (``ivc_spec``)

    @property
    def name(self) -> str:
        return self.declared.name


def resolve_networks(cloud: Cloud, spec: Spec, declared: Server) -> list[Any]:
    """The server's networks, in declared order (one listing).

    :raises ConfigError: a network that does not exist or whose name is ambiguous.
    """
    nets = list_networks(cloud)
    return [pick(nets, ref, kind="network", spec_path=spec.path,
                 entry=f"servers.{declared.name}.networks[{i}]")
            for i, ref in enumerate(declared.networks)]


def plan_instance(cloud: Cloud, spec: Spec, name: str, *,
                  pending_groups: Collection[str] = (), boot_volumes: bool = True,
                  replacing: Collection[str] = ()) -> InstancePlan:
    """Find the server; if it must be created, resolve and check everything it needs.

    :param pending_groups: declared security groups that this run creates before the server
        (deploy); any other group must exist already.
    :param boot_volumes: attach the declared volumes at boot.
    :param replacing: ids of the servers the new one replaces (rotate): their kept ports are
        this server's, and their floating IP moves (a new one may need no network chosen).
    :raises ConfigError: anything missing or ambiguous (nothing has been changed).
    :raises CloudError: the server exists in ERROR.
    :raises CloudCallError: a listing failed.
    """
    declared = declared_server(spec, name)
    plan = InstancePlan(declared=declared, spec_id=spec_identity(spec))
    found = managed_servers(cloud, name)
    check_same_spec(spec, name, found)
    if not found and unmanaged_twins(cloud, name):
        raise twin_error(name, unmanaged_twins(cloud, name))
    if found:
        plan.existing, plan.others = found[0], found[1:]
        if plan.existing.status == "ERROR":
            raise CloudError(f"server {name} ({plan.existing.id}) is in ERROR: "
                             f"{fault_message(plan.existing)}; {error_hint(name)}")
        if declared.floating_ip and server_floating_ip(cloud, plan.existing)[1] is None:
            plan.networks = resolve_networks(cloud, spec, declared)
            plan.floating = plan_floating(cloud, spec, declared, plan.networks)
        return plan
    entry = f"servers.{name}"
    plan.image = pick(find_images(cloud, declared.image), declared.image, kind="image",
                      spec_path=spec.path, entry=f"{entry}.image")
    plan.flavor = pick(list_flavors(cloud), declared.flavor, kind="flavor",
                       spec_path=spec.path, entry=f"{entry}.flavor")
    plan.networks = resolve_networks(cloud, spec, declared)
    plan.config_drive = needs_config_drive([is_public(n) for n in plan.networks],
                                           declared.config_drive)
    if declared.floating_ip:
        plan.floating = plan_floating(cloud, spec, declared, plan.networks,
                                      required=not replacing)
    if declared.keep_address:
        plan.ports = plan_kept_ports(cloud, spec, declared, plan.networks, own=replacing)
    if declared.security_groups:
        plan.groups = _plan_groups(cloud, spec, declared, pending_groups)
    if declared.keypair:
        plan.keypair = declared.keypair
        plan.create_keypair = plan_keypair(cloud, spec, declared)
    if boot_volumes and declared.volumes:
        vols = list_volumes(cloud)
        for i, ref in enumerate(declared.volumes):
            volume = pick(vols, ref, kind="volume", spec_path=spec.path,
                          entry=f"{entry}.volumes[{i}]", fix="ivc never creates volumes: "
                          "create it, or fix the name")
            problem = volume_problem(cloud, volume, ref, server=name)
            if problem:  # attached at boot: it must be available
                raise ConfigError(f"{spec.path}: {entry}.volumes[{i}]: {problem}")
            plan.boot_volumes[ref] = volume
    return plan


def _plan_groups(cloud: Cloud, spec: Spec, declared: Server, pending: Collection[str]
                 ) -> dict[str, str | None]:
    """``{group name: id}`` of the server's groups (None: created earlier in this run).

    :raises ConfigError: a group that neither exists nor is being created.
    """
    entry = f"servers.{declared.name}.security_groups"
    existing = groups_by_name(cloud, spec, declared.security_groups, entry=entry)
    groups: dict[str, str | None] = {}
    for i, group in enumerate(declared.security_groups):
        if group in existing:
            groups[group] = existing[group].id
        elif group in pending:
            groups[group] = None
        else:
            fix = ("run `invoke ensure-secgroups` first" if group in spec.secgroups else
                   "declare it under [secgroups] or create it")
            raise ConfigError(f"{spec.path}: {entry}[{i}]: no security group named {group!r} "
                              f"in the project; {fix}")
    return groups


# -- acting ------------------------------------------------------------------------------------
def create_request(cloud: Cloud, plan: InstancePlan, group_ids: Mapping[str, str]
                   ) -> dict[str, Any]:
    """Return the openstacksdk ``create_server`` arguments (user_data base64-encoded)."""
    declared = plan.declared
    body: dict[str, Any] = {
        "name": declared.name,
        "image_id": plan.image.id,
        "flavor_id": plan.flavor.id,
        "networks": [{"port": plan.ports[n.id].id} if plan.ports.get(n.id) is not None
                     else {"uuid": n.id} for n in plan.networks],
        "config_drive": plan.config_drive,
        "metadata": server_metadata(declared, cloud.env, cloud.run_id,
                                    volumes={r: v.id for r, v in plan.boot_volumes.items()},
                                    spec_id=plan.spec_id),
    }
    if plan.groups:
        body["security_groups"] = [{"name": plan.groups.get(g) or group_ids.get(g) or g}
                                   for g in plan.groups]
    if plan.keypair:
        body["key_name"] = plan.keypair
    if declared.userdata is not None:
        body["user_data"] = base64.b64encode(declared.userdata).decode("ascii")
    if plan.boot_volumes:
        body["block_device_mapping"] = [
            {"boot_index": 0, "uuid": plan.image.id, "source_type": "image",
             "destination_type": "local", "delete_on_termination": True},
            *({"boot_index": -1, "uuid": v.id, "source_type": "volume",
               "destination_type": "volume", "delete_on_termination": False}
              for v in plan.boot_volumes.values()),
        ]
    return body


def redacted_request(body: Mapping[str, Any], userdata: bytes | None) -> dict[str, Any]:
    """The create request as it may be shown: user_data replaced by its sha256 and size."""
    out = {k: v for k, v in body.items() if k != "user_data"}
    if "user_data" in body:
        out["user_data"] = userdata_summary(userdata)
    return out


def apply_instance(cloud: Cloud, plan: InstancePlan, *, group_ids: Mapping[str, str] | None = None,
                   timeout: float | None = None) -> StepResult:
    """Carry out a plan: create (keypair, server), wait for ACTIVE, ensure the floating IP.

    :param group_ids: ids of groups created earlier in this run (deploy).
    :raises CloudError: the server failed to boot or a cloud call failed.
    """
    name = plan.name
    result = StepResult(step=STEP, target=name)
    result.warnings += _existing_warnings(plan)
    server = plan.existing
    if server is None:
        if plan.create_keypair is not None:
            action = ensure_keypair(cloud, plan.create_keypair)
            if action is not None:
                result.actions.append(action)
        result.actions += ensure_kept_ports(cloud, name, plan.ports, plan.networks, [
            i for g in plan.groups if (i := plan.groups[g] or (group_ids or {}).get(g))])
        body = create_request(cloud, plan, group_ids or {})
        log.info("creating server %s (image %s, flavor %s, config drive %s)", name,
                 plan.image.name, plan.flavor.name, "yes" if plan.config_drive else "no")
        server = create_server(cloud, name, body)
        result.actions.append(Action("create", "server", name, _create_summary(plan), {
            "id": server.id, "request": redacted_request(body, plan.declared.userdata)}))
        server = _wait_active(cloud, server, name, timeout)
        log.info("server %s is ACTIVE", name)
    elif server.status in WAITING_STATES:
        log.info("server %s (%s) is %s; waiting", name, server.id, server.status)
        server = _wait_active(cloud, server, name, timeout)
    elif server.status != "ACTIVE":
        result.warnings.append(f"server {name} ({server.id}) is {server.status}, not ACTIVE; "
                               "ivc leaves it so")
    if plan.floating is not None:
        action = ensure_floating_ip(cloud, name, plan.floating, server)
        if action:
            result.actions.append(action)
    result.info.update(server_info(server))
    cloud.listings.put(f"server:{name}", server)
    return result


def _wait_active(cloud: Cloud, server: Any, name: str, timeout: float | None) -> Any:
    return wait_server(cloud, server.id, f"server {name}", "ACTIVE",
                       cloud.settings.boot_timeout if timeout is None else timeout, eager=False,
                       error_hint=error_hint(name))


def _existing_warnings(plan: InstancePlan) -> list[str]:
    """Warnings about an existing server: older generations left, user_data since changed."""
    out = []
    if plan.others:
        ids = ", ".join(f"{s.id} (gen {generation(s)}, {s.status})" for s in plan.others)
        out.append(f"server {plan.name}: older servers of this name are still there: {ids}")
    if plan.existing is not None:
        had = (plan.existing.metadata or {}).get(META_USERDATA)
        now = userdata_digest(plan.declared)
        if had and had not in (now, legacy_digest(plan.declared)):
            out.append(f"server {plan.name}: its user_data ({had}) differs from the declared one "
                       f"({now}); `invoke rotate --name {plan.name}` applies it")
    return out


def describe_instance(cloud: Cloud, plan: InstancePlan, *, group_ids: Mapping[str, str] | None = None
                   ) -> StepResult:
    """What ``apply_instance`` would do, for a dry run (no request is made)."""
    result = StepResult(step=STEP, target=plan.name, dry_run=True)
    result.warnings += _existing_warnings(plan)
    if plan.existing is None:
        if plan.create_keypair is not None:
            result.actions.append(Action("create", "keypair", plan.create_keypair.name,
                                         f"from {plan.create_keypair.public_key_file}"))
        result.actions += [Action("create", "port", kept_port_name(cloud.env, plan.name, n.name),
                                  f"on {n.name}, its address kept across rotations")
                           for n in plan.networks if n.id in plan.ports and not plan.ports[n.id]]
        body = create_request(cloud, plan, group_ids or {})
        body["metadata"] = {k: ("<this run>" if k == META_RUN else v)
                            for k, v in body["metadata"].items()}
        result.actions.append(Action("create", "server", plan.name, _create_summary(plan), {
            "request": redacted_request(body, plan.declared.userdata)}))
    else:
        result.info.update(server_info(plan.existing))
        if plan.existing.status in WAITING_STATES:
            result.info["would_wait"] = True
    if plan.floating is not None:
        result.actions.append(Action("ensure", "floating_ip", plan.name,
                                     f"from {plan.floating.network.name}, reusing one if possible",
                                     {"network": plan.floating.network.name}))
    return result


def _create_summary(plan: InstancePlan) -> str:
    parts = [f"image {plan.image.name}", f"flavor {plan.flavor.name}",
             f"networks {', '.join(n.name for n in plan.networks)}",
             f"config drive {'yes' if plan.config_drive else 'no'}"]
    if plan.boot_volumes:
        parts.append(f"volumes {', '.join(plan.boot_volumes)} attached at boot")
    if plan.declared.userdata is not None:
        parts.append(f"user_data {len(plan.declared.userdata)} bytes")
    return ", ".join(parts)


@dataclass
class CreatedResult(StepResult):
    """create-instance's result: the create, then its ``check`` step (``gate``: None when no
    server was created, or in a dry run, where ``info["checks"]`` says what would be checked)."""

    gate: StepResult | None = None

    def lines(self) -> list[str]:
        return super().lines() + (self.gate.lines() if self.gate is not None else [])


def create_instance(cloud: Cloud, spec: Spec, name: str, *, dry_run: bool = False,
                    timeout: float | None = None, skip_checks: bool = False) -> StepResult:
    """Make declared server ``name`` exist and be ACTIVE, with its floating IP if declared; a
    server this run creates is done only when its declared checks pass (as in deploy).

    :param dry_run: return the plan; change nothing.
    :param timeout: seconds to wait for ACTIVE (default ``cloud.settings.boot_timeout``).
    :param skip_checks: the new server is not gated by its checks (loud).
    :raises ConfigError: invalid input or a missing resource (before any change); the console
        refused while ``cloud_init`` is the server's only check.
    :raises CloudError: the server is or went into ERROR, timed out, or a cloud call failed.
    :raises ChecksFailed: a check of the new server failed (exit 1); the server is left.
    """
    from ivc_tasks.steps.checks import console_preflight
    from ivc_tasks.steps.gates import GateResult, deploy_gate, describe_gate

    plan = plan_instance(cloud, spec, name)
    if plan.existing is None and not skip_checks:  # before any change, as deploy does
        console_preflight(cloud, [plan.declared], next(
            (s.id for s in list_servers(cloud) if s.status == "ACTIVE"), None))
    if dry_run:
        described = describe_instance(cloud, plan)
        result = CreatedResult(**vars(described))
        if plan.existing is None:
            what = describe_gate(plan.declared, skip=skip_checks)
            result.gate = GateResult("check", name, dry_run=True, info={"checks": what},
                                     plan=what)
            result.info["checks"] = what
        return result
    made = apply_instance_locked(cloud, spec, plan, timeout=timeout)
    result = CreatedResult(**vars(made))
    result.gate = deploy_gate(cloud, plan.declared, made, skip=skip_checks)
    if result.gate is not None:
        result.info["checks"] = result.gate.info.get("checks")
        result.warnings += result.gate.warnings
    return result


def apply_instance_locked(cloud: Cloud, spec: Spec, plan: InstancePlan, *,
                          group_ids: Mapping[str, str] | None = None,
                          timeout: float | None = None) -> StepResult:
    """``apply_instance`` under the server's lock when it creates: another run (a second CI
    pipeline) creating the same server is waited for, then the server is looked for again
    (planned afresh), so that the second run finds it and changes nothing.

    :raises Locked: another run held the lock for longer than ``cloud.settings.lock_ttl``.
    """
    from ivc_tasks.resources.lock import held

    if plan.existing is not None:
        return apply_instance(cloud, plan, group_ids=group_ids, timeout=timeout)
    with held(cloud, plan.name, op=STEP):
        forget(cloud, "servers", "floating_ips")
        fresh = plan_instance(cloud, spec, plan.name, pending_groups=set(group_ids or ()))
        if fresh.existing is not None:
            log.info("server %s: made by another run meanwhile (%s)", plan.name,
                     fresh.existing.id)
        fresh.create_keypair = plan.create_keypair if fresh.existing is None else None
        return apply_instance(cloud, fresh, group_ids=group_ids, timeout=timeout)

