"""destroy: delete a declared server's servers, never its volumes.

For every managed server of the name (leftovers of a half-done rotation included), under the
server's lock (``ivc_tasks.resources.lock``):
  * each attached volume is detached first and left ``available`` (from a server in ERROR, where
    Nova refuses to detach, deleting the server frees them; ivc then waits until they are
    available);
  * floating IPs: the one ivc allocated for the server (description ``ivc:<env>:<name>``, see
    ``instances.floating_marker``) is released (deleted), together with spare ones of the same
    description; with ``keep_floating_ip`` it is only disassociated, so that a later
    create-instance reuses the address. A floating IP ivc did not allocate (any other
    description) is only disassociated, never deleted;
  * the server is deleted, and ivc waits until it is gone.
Destroying a name with no server is not an error: nothing to do.
"""

from __future__ import annotations

import logging
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import ConfigError
from ivc_tasks.resources.attachments import send_detach, wait_detached
from ivc_tasks.resources.floating_ips import associate, floating_marker, release
from ivc_tasks.resources.lock import ServerLock
from ivc_tasks.resources.resolve import forget, list_floating_ips, list_volumes, server_ports
from ivc_tasks.result import Action, StepResult
from ivc_tasks.resources.servers import attached_ids, managed_servers
from ivc_tasks.resources.waits import delete_server_and_wait
from ivc_tasks.spec import Spec

log = logging.getLogger("ivc")
STEP = "destroy"


def destroy(cloud: Cloud, spec: Spec, name: str, *, keep_floating_ip: bool = False,
            dry_run: bool = False) -> StepResult:
    """Delete server ``name`` (every managed server of that name), keeping its volumes.

    :param keep_floating_ip: disassociate ivc's floating IP instead of releasing it.
    :param dry_run: return the plan; change nothing.
    :raises ConfigError: ``name`` is neither declared nor the name of a managed server.
    :raises Locked: another run holds the server's lock.
    :raises CloudError: a cloud call failed.
    """
    servers = managed_servers(cloud, name, refresh=True)
    if not servers and name not in spec.servers:
        raise ConfigError(f"{spec.path}: --name {name!r}: no such declared server, and no "
                          f"server of that name made by ivc in environment {cloud.env!r}")
    result = StepResult(step=STEP, target=name, dry_run=dry_run)
    if not servers:
        return result
    lock = None if dry_run else ServerLock(cloud, name, op="destroy")
    if lock is not None:
        lock.acquire()
    try:
        marker = floating_marker(cloud.env, name)
        fips = list_floating_ips(cloud, refresh=True)
        volumes = {v.id: v for v in list_volumes(cloud, refresh=True)}
        released: set[str] = set()
        for server in servers:
            _destroy_one(cloud, server, name, fips, volumes, marker, result,
                         keep_floating_ip=keep_floating_ip, dry_run=dry_run, released=released)
        if not keep_floating_ip:
            for fip in fips:
                if not fip.port_id and fip.description == marker and fip.id not in released:
                    _release(cloud, fip, name, result, dry_run)
        result.info["volumes_kept"] = sorted({a.detail["id"] for a in result.actions
                                              if a.kind == "volume"})
    finally:
        if lock is not None:
            lock.release()
        forget(cloud, "servers", "volumes", "floating_ips")
    return result


def _release(cloud: Cloud, fip: Any, name: str, result: StepResult, dry_run: bool) -> None:
    if not dry_run:
        release(cloud, fip)
        log.info("released floating IP %s (ivc allocated it for %s)", fip.floating_ip_address,
                 name)
    result.actions.append(Action("delete", "floating_ip", fip.floating_ip_address,
                                 "allocated by ivc for this server: released",
                                 {"id": fip.id}))


def _destroy_one(cloud: Cloud, server: Any, name: str, fips: list[Any], volumes: dict[str, Any],
                 marker: str, result: StepResult, *, keep_floating_ip: bool, dry_run: bool,
                 released: set[str]) -> None:
    ports = {p.id for p in server_ports(cloud, server.id)}
    for fip in [f for f in fips if f.port_id in ports]:
        if fip.description == marker and not keep_floating_ip:
            _release(cloud, fip, name, result, dry_run)
            released.add(fip.id)
            continue
        if not dry_run:
            associate(cloud, fip, None, f"disassociate floating IP {fip.floating_ip_address}")
        why = "allocated by ivc, kept" if fip.description == marker else \
            "not allocated by ivc: kept"
        result.actions.append(Action("disassociate", "floating_ip", fip.floating_ip_address,
                                     f"from {server.id} ({why})", {"id": fip.id}))
    attached = sorted(attached_ids(server))
    if server.status != "ERROR":
        for volume_id in attached:
            label = getattr(volumes.get(volume_id), "name", None) or volume_id
            if not dry_run:
                send_detach(cloud, volume_id, label, server.id, name)
            result.actions.append(Action("detach", "volume", label, f"from {server.id}, kept",
                                         {"id": volume_id}))
        if not dry_run:
            for volume_id in attached:
                wait_detached(cloud, volume_id, volume_id, server.id, cloud.volume_timeout)
    if not dry_run:
        delete_server_and_wait(cloud, server.id, f"server {name}", cloud.delete_timeout)
        log.info("deleted server %s (%s)", name, server.id)
    result.actions.append(Action("delete", "server", name, f"{server.id} ({server.status})",
                                 {"id": server.id}))
    if server.status == "ERROR":
        for volume_id in attached:
            label = getattr(volumes.get(volume_id), "name", None) or volume_id
            if not dry_run:
                wait_detached(cloud, volume_id, volume_id, server.id, cloud.volume_timeout)
            result.actions.append(Action("detach", "volume", label,
                                         f"freed by deleting {server.id}, kept",
                                         {"id": volume_id}))
