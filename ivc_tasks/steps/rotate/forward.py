"""The forward phases of a rotation: each ``phase(run, state) -> Learned`` (``state.py``).

Each works from what the cloud says now, so a rerun after a crash can run it again: a volume
already on the new server, a floating IP already moved, an old server already stopped or gone
count as done. None changes the preflight's plan: what it learns (the new server, the kept
ports as they are now...) it returns, and the executor records it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import CloudError, IvcError
from ivc_tasks.resources.attachments import move_volume
from ivc_tasks.resources.floating_ips import ensure_floating_ip, is_public
from ivc_tasks.resources.floating_ips import move_floating_ips as move_fips
from ivc_tasks.resources.markers import (
    PortMove,
    clear_markers,
    new_server_markers,
    port_move,
    set_port_move,
)
from ivc_tasks.resources.ports import (
    address_changes,
    addresses_of_port,
    detach_port,
    ensure_kept_ports,
    get_port,
    public_addresses,
)
from ivc_tasks.resources.resolve import list_floating_ips, server_ports
from ivc_tasks.resources.servers import (
    create_server,
    generation,
    server_metadata,
    server_state,
    set_metadata,
    volume_key,
)
from ivc_tasks.resources.waits import (
    delete_server_and_wait,
    get_server,
    power_done_or_under_way,
    wait_power_settled,
    wait_server,
)
from ivc_tasks.result import Action
from ivc_tasks.steps.instances import apply_instance, create_request, redacted_request
from ivc_tasks.steps.parallel import run_side_by_side
from ivc_tasks.steps.rotate.decide import CREATE
from ivc_tasks.steps.rotate.preflight import Prepared
from ivc_tasks.steps.rotate.state import Learned, PhaseFailed, RotationState, Run

log = logging.getLogger("ivc")


# -- create --------------------------------------------------------------------------------
def create(r: Run, s: RotationState) -> Learned:
    """A new server: made by this run (rotate), by a crashed run (wait for it), or, with no
    server at all, the plain create-instance step."""
    if s.kind == CREATE:
        with r.phase("create"):
            step = apply_instance(r.cloud, r.prepared.plan, timeout=r.options.boot_timeout)
        r.report.actions += step.actions
        r.report.warnings += step.warnings
        r.report.new_id = step.info.get("id")
        r.report.generation = step.info.get("generation")
        return {}
    if s.new is not None:  # resuming: the crashed run made it
        with r.phase("create", note="waiting for the new server"):
            new = wait_server(r.cloud, s.new.id, f"new server {r.name}", "ACTIVE",
                              r.boot_timeout)
        return {"new": new, "new_fresh": True}
    with r.phase("create") as record:
        before = _public_addresses(r, s.old.id, s.ports)
        plan = r.prepared.plan
        ports = dict(s.ports)  # the kept ports it makes are learned, even if it fails
        try:
            r.report.actions += ensure_kept_ports(r.cloud, r.name, ports, plan.networks, [
                i for g in plan.groups if (i := plan.groups[g] or r.prepared.group_ids.get(g))])
            s = s.learn(ports=ports)
            body, gen = new_server_request(r.cloud, r.prepared, s, old_fips(r.cloud, s.old.id))
            log.info("creating server %s generation %d (image %s, flavor %s)", r.name, gen,
                     plan.image.name, plan.flavor.name)
            new = create_server(r.cloud, r.name, body)
        except IvcError as exc:
            raise PhaseFailed(exc, {"ports": ports}) from exc
        r.report.new_id, r.report.generation = new.id, gen
        r.report.actions.append(Action("create", "server", r.name, f"generation {gen}", {
            "id": new.id, "request": redacted_request(body, plan.declared.userdata)}))
        try:
            new = wait_server(r.cloud, new.id, f"new server {r.name}", "ACTIVE", r.boot_timeout)
        except IvcError as exc:  # the rollback deletes it
            raise PhaseFailed(exc, {"new": new, "ports": ports, "new_fresh": False}) from exc
        log.info("new server %s (%s) is ACTIVE", r.name, new.id)
        record.note = _report_addresses(r, ports, before,
                                        _public_addresses(r, new.id, ports, kept=False))
    return {"new": new, "ports": ports, "new_fresh": True}


def new_server_request(cloud: Cloud, prepared: Prepared, s: RotationState,
                       fips: dict[str, tuple[str, str]]) -> tuple[dict[str, Any], int]:
    """The create request of the new server and its generation: the declaration's request
    (``instances.create_request``: the kept ports, the security groups' ids, no volume at
    boot: they move from the old server), ivc's tags and the rotation's markers. The executor
    sends it; the dry run shows it (redacted)."""
    plan = dataclasses.replace(prepared.plan, ports=dict(s.ports), boot_volumes={})
    body = create_request(cloud, plan, prepared.group_ids)
    gen = generation(s.old) + 1
    kept = {p.id: p.network_id for p in s.ports.values() if p is not None}
    body["metadata"] = {
        **server_metadata(plan.declared, cloud.env, cloud.run_id, gen=gen,
                          volumes=prepared.volumes, spec_id=plan.spec_id),
        **new_server_markers(cloud.run_id, s.old_id, s.was, fips, kept),
    }
    return body, gen


def _public_addresses(r: Run, server_id: str, ports: dict, *, kept: bool = True
                      ) -> dict[str, list[str]]:
    """The server's addresses on its public networks (one request), with the kept ports' (the
    old server's, moving: detached from it by now)."""
    plan = r.prepared.plan
    mine = [p for p in ports.values() if p is not None] if kept else []
    return public_addresses([*server_ports(r.cloud, server_id), *mine], plan.networks)


def _report_addresses(r: Run, ports: dict, before: dict, after: dict) -> str:
    """Record the public addresses' fate (``addresses`` in the report); the phase's note."""
    plan = r.prepared.plan
    kept_names = {n.name for n in plan.networks if ports.get(n.id)}
    r.report.addresses = address_changes(before, after, kept_names)
    declared = {n.name for n in plan.networks if n.id in ports}
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


def old_fips(cloud: Cloud, old_id: str, ports: list[Any] | None = None
             ) -> dict[str, tuple[str, str]]:
    """``{fip id: (port id, network id)}`` of the floating IPs on the old server's ports
    (``ports``: as listed already; else they are listed)."""
    by_port = {p.id: p for p in (server_ports(cloud, old_id) if ports is None else ports)}
    fips = list_floating_ips(cloud)  # listed in preflight, under the lock
    return {f.id: (f.port_id, by_port[f.port_id].network_id)
            for f in fips if f.port_id in by_port}


# -- a kept port ---------------------------------------------------------------------------
def move_port(r: Run, s: RotationState) -> Learned:
    """The kept ports off the stopped old server, for the new server's create request: each is
    tagged with the move first (the new server that will record it does not exist yet), then
    detached (Nova unbinds a port it was given; it stays, with its IP and MAC)."""
    ports = dict(s.ports)
    with r.phase("move-port") as record:
        outage_start = s.outage_start or r.cloud.clock()
        notes = []
        for net_id, port in s.ports.items():
            if port is None:
                continue
            fresh = get_port(r.cloud, port.id)
            if fresh is None:
                raise CloudError(f"server {r.name}: its kept port {port.id} is gone")
            move = port_move(fresh)
            if move is None or move.from_id != s.old_id:
                set_port_move(r.cloud, fresh, PortMove(r.cloud.run_id, s.old_id, s.was))
            if detach_port(r.cloud, s.old_id, fresh, f"server {r.name}"):
                r.report.actions.append(Action("detach", "port", fresh.id,
                                               f"{addresses_of_port(fresh)} from old server "
                                               f"{s.old_id}", {"id": fresh.id,
                                                               "from": s.old_id}))
            ports[net_id] = get_port(r.cloud, port.id) or fresh
            notes.append(f"{fresh.id} ({addresses_of_port(fresh)}) off {s.old_id}")
        record.note = "; ".join(notes)
    return {"ports": ports, "outage_start": outage_start}


# -- stop ----------------------------------------------------------------------------------
def stop_old(r: Run, s: RotationState) -> Learned:
    outage = {"outage_start": s.outage_start or r.cloud.clock()}
    if not r.options.stop:
        with r.phase("stop", note="skipped (--no-stop)"):
            return outage
    with r.phase("stop") as record:
        if s.old is None:
            record.note = "the old server is gone"
            return outage
        old = wait_power_settled(r.cloud, s.old, f"server {r.name}", r.cloud.settings.stop_timeout)
        if old.status != "ACTIVE" or old.task_state:
            record.note = f"old server is {server_state(old)}"
            return outage
        log.info("stopping old server %s (%s)", r.name, old.id)
        r.cloud.call(f"stop old server {r.name}", lambda: r.conn.compute.stop_server(old.id),
                     done_already=lambda: power_done_or_under_way(r.cloud, old.id, "SHUTOFF"))
        r.report.actions.append(Action("stop", "server", r.name, f"old server {old.id}",
                                       {"id": old.id}))
        wait_server(r.cloud, old.id, f"old server {r.name}", "SHUTOFF", r.cloud.settings.stop_timeout)
    return outage


# -- volumes and floating IPs --------------------------------------------------------------
def move_volumes(r: Run, s: RotationState) -> Learned:
    """Every declared volume onto the new server, side by side; then record them."""
    volumes = r.prepared.volumes
    listed = s.listed_volumes  # as preflight listed them, while nothing moved since
    new = s.new
    learned: Learned = {}
    with r.phase("move-volumes", note=", ".join(volumes) or "no volumes"):
        learned["outage_start"] = s.outage_start or r.cloud.clock()
        jobs = {ref: (lambda ref=ref, vid=vid: move_volume(
            r.cloud, vid, ref, new.id, f"new server {r.name}", movable_from=[s.old_id],
            timeout=r.cloud.settings.volume_timeout, known=listed.get(ref)))
            for ref, vid in volumes.items()}
        for actions in run_side_by_side(jobs).values():
            r.report.actions += actions
        record = {volume_key(ref): vid for ref, vid in volumes.items()}
        if record and any((new.metadata or {}).get(k) != v for k, v in record.items()):
            set_metadata(r.cloud, new, f"record volumes of {r.name}", record)
            learned["new_fresh"] = False
    return learned


def move_floating_ips(r: Run, s: RotationState) -> Learned:
    """The old server's floating IPs onto the new server; or, if it had none and one is
    declared, give the new server one."""
    plan = r.prepared.plan
    with r.phase("move-floating-ip") as record:
        order = plan.floating.internal_network_ids if plan.floating is not None else \
            [n.id for n in plan.networks if not is_public(n)]
        actions, placed = move_fips(r.cloud, s.fips, s.new, f"new server {r.name}",
                                    back_to_recorded_port=False, internal_order=order)
        r.report.actions += actions
        if s.outage_start is not None and (placed or not s.fips):
            r.report.outage_seconds = r.cloud.clock() - s.outage_start
        if plan.declared.floating_ip and not placed and plan.floating is not None:
            fresh = get_server(r.cloud, s.new.id) or s.new
            action = ensure_floating_ip(r.cloud, r.name, plan.floating, fresh)
            if action:
                r.report.actions.append(action)
                record.note = f"{action.verb} {action.summary}"
            if s.outage_start is not None:
                r.report.outage_seconds = r.cloud.clock() - s.outage_start
    return {}


# -- the end -------------------------------------------------------------------------------
def delete_old(r: Run, s: RotationState) -> Learned:
    with r.phase("delete-old"):
        if delete_server_and_wait(r.cloud, s.old_id, f"old server {r.name}",
                                  r.cloud.settings.delete_timeout):
            r.report.actions.append(Action("delete", "server", r.name,
                                           f"old server {s.old_id}", {"id": s.old_id}))
    return {}


def finish(r: Run, s: RotationState) -> Learned:
    with r.phase("finish"):
        clear_markers(r.cloud, s.new.id, f"server {r.name}",
                      known=s.new if s.new_fresh else None)
        for port in s.ports.values():  # the kept ports' move tags
            fresh = get_port(r.cloud, port.id) if port is not None else None
            if fresh is not None and port_move(fresh) is not None:
                set_port_move(r.cloud, fresh, None)
    return {}
