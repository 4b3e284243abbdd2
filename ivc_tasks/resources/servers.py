"""ivc's servers: the metadata tags that mark them, finding them, and printing them.

ivc finds its servers by metadata, not by name (Nova names are not unique): every server it
creates carries ``ivc_managed=1``, ``ivc_env``, ``ivc_name``, ``ivc_run`` (the run that created
it), ``ivc_gen`` (1; ``rotate`` increments it), ``ivc_userdata`` (a short sha256 of the
user_data), ``ivc_vol:<volume>`` (the volume a declared name resolved to) and ``ivc_spec``
(which declarations file made it: ``spec_identity``); a rotation under way adds its markers
(``resources/markers.py``). One request lists the project's servers with details; the filtering is
local. A server of a declared name without ``ivc_managed`` is one ivc did not make
(``unmanaged_twins``): ivc never boots a twin beside it (``rotate --adopt`` takes it over).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import ConfigError, clip, clip_repr
from ivc_tasks.hints import did_you_mean, listed
from ivc_tasks.resources.resolve import forget, list_servers
from ivc_tasks.spec import Server, Spec
from ivc_tasks.userdata import userdata_digest

META_MANAGED = "ivc_managed"
META_ENV = "ivc_env"
META_NAME = "ivc_name"
META_RUN = "ivc_run"
META_GEN = "ivc_gen"
META_USERDATA = "ivc_userdata"
META_SPEC = "ivc_spec"
VOLUME_KEY_PREFIX = "ivc_vol:"
USERDATA_SHORT = 16  # hex digits of the sha256 kept in ivc_userdata
_METADATA_KEY = re.compile(r"^[A-Za-z0-9_:. -]{1,200}$")  # what Nova accepts, with room to spare
# A server is gone when Nova answers 404 for it OR shows it in one of these statuses: Nova sets
# DELETED once it has released the server's ports and volumes, and lists it so for a moment
# before the row disappears; SOFT_DELETED (a cloud with reclaim_instance_interval) stays until
# reclaimed. Every look ivc takes (a GET, a listing, the shared poller) and the tests count both
# as gone, so a wait for "gone" ends at DELETED and no listing shows such a server afterwards.
GONE_STATUSES = ("DELETED", "SOFT_DELETED")
# a server in one of these is on its way somewhere: wait, do not act
WAITING_STATES = ("BUILD", "REBUILD", "REBOOT", "HARD_REBOOT", "MIGRATING", "RESIZE")


def is_gone(server: Any | None) -> bool:
    """True for a server that no longer counts: None (404), DELETED or SOFT_DELETED."""
    return server is None or str(server.status).upper() in GONE_STATUSES


def present(servers: list[Any]) -> list[Any]:
    """The servers of a listing that are not gone (see ``GONE_STATUSES``)."""
    return [s for s in servers if not is_gone(s)]


# -- the tags ------------------------------------------------------------------------------
def generation(server: Any) -> int:
    """Return a server's ``ivc_gen`` (0 when absent or not a number)."""
    try:
        return int((getattr(server, "metadata", None) or {}).get(META_GEN, 0))
    except (TypeError, ValueError):
        return 0


def is_managed(server: Any, env: str, name: str | None = None) -> bool:
    """True for a server ivc made in environment ``env`` (for declared server ``name``, if
    given)."""
    meta = getattr(server, "metadata", None) or {}
    return (meta.get(META_MANAGED) == "1" and meta.get(META_ENV) == env
            and (name is None or meta.get(META_NAME) == name))


def volume_key(ref: str) -> str:
    """Return the metadata key that records which volume the declared ``ref`` resolved to."""
    if _METADATA_KEY.match(ref):
        return VOLUME_KEY_PREFIX + ref
    return VOLUME_KEY_PREFIX + "sha256." + hashlib.sha256(ref.encode()).hexdigest()[:16]


def spec_identity(spec: Spec) -> str:
    """Which declarations a server was made from (``ivc_spec``): the declarations file's path
    below the nearest ``env/`` folder (``local.toml``, ``teams/a.toml``), else its file name, so
    that the same file in another checkout (CI) is the same declarations."""
    parts = Path(spec.path).absolute().parts
    below = [i for i, part in enumerate(parts[:-1]) if part == "env"]
    ident = "/".join(parts[below[-1] + 1:]) if below else parts[-1]
    if len(ident) > 200:  # a Nova metadata value holds 255 characters
        ident = "sha256." + hashlib.sha256(ident.encode()).hexdigest()[:16]
    return ident


def check_same_spec(spec: Spec, name: str, servers: list[Any]) -> None:
    """Refuse servers made from other declarations (their ``ivc_spec``); a server made before
    ivc recorded it (no ``ivc_spec``) counts as made from these.

    :raises ConfigError: naming the server, the file that made it and the way out.
    """
    mine = spec_identity(spec)
    for server in servers:
        other = (getattr(server, "metadata", None) or {}).get(META_SPEC)
        if other and other != mine:
            raise ConfigError(
                f"{spec.path}: server {name} ({server.id}) was made from other declarations "
                f"({other!r}), not from these ({mine!r}); ivc will not change or replace it "
                f"from this file: run with IVC_SPEC pointing at {other}, or give these "
                "declarations their own IVC_ENV (or another server name)")


def unmanaged_twins(cloud: Cloud, name: str) -> list[Any]:
    """Servers named ``name`` that ivc did not make (no ``ivc_managed`` tag), from the listing."""
    return [s for s in present(list_servers(cloud))
            if s.name == name and (s.metadata or {}).get(META_MANAGED) != "1"]


