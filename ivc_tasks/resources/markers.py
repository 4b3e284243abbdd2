"""Every crash-resume marker of a rotation: defined, read and written here, and only here.

A rotation keeps its state in the cloud (not in a local file), so a rerun after any crash reads
it back:

* the NEW server's metadata, written by its create request (no window where a server exists
  unmarked): ``ivc_rotation`` (the rotation id), ``ivc_role=new``, ``ivc_replaces=<old id>``,
  ``ivc_was=<the old server's status before the rotation>``, one ``ivc_fip:<floating ip
  id>=<port id> <network id>`` per floating IP on the old server's ports, one
  ``ivc_port:<port id>=<network id>`` per kept port (``keep_address``) it was made with; a
  rollback that starts adds ``ivc_rollback=1``; ``finish`` clears them all. The old server is
  never marked (Nova refuses to change the metadata of a server in ERROR).
* a kept port's Neutron tags while it moves (the new server does not exist yet to hold a
  marker): ``ivc-rotation:<rotation id>``, ``ivc-from:<old server id>``, ``ivc-was:<status>``.

``status`` reads them too (so they live among the resources, not in ``steps/rotate``). The one
server metadata PUT is ``servers.set_metadata``; the one port tag PUT is ``set_port_move``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.resources.servers import set_metadata
from ivc_tasks.resources.waits import get_server

META_ROTATION = "ivc_rotation"
META_ROLE = "ivc_role"
META_REPLACES = "ivc_replaces"
META_WAS = "ivc_was"
META_ROLLBACK = "ivc_rollback"
FIP_KEY_PREFIX = "ivc_fip:"    # ivc_fip:<floating ip id> = <port id> <network id>
PORT_KEY_PREFIX = "ivc_port:"  # ivc_port:<kept port id> = <network id>
MARKER_KEYS = (META_ROTATION, META_ROLE, META_REPLACES, META_WAS, META_ROLLBACK)
TAG_ROTATION, TAG_FROM, TAG_WAS = "ivc-rotation:", "ivc-from:", "ivc-was:"
# new-server states in which Nova refuses a metadata change (409): rollback deletes it unmarked
UNMARKABLE = ("ERROR", "BUILD")


def is_marker(key: str) -> bool:
    """Return True for the metadata keys that record a rotation under way."""
    return key in MARKER_KEYS or key.startswith((FIP_KEY_PREFIX, PORT_KEY_PREFIX))


def metadata_of(server: Any | None) -> dict[str, str]:
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


@dataclass(frozen=True)
class Markers:
    """A server's rotation markers, typed (all empty: no rotation under way)."""

    rotation: str | None = None
    role: str | None = None
    replaces: str | None = None
    was: str | None = None
    rollback: bool = False
    fips: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # fip -> (port, network)
    ports: Mapping[str, str] = field(default_factory=dict)  # kept port id -> network id

    @classmethod
    def of(cls, server: Any | None) -> Markers:
        meta = metadata_of(server)
        return cls(rotation=meta.get(META_ROTATION) or None, role=meta.get(META_ROLE) or None,
                   replaces=meta.get(META_REPLACES) or None, was=meta.get(META_WAS) or None,
                   rollback=meta.get(META_ROLLBACK) == "1", fips=fip_markers(meta),
                   ports={k[len(PORT_KEY_PREFIX):]: v for k, v in meta.items()
                          if k.startswith(PORT_KEY_PREFIX)})

    def to_metadata(self) -> dict[str, str]:
        """The metadata keys that record these markers."""
        out = {META_ROTATION: self.rotation, META_ROLE: self.role,
               META_REPLACES: self.replaces, META_WAS: self.was,
               META_ROLLBACK: "1" if self.rollback else None}
        return {**{k: v for k, v in out.items() if v},
                **{FIP_KEY_PREFIX + fid: f"{port} {net}" for fid, (port, net) in self.fips.items()},
                **{PORT_KEY_PREFIX + pid: net for pid, net in self.ports.items()}}


def new_server_markers(rotation: str, old_id: str, was: str | None,
                       fips: Mapping[str, tuple[str, str]],
                       ports: Mapping[str, str] | None = None) -> dict[str, str]:
    """The markers the new server is created with (they go into its create request)."""
    return Markers(rotation=rotation, role="new", replaces=old_id, was=was, fips=dict(fips),
                   ports=dict(ports or {})).to_metadata()


def mark_rollback(cloud: Cloud, server: Any, what: str) -> bool:
    """Add ``ivc_rollback=1`` to a new server (so a rerun rolls back too); False when it is
    marked already or Nova would refuse (ERROR, BUILD: it is deleted unmarked)."""
    if server is None or server.status in UNMARKABLE or Markers.of(server).rollback:
        return False
    set_metadata(cloud, server, f"mark {what} for rollback", {META_ROLLBACK: "1"})
    return True


def clear_markers(cloud: Cloud, server_id: str, what: str, *, known: Any = None) -> bool:
    """Remove the rotation markers from a server's metadata (one PUT, if there are any).

    :param known: the server as fetched since the last metadata change made under the lock
        (saves a GET); else it is fetched.
    """
    server = known if known is not None else get_server(cloud, server_id)
    if server is None:
        return False
    meta = metadata_of(server)
    kept = {k: v for k, v in meta.items() if not is_marker(k)}
    if kept == meta:
        return False
    set_metadata(cloud, server, f"clear the rotation markers of {what}", kept, replace=True)
    return True


# -- a kept port's move under way (Neutron tags) ------------------------------------------------
@dataclass(frozen=True)
class PortMove:
    """A kept port's move under way, as its tags record it."""

    rotation: str
    from_id: str | None
    was: str | None


def port_move(port: Any | None) -> PortMove | None:
    """The move a port's tags record (None: none under way)."""
    found = {}
    for tag in (getattr(port, "tags", None) or []) if port is not None else []:
        for prefix in (TAG_ROTATION, TAG_FROM, TAG_WAS):
            if tag.startswith(prefix):
                found[prefix] = tag[len(prefix):]
    if not found.get(TAG_ROTATION):
        return None
    return PortMove(found[TAG_ROTATION], found.get(TAG_FROM) or None,
                    found.get(TAG_WAS) if found.get(TAG_WAS) not in ("", "None") else None)


def set_port_move(cloud: Cloud, port: Any, move: PortMove | None) -> None:
    """Record (or, None, clear) a move under way in the port's tags (one request, if any
    change)."""
    conn = cloud.conn
    others = [t for t in (port.tags or []) if not t.startswith((TAG_ROTATION, TAG_FROM, TAG_WAS))]
    mine = [f"{TAG_ROTATION}{move.rotation}", f"{TAG_FROM}{move.from_id}",
            f"{TAG_WAS}{move.was}"] if move is not None else []
    if sorted(others + mine) == sorted(port.tags or []):
        return
    cloud.call(f"tag port {port.id}", lambda: conn.network.set_tags(port, others + mine))
    port.tags = others + mine
