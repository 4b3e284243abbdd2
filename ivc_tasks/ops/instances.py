"""create-instance: make one declared server exist and be ACTIVE, with its floating IP.

ivc finds its servers by metadata, not by name (Nova names are not unique): every server it
creates carries ``ivc_managed=1``, ``ivc_env``, ``ivc_name``, ``ivc_run`` (the run that created
it), ``ivc_gen`` (1; ``rotate`` increments it) and ``ivc_userdata`` (a short sha256 of the
user_data). One request lists the project's servers with details; the filtering is local.

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
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import CloudError, ConfigError
from ivc_tasks.ops.resolve import (
    find_images, forget, list_flavors, list_floating_ips, list_keypairs, list_networks,
    list_servers, list_volumes, pick,
)
from ivc_tasks.ops.result import Action, StepResult, userdata_summary
from ivc_tasks.ops.secgroups import groups_by_name
from ivc_tasks.spec import Server, Spec, needs_config_drive
from ivc_tasks.userdata import userdata_sha256

log = logging.getLogger("ivc")
STEP = "create-instance"

META_MANAGED = "ivc_managed"
META_ENV = "ivc_env"
META_NAME = "ivc_name"
META_RUN = "ivc_run"
META_GEN = "ivc_gen"
META_USERDATA = "ivc_userdata"
VOLUME_KEY_PREFIX = "ivc_vol:"
USERDATA_SHORT = 16  # hex digits of the sha256 kept in ivc_userdata
_METADATA_KEY = re.compile(r"^[A-Za-z0-9_:. -]{1,200}$")  # what Nova accepts, with room to spare
WAITING_STATES = ("BUILD", "REBUILD", "REBOOT", "HARD_REBOOT", "MIGRATING", "RESIZE")


# -- finding ivc's servers ---------------------------------------------------------------------
def generation(server: Any) -> int:
    """Return a server's ``ivc_gen`` (0 when absent or not a number)."""
    try:
        return int((server.metadata or {}).get(META_GEN, 0))
    except (TypeError, ValueError):
        return 0


def is_managed(server: Any, env: str, name: str) -> bool:
    """Return True for a server ivc made for declared server ``name`` in environment ``env``."""
    meta = getattr(server, "metadata", None) or {}
    return (meta.get(META_MANAGED) == "1" and meta.get(META_ENV) == env
            and meta.get(META_NAME) == name)


def managed_servers(cloud: Cloud, name: str, *, refresh: bool = False) -> list[Any]:
    """Return ivc's servers for ``name`` in this env, newest generation first (one listing)."""
    found = [s for s in list_servers(cloud, refresh=refresh)
             if is_managed(s, cloud.env, name) and s.status not in ("DELETED", "SOFT_DELETED")]
    return sorted(found, key=lambda s: (generation(s), str(s.created_at or "")), reverse=True)


def made_by_run(cloud: Cloud, name: str) -> Any | None:
    """The server for ``name`` that this run created, if any (lists the servers again)."""
    for server in managed_servers(cloud, name, refresh=True):
        if (server.metadata or {}).get(META_RUN) == cloud.run_id:
            return server
    return None


def volume_key(ref: str) -> str:
    """Return the metadata key that records which volume the declared ``ref`` resolved to."""
    if _METADATA_KEY.match(ref):
        return VOLUME_KEY_PREFIX + ref
    return VOLUME_KEY_PREFIX + "sha256." + hashlib.sha256(ref.encode()).hexdigest()[:16]


def volume_holders(volume: Any) -> list[str]:
    """Return the ids of the servers Cinder says ``volume`` is attached to."""
    return [a.get("server_id") for a in (volume.attachments or []) if a.get("server_id")]


def attached_ids(server: Any) -> set[str]:
    """Return the ids of the volumes Nova says are attached to ``server``."""
    out = set()
    for item in getattr(server, "attached_volumes", None) or []:
        value = item.get("id") if isinstance(item, Mapping) else getattr(item, "id", None)
        if value:
            out.add(value)
    return out


def recorded_attached(server: Any, ref: str) -> str | None:
    """The id recorded for volume ``ref`` in the server's metadata, if Nova shows it attached."""
    volume_id = (server.metadata or {}).get(volume_key(ref))
    return volume_id if volume_id and volume_id in attached_ids(server) else None


