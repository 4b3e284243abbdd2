"""The rotation's state, kept in the new server's metadata (not in a local file).

The create request itself writes them, so there is no window where a server exists unmarked:
``ivc_rotation`` (the rotation id), ``ivc_role=new``, ``ivc_replaces=<old id>``, ``ivc_was=<the
old server's status>``, one ``ivc_fip:<floating ip id>=<port id> <network id>`` per floating IP
on the old server's ports, one ``ivc_port:<port id>=<network id>`` per kept port it was made
with (``keep_address``; while that port moves, before the new server exists, the port's own
tags record the move: ``resources/ports.py``); a rollback that starts adds ``ivc_rollback=1``. The old
server is never marked (Nova refuses to change the metadata of a server in ERROR). ``finish``
clears them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.resources.servers import (
    FIP_KEY_PREFIX, META_REPLACES, META_ROLE, META_ROLLBACK, META_ROTATION, META_WAS,
)
from ivc_tasks.resources.ports import PORT_KEY_PREFIX  # ivc_port:<kept port id> = <network id>
from ivc_tasks.resources.waits import get_server

MARKER_KEYS = (META_ROTATION, META_ROLE, META_REPLACES, META_WAS, META_ROLLBACK)
# new-server states in which Nova refuses a metadata change (409): rollback deletes it unmarked
UNMARKABLE = ("ERROR", "BUILD")


def is_marker(key: str) -> bool:
    """Return True for the metadata keys that record a rotation under way."""
    return key in MARKER_KEYS or key.startswith((FIP_KEY_PREFIX, PORT_KEY_PREFIX))


def markers_of(server: Any | None) -> dict[str, str]:
    """A server's metadata ({} for no server)."""
    return dict(getattr(server, "metadata", None) or {}) if server is not None else {}


def fip_markers(metadata: Mapping[str, str] | None) -> dict[str, tuple[str, str]]:
    """``{floating ip id: (port id, network id)}`` from a server's ``ivc_fip:`` keys."""
    out = {}
    for key, value in (metadata or {}).items():
        if key.startswith(FIP_KEY_PREFIX):
            port, _, network = str(value).partition(" ")
            out[key[len(FIP_KEY_PREFIX):]] = (port, network)
    return out


def new_server_markers(rotation: str, old: Any, fips: Mapping[str, tuple[str, str]]
                       ) -> dict[str, str]:
    """The markers the new server is created with."""
    return {META_ROTATION: rotation, META_ROLE: "new", META_REPLACES: old.id,
            META_WAS: old.status,
            **{FIP_KEY_PREFIX + fid: f"{port} {net}" for fid, (port, net) in fips.items()}}


def clear_markers(cloud: Cloud, server_id: str, what: str, *, known: Any = None) -> bool:
    """Remove the rotation markers from a server's metadata (one PUT, if there are any).

    :param known: the server as fetched since the last metadata change made under the lock
        (saves a GET); else it is fetched.
    """
    conn = cloud.conn
    server = known if known is not None else get_server(cloud, server_id)
    if server is None:
        return False
    meta = markers_of(server)
    kept = {k: v for k, v in meta.items() if not is_marker(k)}
    if kept == meta:
        return False
    cloud.call(f"clear the rotation markers of {what}",
               lambda: server.set_metadata(conn.compute, metadata=kept, replace=True))
    return True