def twin_error(name: str, twins: list[Any]) -> ConfigError:
    """The refusal to boot a server beside one of the same name that ivc did not make."""
    ids = ", ".join(f"{s.id} ({s.status})" for s in twins)
    return ConfigError(
        f"server {name}: a server of that name that ivc did not make exists: {ids}; ivc will "
        f"not boot a twin beside it: `invoke rotate --name {name} --adopt {twins[0].id}` "
        "replaces it by a managed server (its declared volumes and floating IP move over), or "
        f"delete or rename it (openstack server delete {twins[0].id})")


def server_metadata(declared: Server, env: str, run_id: str, *, gen: int = 1,
                    volumes: Mapping[str, str] | None = None,
                    spec_id: str | None = None) -> dict[str, str]:
    """Return the metadata a new server gets: the declared one plus ivc's tags."""
    return {
        **declared.metadata,
        META_MANAGED: "1",
        META_ENV: env,
        META_NAME: declared.name,
        META_RUN: run_id,
        META_GEN: str(gen),
        META_USERDATA: userdata_digest(declared),
        **{volume_key(ref): vid for ref, vid in (volumes or {}).items()},
        **({META_SPEC: spec_id} if spec_id else {}),
    }


# -- the two writes: create, metadata ---------------------------------------------------------
def create_server(cloud: Cloud, name: str, body: Mapping[str, Any], *,
                  made_meanwhile: Callable[[], Any | None] | None = None) -> Any:
    """Send one create request (``body``: openstacksdk ``create_server`` arguments, tagged by
    ``server_metadata`` with this run's id). A create is never blindly re-sent: after a lost
    response, the servers are listed again and the one this run made (``made_by_run``) is taken.

    :raises CloudCallError: the create failed.
    """
    conn = cloud.conn
    server = cloud.call(f"create server {name}", lambda: conn.compute.create_server(**body),
                        done_already=made_meanwhile or (lambda: made_by_run(cloud, name)),
                        redact=body.get("user_data"))
    forget(cloud, "servers")
    return server


def set_metadata(cloud: Cloud, server: Any, what: str, metadata: Mapping[str, str], *,
                 replace: bool = False) -> None:
    """The one server metadata write: merge ``metadata`` in (POST), or, ``replace``, make it
    the whole metadata (PUT). ``server`` is the server as fetched (``replace`` needs it)."""
    conn = cloud.conn
    if replace:
        cloud.call(what, lambda: server.set_metadata(conn.compute, metadata=dict(metadata),
                                                     replace=True))
    else:
        cloud.call(what, lambda: conn.compute.set_server_metadata(server.id, **metadata))


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


# -- finding them --------------------------------------------------------------------------
def managed_servers(cloud: Cloud, name: str | None = None, *, refresh: bool = False
                    ) -> list[Any]:
    """ivc's servers in this env (for ``name``, if given), newest generation first (one
    listing)."""
    found = [s for s in present(list_servers(cloud, refresh=refresh))
             if is_managed(s, cloud.env, name)]
    return sorted(found, key=lambda s: (generation(s), str(s.created_at or "")), reverse=True)


def made_by_run(cloud: Cloud, name: str) -> Any | None:
    """The server for ``name`` that this run created, if any (lists the servers again)."""
    for server in managed_servers(cloud, name, refresh=True):
        if (server.metadata or {}).get(META_RUN) == cloud.run_id:
            return server
    return None


def declared_server(spec: Spec, name: str | None) -> Server:
    """Return the declared server ``name``.

    :raises ConfigError: no name given, or not declared.
    """
    if not name:
        raise ConfigError(f"--name is required: one of {listed(spec.servers, none='none declared')}")
    if name not in spec.servers:
        hint = did_you_mean(name, spec.servers, otherwise=f"declared: {listed(spec.servers)}")
        raise ConfigError(f"{spec.path}: --name {clip_repr(name)}: not a declared server "
                          f"(servers.{clip(name)}); {hint}")
    return spec.servers[name]


# -- printing them -------------------------------------------------------------------------
def server_label(cloud: Cloud, server_id: str) -> str:
    """``'name' (id)`` of a server of the project, from the listing already made."""
    for server in list_servers(cloud):
        if server.id == server_id:
            return f"{server.name!r} ({server_id})"
    return server_id


def server_state(server: Any | None) -> str:
    """A server's state for progress lines: ``BUILD (spawning)``, ``ACTIVE``, or ``gone``."""
    if server is None:
        return "gone"
    return str(server.status) + (f" ({server.task_state})" if server.task_state else "")


def fault_message(server: Any) -> str:
    """The message of a server's fault (why it is in ERROR)."""
    fault = getattr(server, "fault", None) or {}
    return str(fault.get("message") or "no fault message") if isinstance(fault, Mapping) \
        else str(fault)


def error_hint(name: str) -> str:
    """What to do about a server in ERROR."""
    return f"`invoke rotate --name {name}` will replace it"


def addresses(server: Any) -> dict[str, list[str]]:
    """``{network name: [address, ...]}`` as Nova shows them."""
    return {net: [a.get("addr") for a in items]
            for net, items in (server.addresses or {}).items()}


def server_info(server: Any) -> dict[str, Any]:
    """Printable facts about a server (no user_data)."""
    meta = server.metadata or {}
    return {"id": server.id, "status": server.status, "addresses": addresses(server),
            "generation": generation(server), "userdata_sha256": meta.get(META_USERDATA)}