def server_metadata(declared: Server, env: str, run_id: str, *, gen: int = 1,
                    volumes: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the metadata a new server gets: the declared one plus ivc's tags."""
    return {
        **declared.metadata,
        META_MANAGED: "1",
        META_ENV: env,
        META_NAME: declared.name,
        META_RUN: run_id,
        META_GEN: str(gen),
        META_USERDATA: userdata_sha256(declared.userdata)[:USERDATA_SHORT],
        **{volume_key(ref): vid for ref, vid in (volumes or {}).items()},
    }


def declared_server(spec: Spec, name: str | None) -> Server:
    """Return the declared server ``name``.

    :raises ConfigError: no name given, or not declared.
    """
    if not name:
        raise ConfigError(f"--name is required: one of {', '.join(spec.servers) or 'none declared'}")
    if name not in spec.servers:
        close = difflib.get_close_matches(name, list(spec.servers), n=1)
        hint = f"did you mean {close[0]!r}?" if close else \
            f"declared: {', '.join(spec.servers) or 'none'}"
        raise ConfigError(f"{spec.path}: --name {name!r}: not a declared server "
                          f"(servers.{name}); {hint}")
    return spec.servers[name]


def fault_message(server: Any) -> str:
    """The message of a server's fault (why it is in ERROR)."""
    fault = getattr(server, "fault", None) or {}
    return str(fault.get("message") or "no fault message") if isinstance(fault, Mapping) \
        else str(fault)


def error_hint(name: str) -> str:
    """What to do about a server in ERROR."""
    return f"`invoke rotate --name {name}` will replace it"


# -- the plan ------------------------------------------------------------------------------
@dataclass
class FloatingPlan:
    """Where the server's floating IP comes from."""

    network: Any  # the external network
    internal_network_ids: list[str] = field(default_factory=list)  # in declared order


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

    @property
    def name(self) -> str:
        return self.declared.name


def _public_key_body(text: str) -> str:
    """The key type and base64 part of an OpenSSH public key (the comment is not part of it)."""
    return " ".join(str(text or "").split()[:2])


def resolve_networks(cloud: Cloud, spec: Spec, declared: Server) -> list[Any]:
    """The server's networks, in declared order (one listing).

    :raises ConfigError: a network that does not exist or whose name is ambiguous.
    """
    nets = list_networks(cloud)
    return [pick(nets, ref, kind="network", spec_path=spec.path,
                 entry=f"servers.{declared.name}.networks[{i}]")
            for i, ref in enumerate(declared.networks)]


def plan_floating(cloud: Cloud, spec: Spec, declared: Server, networks: list[Any]
                  ) -> FloatingPlan:
    """Pick the external network for the server's floating IP.

    :raises ConfigError: the server is only on external networks, there is no external
        network, or several and ``IVC_FLOATING_NETWORK`` does not pick one.
    """
    entry = f"servers.{declared.name}.floating_ip"
    internal = [n.id for n in networks if not n.is_router_external]
    if not internal:
        raise ConfigError(f"{spec.path}: {entry}: the server is only on external networks, "
                          "where it has a public address already; set floating_ip = false")
    external = [n for n in list_networks(cloud) if n.is_router_external]
    if cloud.floating_network:
        chosen = pick(external, cloud.floating_network, kind="external network",
                      spec_path=spec.path, entry=f"{entry} (IVC_FLOATING_NETWORK)")
    elif len(external) == 1:
        chosen = external[0]
    elif not external:
        raise ConfigError(f"{spec.path}: {entry}: the cloud shows no external network to take "
                          "a floating IP from; set floating_ip = false or ask for one")
    else:
        names = ", ".join(sorted(n.name for n in external))
        raise ConfigError(f"{spec.path}: {entry}: several external networks ({names}); set "
                          "IVC_FLOATING_NETWORK in the env file to the one to use")
    return FloatingPlan(network=chosen, internal_network_ids=internal)


def check_boot_volume(cloud: Cloud, spec: Spec, ref: str, volume: Any, entry: str) -> None:
    """Refuse a volume that cannot be attached to a new server.

    :raises ConfigError: attached to another server (named), or not available.
    """
    others = volume_holders(volume)
    if others:
        raise ConfigError(f"{spec.path}: {entry}: volume {ref!r} ({volume.id}) is attached to "
                          f"server {server_label(cloud, others[0])}; detach it there first "
                          "(ivc never moves a volume implicitly)")
    if volume.status != "available":
        raise ConfigError(f"{spec.path}: {entry}: volume {ref!r} ({volume.id}) is "
                          f"{volume.status!r}, not available; fix it in the cloud first")


def server_label(cloud: Cloud, server_id: str) -> str:
    """``name (id)`` of a server of the project, from the listing already made."""
    for server in list_servers(cloud):
        if server.id == server_id:
            return f"{server.name!r} ({server_id})"
    return server_id


def plan_instance(cloud: Cloud, spec: Spec, name: str, *,
                  pending_groups: Collection[str] = (), boot_volumes: bool = True
                  ) -> InstancePlan:
    """Find the server; if it must be created, resolve and check everything it needs.

    :param pending_groups: declared security groups that this run creates before the server
        (deploy); any other group must exist already.
    :param boot_volumes: attach the declared volumes at boot.
    :raises ConfigError: anything missing or ambiguous (nothing has been changed).
    :raises CloudError: the server exists in ERROR.
    :raises CloudCallError: a listing failed.
    """
    declared = declared_server(spec, name)
    plan = InstancePlan(declared=declared)
    found = managed_servers(cloud, name)
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
    plan.config_drive = needs_config_drive([bool(n.is_router_external) for n in plan.networks],
                                           declared.config_drive)
    if declared.floating_ip:
        plan.floating = plan_floating(cloud, spec, declared, plan.networks)
    if declared.security_groups:
        existing = groups_by_name(cloud, spec, declared.security_groups,
                                  entry=f"{entry}.security_groups")
        for i, group in enumerate(declared.security_groups):
            if group in existing:
                plan.groups[group] = existing[group].id
            elif group in pending_groups:
                plan.groups[group] = None
            else:
                fix = ("run `invoke ensure-secgroups` first" if group in spec.secgroups else
                       "declare it under [secgroups] or create it")
                raise ConfigError(f"{spec.path}: {entry}.security_groups[{i}]: no security "
                                  f"group named {group!r} in the project; {fix}")
    if declared.keypair:
        plan.keypair = declared.keypair
        cloud_keys = {k.name: k for k in list_keypairs(cloud)}
        wanted = spec.keypairs.get(declared.keypair)
        have = cloud_keys.get(declared.keypair)
        if wanted is not None and have is None:
            plan.create_keypair = wanted
        elif wanted is not None and _public_key_body(have.public_key) != \
                _public_key_body(wanted.public_key):
            raise ConfigError(
                f"{spec.path}: keypairs.{wanted.name}: the cloud's keypair {wanted.name!r} holds "
                f"a different public key than {wanted.public_key_file}; delete it in the cloud "
                "(openstack keypair delete) or give the declared one another name")
        elif have is None:
            raise ConfigError(f"{spec.path}: {entry}.keypair: no keypair named "
                              f"{declared.keypair!r} in the cloud; create it, or declare it "
                              "under [keypairs] with a public_key_file")
    if boot_volumes and declared.volumes:
        vols = list_volumes(cloud)
        for i, ref in enumerate(declared.volumes):
            volume = pick(vols, ref, kind="volume", spec_path=spec.path,
                          entry=f"{entry}.volumes[{i}]", fix="ivc never creates volumes: "
                          "create it, or fix the name")
            check_boot_volume(cloud, spec, ref, volume, f"{entry}.volumes[{i}]")
            plan.boot_volumes[ref] = volume
    return plan


# -- acting ------------------------------------------------------------------------------------
def create_request(cloud: Cloud, plan: InstancePlan, group_ids: Mapping[str, str]
                   ) -> dict[str, Any]:
    """Return the openstacksdk ``create_server`` arguments (user_data base64-encoded)."""
    declared = plan.declared
    body: dict[str, Any] = {
        "name": declared.name,
        "image_id": plan.image.id,
        "flavor_id": plan.flavor.id,
        "networks": [{"uuid": n.id} for n in plan.networks],
        "config_drive": plan.config_drive,
        "metadata": server_metadata(declared, cloud.env, cloud.run_id,
                                    volumes={r: v.id for r, v in plan.boot_volumes.items()}),
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


def wait_for_active(cloud: Cloud, server: Any, name: str, *, timeout: float | None = None
                    ) -> Any:
    """Poll the server every ``poll_interval`` until ACTIVE.

    :raises CloudError: it went to ERROR (with its fault message) or timed out.
    """
    conn = cloud.conn
    return cloud.poll(
        f"server {name}",
        lambda: cloud.call(f"get server {name}", lambda: conn.compute.get_server(server.id)),
        lambda s: s.status + (f" ({s.task_state})" if s.task_state else ""),
        done=lambda s: s.status == "ACTIVE",
        failed=lambda s: (f"went to ERROR: {fault_message(s)} (server {s.id}); {error_hint(name)}"
                          if s.status == "ERROR" else None),
        timeout=cloud.boot_timeout if timeout is None else timeout,
    )


def server_floating_ip(cloud: Cloud, server: Any) -> tuple[list[Any], Any | None]:
    """Return the server's ports and the floating IP on one of them, if any (two requests).

    Neutron is asked, not Nova's address cache, which lags behind an association change.
    """
    conn = cloud.conn
    ports = cloud.call(f"list ports of server {server.id}",
                       lambda: list(conn.network.ports(device_id=server.id)))
    port_ids = {p.id for p in ports}
    fips = list_floating_ips(cloud, refresh=True)
    return ports, next((f for f in fips if f.port_id and f.port_id in port_ids), None)


def floating_marker(env: str, name: str) -> str:
    """The description that marks a floating IP as ivc's, for server ``name``."""
    return f"ivc:{env}:{name}"


def ensure_floating_ip(cloud: Cloud, plan: InstancePlan, server: Any) -> Action | None:
    """Give ``server`` a floating IP, reusing one when possible; None when it has one already.

    Reuse, in order: one already on a port of the server; an unattached one described for this
    server; else create one on the external network, associated to the port in the same request.

    :raises CloudError: the server has no port on an internal network; a cloud call failed.
    """
    conn = cloud.conn
    name = plan.name
    fplan = plan.floating
    ports, attached = server_floating_ip(cloud, server)
    if attached is not None:
        log.info("server %s has floating IP %s already", name, attached.floating_ip_address)
        return None
    fips = list_floating_ips(cloud)
    order = {net_id: i for i, net_id in enumerate(fplan.internal_network_ids)}
    candidates = sorted((p for p in ports if p.network_id in order and p.fixed_ips),
                        key=lambda p: order[p.network_id])
    if not candidates:
        raise CloudError(f"server {name} ({server.id}) has no port on an internal network to "
                         "put a floating IP on")
    port = candidates[0]
    marker = floating_marker(cloud.env, name)
    spare = [f for f in fips if not f.port_id and f.description == marker
             and f.floating_network_id == fplan.network.id]
    if spare:
        fip = spare[0]
        cloud.call(f"associate floating IP {fip.floating_ip_address} with {name}",
                   lambda: conn.network.update_ip(fip, port_id=port.id))
        log.info("associated floating IP %s with %s", fip.floating_ip_address, name)
        return Action("associate", "floating_ip", name, fip.floating_ip_address, {
            "id": fip.id, "address": fip.floating_ip_address, "port_id": port.id})

    def made_meanwhile() -> Any | None:
        for item in list_floating_ips(cloud, refresh=True):
            if item.port_id == port.id:
                return item
        return None

    fip = cloud.call(f"create floating IP for {name}",
                     lambda: conn.network.create_ip(floating_network_id=fplan.network.id,
                                                    port_id=port.id, description=marker),
                     lookup=made_meanwhile)
    forget(cloud, "floating_ips")
    log.info("created floating IP %s for %s", fip.floating_ip_address, name)
    return Action("create", "floating_ip", name, fip.floating_ip_address, {
        "id": fip.id, "address": fip.floating_ip_address, "port_id": port.id,
        "network": fplan.network.name})


def apply_instance(cloud: Cloud, plan: InstancePlan, *, group_ids: Mapping[str, str] | None = None,
                   timeout: float | None = None) -> StepResult:
    """Carry out a plan: create (keypair, server), wait for ACTIVE, ensure the floating IP.

    :param group_ids: ids of groups created earlier in this run (deploy).
    :raises CloudError: the server failed to boot or a cloud call failed.
    """
    conn = cloud.conn
    name = plan.name
    result = StepResult(step=STEP, target=name)
    result.warnings += _existing_warnings(plan)
    server = plan.existing
    if server is None:
        if plan.create_keypair is not None:
            wanted = plan.create_keypair
            cloud.call(f"create keypair {wanted.name}",
                       lambda: conn.compute.create_keypair(name=wanted.name,
                                                           public_key=wanted.public_key),
                       lookup=lambda: next((k for k in list_keypairs(cloud, refresh=True)
                                            if k.name == wanted.name), None))
            log.info("created keypair %s", wanted.name)
            result.actions.append(Action("create", "keypair", wanted.name,
                                         f"from {wanted.public_key_file}"))
        body = create_request(cloud, plan, group_ids or {})
        log.info("creating server %s (image %s, flavor %s, config drive %s)", name,
                 plan.image.name, plan.flavor.name, "yes" if plan.config_drive else "no")
        server = cloud.call(f"create server {name}", lambda: conn.compute.create_server(**body),
                            lookup=lambda: made_by_run(cloud, name), redact=body.get("user_data"))
        forget(cloud, "servers")
        result.actions.append(Action("create", "server", name, _create_summary(plan), {
            "id": server.id, "request": redacted_request(body, plan.declared.userdata)}))
        server = wait_for_active(cloud, server, name, timeout=timeout)
        log.info("server %s is ACTIVE", name)
    elif server.status in WAITING_STATES:
        log.info("server %s (%s) is %s; waiting", name, server.id, server.status)
        server = wait_for_active(cloud, server, name, timeout=timeout)
    elif server.status != "ACTIVE":
        result.warnings.append(f"server {name} ({server.id}) is {server.status}, not ACTIVE; "
                               "ivc leaves it so")
    if plan.floating is not None:
        action = ensure_floating_ip(cloud, plan, server)
        if action:
            result.actions.append(action)
    result.info.update(server_info(server))
    cloud.cache[f"server:{name}"] = server
    return result


def server_info(server: Any) -> dict[str, Any]:
    """Printable facts about a server (no user_data)."""
    addresses = {net: [a.get("addr") for a in items]
                 for net, items in (server.addresses or {}).items()}
    meta = server.metadata or {}
    return {"id": server.id, "status": server.status, "addresses": addresses,
            "generation": generation(server), "userdata_sha256": meta.get(META_USERDATA)}


def _existing_warnings(plan: InstancePlan) -> list[str]:
    """Warnings about an existing server: older generations left, user_data since changed."""
    out = []
    if plan.others:
        ids = ", ".join(f"{s.id} (gen {generation(s)}, {s.status})" for s in plan.others)
        out.append(f"server {plan.name}: older servers of this name are still there: {ids}")
    if plan.existing is not None:
        had = (plan.existing.metadata or {}).get(META_USERDATA)
        now = userdata_sha256(plan.declared.userdata)[:USERDATA_SHORT]
        if had and had != now:
            out.append(f"server {plan.name}: its user_data ({had}) differs from the declared one "
                       f"({now}); `invoke rotate --name {plan.name}` applies it")
    return out


def planned_result(cloud: Cloud, plan: InstancePlan, *, group_ids: Mapping[str, str] | None = None
                   ) -> StepResult:
    """What ``apply_instance`` would do, for a dry run (no request is made)."""
    result = StepResult(step=STEP, target=plan.name, dry_run=True)
    result.warnings += _existing_warnings(plan)
    if plan.existing is None:
        if plan.create_keypair is not None:
            result.actions.append(Action("create", "keypair", plan.create_keypair.name,
                                         f"from {plan.create_keypair.public_key_file}"))
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


def create_instance(cloud: Cloud, spec: Spec, name: str, *, dry_run: bool = False,
                    timeout: float | None = None) -> StepResult:
    """Make declared server ``name`` exist and be ACTIVE, with its floating IP if declared.

    :param dry_run: return the plan; change nothing.
    :param timeout: seconds to wait for ACTIVE (default ``cloud.boot_timeout``).
    :raises ConfigError: invalid input or a missing resource (before any change).
    :raises CloudError: the server is or went into ERROR, timed out, or a cloud call failed.
    """
    plan = plan_instance(cloud, spec, name)
    if dry_run:
        return planned_result(cloud, plan)
    return apply_instance(cloud, plan, timeout=timeout)

