"""Volume attachments: who holds a volume, attach and detach (looking before re-sending), and
moving a volume from one server to another. ivc never creates or deletes a volume.

Cinder's volume states as ivc reads them: ``available`` and ``in-use`` are settled;
``VOLUME_BUSY`` ones settle by themselves (wait); ``VOLUME_FAILED`` ones need a person.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ivc_tasks.cloud import Cloud, CloudCallError
from ivc_tasks.errors import CloudError
from ivc_tasks.resources.poller import VOLUMES, poll
from ivc_tasks.resources.resolve import delete_or_gone
from ivc_tasks.resources.servers import server_label
from ivc_tasks.resources.waits import get_volume
from ivc_tasks.result import Action

log = logging.getLogger("ivc")
VOLUME_BUSY = ("attaching", "detaching", "reserved", "creating", "downloading", "maintenance")
VOLUME_FAILED = ("error", "error_attaching", "error_detaching", "error_deleting")


@dataclass(frozen=True)
class VolumeProblem:
    """Why a volume cannot be attached (``volume_problem``); ``elsewhere``: another server
    holds it (a person must detach it), else its status is wrong."""

    text: str
    elsewhere: bool

    def __str__(self) -> str:
        return self.text


def volume_problem(cloud: Cloud, volume: Any, ref: str, *, server: str,
                   ours: Iterable[str] = (), settled: Iterable[str] = ("available",)
                   ) -> VolumeProblem | None:
    """The one "is this volume attachable" check (create, attach, deploy, rotate): None when
    it is held by none but ``ours`` and its status is one of ``settled``.

    :param server: the declared server it is for (named in the text).
    :param ours: ids of the servers that may hold it already (this server's).
    """
    foreign = [h for h in volume_holders(volume) if h not in set(ours)]
    if foreign:
        return VolumeProblem(f"volume {ref!r} ({volume.id}) is attached to server "
                             f"{server_label(cloud, foreign[0])}, not to {server}; detach it "
                             "there first (ivc never moves a volume implicitly)", True)
    if volume.status not in tuple(settled):
        return VolumeProblem(f"volume {ref!r} ({volume.id}) is {volume.status!r}, not "
                             "available; fix it in the cloud first", False)
    return None
NOVA_LAG_RETRIES = 5  # attach refused while Nova still lists the volume on the server it left


def volume_holders(volume: Any) -> list[str]:
    """Return the ids of the servers Cinder says ``volume`` is attached to."""
    return [a.get("server_id") for a in (volume.attachments or []) if a.get("server_id")]


def detach_done_or_under_way(volume: Any | None, server_id: str) -> bool:
    """After a lost detach response: did that detach happen, or is it under way? (Sending it
    again would get Nova's 400 while the volume is detaching.)"""
    return volume is None or volume.status == "detaching" or server_id not in volume_holders(volume)


def attach_done_or_under_way(volume: Any | None, server_id: str) -> bool:
    """After a lost attach response: did that attach happen, or is it under way? (Sending it
    again would get Nova's 400 while the volume is reserved or attaching.)"""
    return volume is not None and (server_id in volume_holders(volume)
                                   or volume.status in ("reserved", "attaching"))


def server_ref(server_id: str) -> Any:
    """A Server resource that holds only an id: the SDK then makes no lookup of its own
    (``delete_volume_attachment`` given a bare id GETs the server to check the argument order).
    """
    from openstack.compute.v2.server import Server

    return Server.new(id=server_id)


# -- the requests --------------------------------------------------------------------------
def send_attach(cloud: Cloud, volume_id: str, ref: str, server_id: str, label: str) -> None:
    """Ask Nova to attach the volume; after a lost response, look before sending it again.

    :raises CloudCallError: Nova refused (e.g. 400 "already attached") or the call failed.
    """
    conn = cloud.conn
    log.info("attaching volume %s to %s", ref, label)

    def attached_meanwhile() -> Any | None:
        fresh = get_volume(cloud, volume_id)
        return fresh if attach_done_or_under_way(fresh, server_id) else None

    cloud.call(f"attach volume {ref} to {label}",
               lambda: conn.compute.create_volume_attachment(server_id, volume_id),
               conflict_is_transient=True, done_already=attached_meanwhile)


def send_detach(cloud: Cloud, volume_id: str, ref: str, server_id: str, label: str) -> None:
    """Ask Nova to detach the volume from the server (gone already counts); after a lost
    response, look before sending it again.

    :raises CloudCallError: the call failed.
    """
    conn = cloud.conn
    log.info("detaching volume %s from %s", ref, label)
    delete_or_gone(cloud, f"detach volume {ref} from {label}",
                   lambda: conn.compute.delete_volume_attachment(
                       server_ref(server_id), volume_id, ignore_missing=False),
                   conflict_is_transient=True,
                   done_already=lambda: detach_done_or_under_way(
                       get_volume(cloud, volume_id), server_id) or None)


# -- the waits -----------------------------------------------------------------------------
def wait_volume(cloud: Cloud, volume_id: str, ref: str, wanted: str,
                done: Callable[[Any], bool], timeout: float, *, eager: bool = True) -> Any:
    """Wait until ``done(volume)``; ``wanted`` (in-use, available) says which turn is a failure.

    :raises CloudError: gone, a failed state, the attach or detach undone, or timed out.
    """
    def failed(volume: Any | None) -> str | None:
        if volume is None:
            return f"is gone ({volume_id})"
        if volume.status in VOLUME_FAILED:
            return f"went to {volume.status} ({volume_id}); look at the cloud's logs"
        if wanted == "in-use" and volume.status == "available":
            return f"is available again ({volume_id}): Nova rolled the attach back"
        if wanted == "available" and volume.status == "in-use" and not done(volume):
            return f"is still in-use ({volume_id}): the detach did not happen"
        return None

    return poll(cloud, VOLUMES, volume_id, f"volume {ref}", lambda: get_volume(cloud, volume_id),
                lambda v: "gone" if v is None else v.status,
                      done=lambda v: v is not None and done(v), failed=failed, timeout=timeout,
                      eager=eager)


def wait_attached(cloud: Cloud, volume_id: str, ref: str, server_id: str, timeout: float, *,
                  eager: bool = True) -> Any:
    """Wait until the volume is in-use by the server."""
    return wait_volume(cloud, volume_id, ref, "in-use",
                       lambda v: v.status == "in-use" and server_id in volume_holders(v),
                       timeout, eager=eager)


def wait_detached(cloud: Cloud, volume_id: str, ref: str, server_id: str, timeout: float
                  ) -> Any:
    """Wait until the server does not hold the volume any more."""
    return wait_volume(cloud, volume_id, ref, "available",
                       lambda v: v.status == "available" or server_id not in volume_holders(v),
                       timeout)


def _settled(volume: Any | None) -> bool:
    return volume is None or (volume.status not in VOLUME_BUSY and
                              not (volume.status == "in-use" and not volume_holders(volume)))


def wait_settled(cloud: Cloud, volume_id: str, ref: str, timeout: float) -> None:
    """Wait until the volume is in no transitional state (or gone)."""
    poll(cloud, VOLUMES, volume_id, f"volume {ref}", lambda: get_volume(cloud, volume_id),
         lambda v: "gone" if v is None else v.status,
         done=_settled, failed=lambda v: None, timeout=timeout, eager=True)


# -- moving a volume -----------------------------------------------------------------------
def move_volume(cloud: Cloud, volume_id: str, ref: str, target: str, target_name: str, *,
                movable_from: Iterable[str], timeout: float, known: Any = None) -> list[Action]:
    """Make the volume in-use by server ``target``, from whatever state it is in now.

    Attached to a server of ``movable_from``: detach it there, wait until available, attach it.
    Attached to ``target`` already: done. Busy (attaching, detaching...): wait until it settles.
    Gone: not an error (nothing to do). Never detaches it from any other server. Rotate's
    forward path and its rollback both use it, so either can start from any point.

    One loop over the volume's states (longer than most functions here: split, the state
    machine would be spread over several places).

    :param known: the volume as listed under the lock and unchanged since (saves a GET).
    :raises CloudError: it is attached to a foreign server, went to an error state, or timed out.
    """
    movable = set(movable_from) - {target}
    actions: list[Action] = []
    nova_lags = 0
    for _ in range(8 + NOVA_LAG_RETRIES):
        # ``known``: as listed, or as the last wait saw it; trusted only for the usual case
        # (a failed state or a foreign holder is fetched again before ivc acts on it)
        snapshot = known is not None
        volume = known if snapshot else get_volume(cloud, volume_id)
        known = None
        if volume is None:
            log.warning("volume %s (%s) is gone; nothing to move", ref, volume_id)
            return actions
        holders = volume_holders(volume)
        if volume.status in VOLUME_FAILED and not snapshot:
            raise CloudError(f"volume {ref} ({volume_id}) is {volume.status}; fix it in the cloud "
                             "(openstack volume set --state ...) and run again")
        if volume.status in VOLUME_BUSY or (volume.status == "in-use" and not holders):
            wait_settled(cloud, volume_id, ref, timeout)
            continue
        if volume.status == "in-use" and holders == [target]:
            return actions
        foreign = [h for h in holders if h != target and h not in movable]
        if (foreign or volume.status in VOLUME_FAILED) and snapshot:
            continue
        if foreign:
            raise CloudError(f"volume {ref} ({volume_id}) is attached to server {foreign[0]}, "
                             f"which is not part of this rotation; ivc leaves it there")
        others = [h for h in holders if h != target]
        if others:
            for holder in others:
                send_detach(cloud, volume_id, ref, holder, holder)
                actions.append(Action("detach", "volume", ref, f"from {holder}",
                                      {"id": volume_id, "server_id": holder}))
            known = wait_volume(cloud, volume_id, ref, "available",
                                lambda v: v.status == "available" or
                                (v.status == "in-use" and set(volume_holders(v)) <= {target}),
                                timeout)
            continue
        if volume.status == "available":
            try:
                send_attach(cloud, volume_id, ref, target, target_name)
            except CloudCallError as exc:
                # Cinder says available a moment before Nova drops the old server's record of
                # the volume; Nova then refuses the attach (400 naming that server): nothing
                # changed, so look again shortly
                left = [h for h in movable if h in exc.details]
                if exc.status != 400 or "already attached" not in exc.details or not left \
                        or nova_lags >= NOVA_LAG_RETRIES:
                    raise
                nova_lags += 1
                log.info("Nova still lists volume %s on %s; attaching again", ref, left[0])
                cloud.sleep(0.1 * nova_lags)
                continue
            actions.append(Action("attach", "volume", ref, f"to {target_name} ({target})",
                                  {"id": volume_id, "server_id": target}))
            known = wait_attached(cloud, volume_id, ref, target, timeout)
            continue
        raise CloudError(f"volume {ref} ({volume_id}) is {volume.status!r}; ivc does not know "
                         "how to move it from there")
    raise CloudError(f"volume {ref} ({volume_id}) did not settle on {target_name}; run again")
