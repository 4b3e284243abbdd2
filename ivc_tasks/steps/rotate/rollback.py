"""Rolling a rotation back: everything back onto the old server, the new one deleted.

Works from what the cloud says NOW (``r``, ``s``: the ``state.Run`` and ``RotationState``):
something already where it belongs counts as done, something missing is not an error. In
order: mark the new server ``ivc_rollback=1`` (so that a rerun rolls back too), the floating
IPs back to their recorded ports (their record is the new server's metadata, which may go
next), a new server in BUILD or ERROR deleted as it is, the volumes the old server held back
(side by side), the kept ports back, the old server started again if it was ACTIVE before the
rotation (``s.was``), the new server deleted, the markers cleared. Then ``RolledBack`` (exit 3)
names the phase that failed and why; a rollback that fails is a CloudError (exit 1) and a
rerun continues it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from ivc_tasks.errors import CloudError, IvcError, RolledBack
from ivc_tasks.resources.attachments import move_volume, volume_holders
from ivc_tasks.resources.floating_ips import move_floating_ips
from ivc_tasks.resources.lock import LockLost
from ivc_tasks.resources.markers import (
    UNMARKABLE,
    Markers,
    clear_markers,
    mark_rollback,
    metadata_of,
    port_move,
    set_port_move,
)
from ivc_tasks.resources.ports import addresses_of_port, attach_port, detach_port, get_port
from ivc_tasks.resources.servers import VOLUME_KEY_PREFIX, attached_ids, generation
from ivc_tasks.resources.waits import (
    delete_server_and_wait,
    get_server,
    power_done_or_under_way,
    wait_power_settled,
    wait_server,
)
from ivc_tasks.result import Action
from ivc_tasks.steps.parallel import run_side_by_side
from ivc_tasks.steps.rotate.gates import recheck_old
from ivc_tasks.steps.rotate.state import Learned, RotationState, Run

log = logging.getLogger("ivc")


def roll_back(r: Run, s: RotationState, phase: str, cause: IvcError) -> None:
    """Put everything back on the old server, delete the new one; always raises.

    :raises RolledBack: done (exit 3).
    :raises CloudError: the rollback failed too (a rerun continues it).
    """
    new_id = s.new.id if s.new is not None else None
    log.warning("server %s: phase %s failed: %s; rolling back", r.name, phase, cause)
    try:
        with r.phase("rollback"):
            _undo(r, s, new_id)
    except LockLost:
        raise
    except IvcError as exc:
        raise CloudError(f"rotate {r.name} failed in phase {phase}: {cause}; the rollback "
                         f"failed too: {exc}; run `invoke rotate --name {r.name}` again "
                         "to finish the rollback") from None
    r.report.outcome = "rolled back"
    old = get_server(r.cloud, s.old_id)
    serves = (f"server {s.old_id} is as it was, in ERROR" if old is not None and
              old.status == "ERROR" else
              f"server {s.old_id} serves as before with its volumes and floating IP")
    raise RolledBack(f"rotate {r.name} failed in phase {phase}: {cause}; rolled back: "
                     f"{serves}" + (f", new server {new_id} deleted" if new_id else "")
                     + recheck_old(r, s, phase))


def resume_rollback(r: Run, s: RotationState) -> Learned:
    """The ``rollback`` phase of a resumed rotation that cannot finish (the executor then
    rotates afresh)."""
    decision = r.prepared.decision
    log.info("server %s: resuming rotation %s: %s; rolling back", r.name,
             Markers.of(s.new).rotation or Markers.of(s.old).rotation, decision.reason)
    try:
        roll_back(r, s, "resume", CloudError(decision.reason))
    except RolledBack:
        pass
    return {}


def _undo(r: Run, s: RotationState, new_id: str | None) -> None:
    cloud, old_id = r.cloud, s.old_id
    old = get_server(cloud, old_id)
    if old is None:
        raise CloudError(f"the old server {old_id} is gone; nothing to roll back to")
    new = get_server(cloud, new_id) if new_id else None
    fips = Markers.of(old).fips or Markers.of(new).fips
    kept = _kept_ports(r, s, new)
    mark_rollback(cloud, new, f"new server {r.name}")
    # the floating IPs first: their record is the new server's metadata, which may go next
    actions, _ = move_floating_ips(cloud, fips, old, f"old server {r.name}",
                                   back_to_recorded_port=True)
    r.report.actions += actions
    if new is not None and new.status in UNMARKABLE:
        # ERROR: Nova refuses to detach from it, deleting frees the volumes; BUILD: nothing
        # of ours is on it yet (volumes move once it is ACTIVE). A rerun rolls back anyway.
        _delete_new(r, new.id)
        new = None
    had = _volumes_of_old(r, old, listed=() if s.again else r.prepared.listed_volumes.values())
    jobs = {ref: (lambda ref=ref, vid=vid: move_volume(
        cloud, vid, ref, old_id, f"old server {r.name}",
        movable_from=[new_id] if new_id else [], timeout=cloud.settings.volume_timeout))
        for ref, vid in r.prepared.volumes.items() if vid in had}
    for actions in run_side_by_side(jobs).values():
        r.report.actions += actions
    for port in kept:  # before the old server starts: a NIC present at boot
        move = port_move(port)
        if (move is None or move.from_id != old_id) and port.device_id != old_id:
            continue  # made for the new server (never the old one's): deleting it frees it
        if new is not None and detach_port(cloud, new.id, port, f"new server {r.name}"):
            r.report.actions.append(Action("detach", "port", port.id, f"from new server {new.id}",
                                           {"id": port.id, "from": new.id}))
        if attach_port(cloud, old_id, port, f"old server {r.name}"):
            r.report.actions.append(Action("attach", "port", port.id, f"{addresses_of_port(port)}"
                                           f" back to old server {old_id}",
                                           {"id": port.id, "to": old_id}))
        set_port_move(cloud, get_port(cloud, port.id) or port, None)
    old = wait_power_settled(cloud, get_server(cloud, old_id) or old, f"server {r.name}",
                             cloud.settings.stop_timeout)
    if (s.was or old.status) == "ACTIVE" and old.status == "SHUTOFF":
        log.info("starting old server %s (%s) again", r.name, old_id)
        cloud.call(f"start old server {r.name}", lambda: r.conn.compute.start_server(old_id),
                   done_already=lambda: power_done_or_under_way(cloud, old_id, "ACTIVE"))
        r.report.actions.append(Action("start", "server", r.name, f"old server {old_id}",
                                       {"id": old_id}))
        wait_server(cloud, old_id, f"old server {r.name}", "ACTIVE", cloud.settings.stop_timeout)
    if new is not None:
        _delete_new(r, new.id)
    clear_markers(cloud, old_id, f"server {r.name}")
    r.report.new_id = None
    r.report.generation = generation(old)


def _kept_ports(r: Run, s: RotationState, new: Any | None) -> list[Any]:
    """The kept ports (``keep_address``) as Neutron shows them now: the rotation's, and those
    the new server records (``ivc_port:``); gone ones are left out."""
    ids = [p.id for p in s.ports.values() if p is not None] + list(Markers.of(new).ports)
    return [p for pid in dict.fromkeys(ids) if (p := get_port(r.cloud, pid)) is not None]


def _volumes_of_old(r: Run, old: Any, listed: Iterable[Any]) -> set[str]:
    """The volumes the old server held before the rotation: its own record (``ivc_vol:``
    metadata, which a rotation never changes), what Nova shows attached now, and what preflight
    listed on it (``listed``; none once a rotation is done afresh after a rollback). A volume
    declared since (never on the old server) is not put there: if the new server holds it,
    deleting that server frees it."""
    recorded = {v for k, v in metadata_of(old).items() if k.startswith(VOLUME_KEY_PREFIX)}
    on_old = {v.id for v in listed if old.id in volume_holders(v)}
    return recorded | on_old | attached_ids(old)


def _delete_new(r: Run, new_id: str) -> None:
    if delete_server_and_wait(r.cloud, new_id, f"new server {r.name}", r.cloud.settings.delete_timeout):
        r.report.actions.append(Action("delete", "server", r.name, f"new server {new_id}",
                                       {"id": new_id}))
