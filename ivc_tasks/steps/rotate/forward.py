"""The forward phases of a rotation, one function each (``r`` is the ``executor.Rotation``).

Each works from what the cloud says now, so a rerun after a crash can run it again: a volume
already on the new server, a floating IP already moved, an old server already stopped or gone
count as done.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ivc_tasks.errors import CloudError
from ivc_tasks.resources.attachments import move_volume
from ivc_tasks.resources.floating_ips import ensure_floating_ip, move_floating_ips as move_fips
from ivc_tasks.resources.floating_ips import is_public
from ivc_tasks.steps.instances import apply_instance, create_request, redacted_request
from ivc_tasks.steps.parallel import run_side_by_side
from ivc_tasks.resources.ports import (
    PORT_KEY_PREFIX, TAG_FROM, TAG_WAS, address_changes, addresses_of_port, detach_port,
    ensure_kept_ports, get_port, port_tags, public_addresses, set_move_tags,
)
from ivc_tasks.resources.resolve import forget, list_floating_ips, server_ports
from ivc_tasks.result import Action
from ivc_tasks.steps.rotate.decide import CREATE
from ivc_tasks.steps.rotate.markers import clear_markers, new_server_markers
from ivc_tasks.resources.servers import (
    META_ROLE, META_ROTATION, META_WAS, generation, managed_servers, server_metadata,
    server_state,
    volume_key,
)
from ivc_tasks.resources.waits import (
    delete_server_and_wait, get_server, power_done_or_under_way, wait_power_settled, wait_server,
)

if TYPE_CHECKING:
    from ivc_tasks.steps.rotate.executor import Rotation

log = logging.getLogger("ivc")


# -- create --------------------------------------------------------------------------------
def create(r: Rotation) -> None:
    """A new server: made by this run (rotate), by a crashed run (wait for it), or, with no
    server at all, the plain create-instance step."""
    if r.kind == CREATE:
        with r.phase("create"):
            step = apply_instance(r.cloud, r.prepared.plan, timeout=r.options.boot_timeout)
        r.report.actions += step.actions
        r.report.warnings += step.warnings
        r.report.new_id = step.info.get("id")
        r.report.generation = step.info.get("generation")
        return
    if r.new is not None:  # resuming: the crashed run made it
        with r.phase("create", note="waiting for the new server"):
            r.new = wait_server(r.cloud, r.new.id, f"new server {r.name}", "ACTIVE",
                                r.boot_timeout)
        return
    with r.phase("create") as record:
        before = _public_addresses(r, r.old.id)
        r.new = _create_new(r, _old_fips(r))
        r.new = wait_server(r.cloud, r.new.id, f"new server {r.name}", "ACTIVE", r.boot_timeout)
        log.info("new server %s (%s) is ACTIVE", r.name, r.new.id)
        record.note = _report_addresses(r, before, _public_addresses(r, r.new.id, kept=False))


def _public_addresses(r: Rotation, server_id: str, *, kept: bool = True
                      ) -> dict[str, list[str]]:
    """The server's addresses on its public networks (one request), with the kept ports' (the
    old server's, moving: detached from it by now)."""
    plan = r.prepared.plan
    ports = [p for p in plan.ports.values() if p is not None] if kept else []
    return public_addresses([*server_ports(r.cloud, server_id), *ports], plan.networks)


def _report_addresses(r: Rotation, before: dict, after: dict) -> str:
    """Record the public addresses' fate (``addresses`` in the report); the phase's note."""
    kept_names = {n.name for n in r.prepared.plan.networks if r.prepared.plan.ports.get(n.id)}
    r.report.addresses = address_changes(before, after, kept_names)
    declared = {n.name for n in r.prepared.plan.networks if n.id in r.prepared.plan.ports}
    for change in r.report.addresses:
        if not change["kept"] and change["old"] != change["new"]:
            fix = ("ivc made its port now: it is kept from the next rotate on"
                   if change["network"] in declared else
                   f"keep_address = [\"{change['network']}\"] keeps it across rotations")
            r.report.warnings.append(
                f"server {r.name}: its public address on {change['network']} changed: "
                f"{', '.join(change['old']) or '-'} -> {', '.join(change['new']) or '-'} "
                f"({fix})")
    return "; ".join(f"{c['network']}: {', '.join(c['old']) or '-'}"
                     + (" kept" if c["kept"] else f" -> {', '.join(c['new']) or '-'}")
                     for c in r.report.addresses)


def _old_fips(r: Rotation) -> dict[str, tuple[str, str]]:
    """``{fip id: (port id, network id)}`` of the floating IPs on the old server's ports."""
    by_port = {p.id: p for p in server_ports(r.cloud, r.old.id)}
    fips = list_floating_ips(r.cloud)  # listed in preflight, under the lock
    return {f.id: (f.port_id, by_port[f.port_id].network_id)
            for f in fips if f.port_id in by_port}


def new_server_request(r: Rotation, fips: dict[str, tuple[str, str]]) -> tuple[dict, int]:
    """The create request of the new server (markers included) and its generation."""
    plan = r.prepared.plan
    plan.boot_volumes = {}
    body = create_request(r.cloud, plan, r.prepared.group_ids)
    gen = generation(r.old) + 1
    body["metadata"] = {
        **server_metadata(plan.declared, r.cloud.env, r.cloud.run_id, gen=gen,
                          volumes=r.prepared.volumes, spec_id=plan.spec_id),
        **new_server_markers(r.cloud.run_id, r.old, fips),
    }
    return body, gen


def _create_new(r: Rotation, fips: dict[str, tuple[str, str]]) -> Any:
    plan = r.prepared.plan
    r.report.actions += ensure_kept_ports(r.cloud, r.name, plan.ports, plan.networks, [
        i for g in plan.groups if (i := plan.groups[g] or r.prepared.group_ids.get(g))])
    body, gen = new_server_request(r, fips)
    kept = {p.id: p for p in plan.ports.values() if p is not None}
    body["metadata"].update({PORT_KEY_PREFIX + pid: p.network_id for pid, p in kept.items()})
    was = next((port_tags(p).get(TAG_WAS) for p in kept.values() if port_tags(p).get(TAG_WAS)
                and port_tags(p).get(TAG_FROM) == r.old_id), None)
    if was:  # the old server's status before this rotation stopped it (a resumed move)
        body["metadata"][META_WAS] = was
    rotation = r.cloud.run_id
    log.info("creating server %s generation %d (image %s, flavor %s)", r.name, gen,
             plan.image.name, plan.flavor.name)

    def made_meanwhile() -> Any | None:
        for server in managed_servers(r.cloud, r.name, refresh=True):
            meta = server.metadata or {}
            if meta.get(META_ROTATION) == rotation and meta.get(META_ROLE) == "new":
                return server
        return None

    new = r.cloud.call(f"create server {r.name}",
                       lambda: r.conn.compute.create_server(**body),
                       done_already=made_meanwhile, redact=body.get("user_data"))
    forget(r.cloud, "servers")
    r.new = new
    r.report.new_id, r.report.generation = new.id, gen
    r.report.actions.append(Action("create", "server", r.name, f"generation {gen}", {
        "id": new.id, "request": redacted_request(body, plan.declared.userdata)}))
    return new


# -- a kept port ---------------------------------------------------------------------------
def move_port(r: Rotation) -> None:
    """The kept ports off the stopped old server, for the new server's create request: each is
    tagged with the move first (the new server that will record it does not exist yet), then
    detached (Nova unbinds a port it was given; it stays, with its IP and MAC)."""
    plan = r.prepared.plan
    with r.phase("move-port") as record:
        r.outage_start = r.outage_start or r.cloud.clock()
        notes = []
        for net_id, port in plan.ports.items():
            if port is None:
                continue
            fresh = get_port(r.cloud, port.id)
            if fresh is None:
                raise CloudError(f"server {r.name}: its kept port {port.id} is gone")
            if port_tags(fresh).get(TAG_FROM) != r.old_id:
                was = r.old_listed.status if r.old_listed is not None else None
                set_move_tags(r.cloud, fresh, r.cloud.run_id, r.old_id, was)
            if detach_port(r.cloud, r.old_id, fresh, f"server {r.name}"):
                r.report.actions.append(Action("detach", "port", fresh.id,
                                               f"{addresses_of_port(fresh)} from old server "
                                               f"{r.old_id}", {"id": fresh.id,
                                                               "from": r.old_id}))
            plan.ports[net_id] = get_port(r.cloud, port.id) or fresh
            notes.append(f"{fresh.id} ({addresses_of_port(fresh)}) off {r.old_id}")
        record.note = "; ".join(notes)


# -- stop ----------------------------------------------------------------------------------
def stop_old(r: Rotation) -> None:
    if not r.options.stop:
        with r.phase("stop", note="skipped (--no-stop)"):
            r.outage_start = r.outage_start or r.cloud.clock()
        return
    with r.phase("stop") as record:
        r.outage_start = r.outage_start or r.cloud.clock()
        if r.old is None:
            record.note = "the old server is gone"
            return
        old = wait_power_settled(r.cloud, r.old, f"server {r.name}", r.cloud.settings.stop_timeout)
        if old.status != "ACTIVE" or old.task_state:
            record.note = f"old server is {server_state(old)}"
            return
        log.info("stopping old server %s (%s)", r.name, old.id)
        r.cloud.call(f"stop old server {r.name}", lambda: r.conn.compute.stop_server(old.id),
                     done_already=lambda: power_done_or_under_way(r.cloud, old.id, "SHUTOFF"))
        r.report.actions.append(Action("stop", "server", r.name, f"old server {old.id}",
                                       {"id": old.id}))
        wait_server(r.cloud, old.id, f"old server {r.name}", "SHUTOFF", r.cloud.settings.stop_timeout)


# -- volumes and floating IPs --------------------------------------------------------------
def move_volumes(r: Rotation) -> None:
    """Every declared volume onto the new server, side by side; then record them."""
    volumes = r.prepared.volumes
    # as preflight listed them, while nothing moved since (not after deleting the old server)
    listed = r.prepared.listed_volumes if r.as_listed and not r.no_return else {}
    new = r.new
    with r.phase("move-volumes", note=", ".join(volumes) or "no volumes"):
        r.outage_start = r.outage_start or r.cloud.clock()
        jobs = {ref: (lambda ref=ref, vid=vid: move_volume(
            r.cloud, vid, ref, new.id, f"new server {r.name}", movable_from=[r.old_id],
            timeout=r.cloud.settings.volume_timeout, known=listed.get(ref)))
            for ref, vid in volumes.items()}
        for actions in run_side_by_side(jobs).values():
            r.report.actions += actions
        record = {volume_key(ref): vid for ref, vid in volumes.items()}
        if record and any((new.metadata or {}).get(k) != v for k, v in record.items()):
            r.cloud.call(f"record volumes of {r.name}",
                         lambda: r.conn.compute.set_server_metadata(new.id, **record))
            r.metadata_changed = True


def move_floating_ips(r: Rotation) -> None:
    """The old server's floating IPs onto the new server; or, if it had none and one is
    declared, give the new server one."""
    plan = r.prepared.plan
    with r.phase("move-floating-ip") as record:
        order = plan.floating.internal_network_ids if plan.floating is not None else \
            [n.id for n in plan.networks if not is_public(n)]
        actions, placed = move_fips(r.cloud, r.fips, r.new, f"new server {r.name}",
                                    back_to_recorded_port=False, internal_order=order)
        r.report.actions += actions
        if r.outage_start is not None and (placed or not r.fips):
            r.report.outage_seconds = r.cloud.clock() - r.outage_start
        if plan.declared.floating_ip and not placed and plan.floating is not None:
            fresh = get_server(r.cloud, r.new.id) or r.new
            action = ensure_floating_ip(r.cloud, r.name, plan.floating, fresh)
            if action:
                r.report.actions.append(action)
                record.note = f"{action.verb} {action.summary}"
            if r.outage_start is not None:
                r.report.outage_seconds = r.cloud.clock() - r.outage_start


# -- the end -------------------------------------------------------------------------------
def delete_old(r: Rotation) -> None:
    with r.phase("delete-old"):
        if delete_server_and_wait(r.cloud, r.old_id, f"old server {r.name}",
                                  r.cloud.settings.delete_timeout):
            r.report.actions.append(Action("delete", "server", r.name,
                                           f"old server {r.old_id}", {"id": r.old_id}))


def finish(r: Rotation) -> None:
    with r.phase("finish"):
        clear_markers(r.cloud, r.new.id, f"server {r.name}",
                      known=None if r.metadata_changed else r.new)
        for port in r.prepared.plan.ports.values():  # the kept ports' move tags
            fresh = get_port(r.cloud, port.id) if port is not None else None
            if fresh is not None and port_tags(fresh):
                set_move_tags(r.cloud, fresh, None, None, None)
