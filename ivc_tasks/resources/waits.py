"""Get a server or volume or learn that it is gone, wait for a state, delete and wait: once,
for every step (``resolve.get_or_none`` and ``resolve.delete_or_gone`` for any other thing).

Every wait runs on ``Cloud.poll``, or on the run's shared poller when several waits run side by
side (``resources.poller``), on one schedule (``cloud.next_interval``): eager inside an outage,
lazy where a wait costs none. ``wait_server`` is lazy while the server is in BUILD (a boot:
rotate's new server boots before the old one stops) and eager otherwise (a stop, a start);
``delete_server_and_wait`` is lazy (rotate's old server is deleted after the address moved).
A 404 on a GET or a DELETE means "gone", never an error.
"""

from __future__ import annotations

from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.resources.poller import SERVERS, poll
from ivc_tasks.resources.resolve import delete_or_gone, forget, get_or_none
from ivc_tasks.resources.servers import fault_message, is_gone, server_state


def get_server(cloud: Cloud, server_id: str) -> Any | None:
    """The server, fresh; None when it is gone (404, DELETED or SOFT_DELETED: ``is_gone``)."""
    conn = cloud.conn
    server = get_or_none(cloud, f"get server {server_id}",
                         lambda: conn.compute.get_server(server_id))
    return None if is_gone(server) else server


def get_volume(cloud: Cloud, volume_id: str) -> Any | None:
    """The volume, fresh; None when it is gone (404)."""
    conn = cloud.conn
    return get_or_none(cloud, f"get volume {volume_id}",
                       lambda: conn.block_storage.get_volume(volume_id))


def wait_server(cloud: Cloud, server_id: str, what: str, status: str, timeout: float, *,
                eager: bool | None = None, error_hint: str | None = None) -> Any:
    """Wait until the server is ``status`` with no task under way.

    :param eager: None (default): lazy while the server is in BUILD, else eager; True or
        False: always eager or always lazy.
    :param what: the subject of the progress lines ("new server web1").
    :param error_hint: what to do when it goes to ERROR, added to the message.
    :raises CloudError: it went to ERROR (with its fault), is gone, or timed out.
    """
    def failed(server: Any | None) -> str | None:
        if server is None:
            return f"is gone ({server_id})"
        if server.status == "ERROR" and status != "ERROR":
            return (f"went to ERROR: {fault_message(server)} (server {server_id})"
                    + (f"; {error_hint}" if error_hint else ""))
        return None

    return poll(cloud, SERVERS, server_id, what, lambda: get_server(cloud, server_id),
                server_state,
                done=lambda s: s is not None and s.status == status and not s.task_state,
                failed=failed, timeout=timeout, eager=booting_is_lazy if eager is None else eager)


def booting_is_lazy(server: Any | None) -> bool:
    """The pace of a server wait: lazy (False) while it boots, eager otherwise."""
    return server is None or str(server.status).upper() != "BUILD"


def wait_power_settled(cloud: Cloud, server: Any, what: str, timeout: float) -> Any:
    """Wait out a stop or start under way (a crashed run may have left one); the server."""
    task = server.task_state or ""
    if task == "powering-off":
        return wait_server(cloud, server.id, what, "SHUTOFF", timeout)
    if task == "powering-on":
        return wait_server(cloud, server.id, what, "ACTIVE", timeout)
    return server


def power_done_or_under_way(cloud: Cloud, server_id: str, status: str) -> bool | None:
    """After a lost stop/start response: is the server there, or on its way (sending it again
    would get Nova's 409)? True, or None to send it again."""
    server = get_server(cloud, server_id)
    task = "powering-off" if status == "SHUTOFF" else "powering-on"
    if server is None or server.status == status or server.task_state == task:
        return True
    return None


def delete_server_and_wait(cloud: Cloud, server_id: str, what: str, timeout: float) -> bool:
    """Delete a server (gone already counts) and wait until it is gone.

    :returns: True when the server was there to delete, False when it was gone already.
    """
    conn = cloud.conn
    there = delete_or_gone(cloud, f"delete {what}",
                           lambda: conn.compute.delete_server(server_id, ignore_missing=False))
    if there:
        poll(cloud, SERVERS, server_id, what, lambda: get_server(cloud, server_id), server_state,
             done=lambda s: s is None, failed=lambda s: None, timeout=timeout, eager=False)
    forget(cloud, "servers")
    return there
