"""Find what the declarations name in the cloud, listing each kind at most once per run.

Each ``list_*`` function makes ONE listing request (its result is cached on the Cloud, so that a
deploy that needs it in several steps pays once) and filters client-side. ``pick`` resolves a
declared name or id among listed items and raises a ConfigError, naming the spec entry, when
nothing or more than one thing matches: these run before any change is made.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ivc_tasks.cloud import Cloud, CloudCallError
from ivc_tasks.errors import ConfigError
from ivc_tasks.hints import did_you_mean, listed

T = TypeVar("T")
UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


def _cached(cloud: Cloud, key: str, fetch: Callable[[], list[Any]], refresh: bool) -> list[Any]:
    if refresh or key not in cloud.listings:
        return cloud.listings.put(key, fetch())
    return cloud.listings.get(key)


def forget(cloud: Cloud, *keys: str) -> None:
    """Drop cached listings (after a change that makes them stale)."""
    cloud.listings.forget(*keys)


def prefetch(cloud: Cloud, *listings: Callable[[Cloud], Any]) -> None:
    """Run independent listings side by side (after authenticating once), filling the cache.

    Each listing still makes one request; they just do not wait for each other.

    :raises CloudCallError: a listing failed.
    """
    if len(listings) < 2:
        for listing in listings:
            listing(cloud)
        return
    cloud.call("authenticate", lambda: cloud.conn.current_project_id)
    with ThreadPoolExecutor(max_workers=len(listings)) as pool:
        for future in [pool.submit(listing, cloud) for listing in listings]:
            future.result()


def get_or_none(cloud: Cloud, operation: str, fetch: Callable[[], T]) -> T | None:
    """``fetch()`` through ``Cloud.call``; None when the cloud answers 404.

    :raises CloudCallError: any other failure.
    """
    try:
        return cloud.call(operation, fetch)
    except CloudCallError as exc:
        if exc.status == 404:
            return None
        raise


def delete_or_gone(cloud: Cloud, operation: str, delete: Callable[[], Any], **call: Any
                   ) -> bool:
    """``delete()`` through ``Cloud.call`` (``call``: its other arguments); a 404 means it is
    gone already.

    :returns: True when it was there to delete, False when it was gone.
    :raises CloudCallError: any other failure.
    """
    try:
        cloud.call(operation, delete, **call)
    except CloudCallError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def list_security_groups(cloud: Cloud, *, refresh: bool = False) -> list[Any]:
    """Return ALL security groups of the project, each with its rules (one request)."""
    conn = cloud.conn
    return _cached(cloud, "security_groups", lambda: cloud.call(
        "list security groups",
        lambda: list(conn.network.security_groups(project_id=conn.current_project_id))), refresh)


def list_servers(cloud: Cloud, *, refresh: bool = False) -> list[Any]:
    """Return the project's servers with details, metadata included (one request)."""
    return _cached(cloud, "servers", lambda: cloud.call(
        "list servers", lambda: list(cloud.conn.compute.servers(details=True))), refresh)


def list_networks(cloud: Cloud) -> list[Any]:
    """Return every network the project can see: its own, shared and external (one request)."""
    return _cached(cloud, "networks", lambda: cloud.call(
        "list networks", lambda: list(cloud.conn.network.networks())), False)


def list_flavors(cloud: Cloud) -> list[Any]:
    """Return the flavors with details (one request)."""
    return _cached(cloud, "flavors", lambda: cloud.call(
        "list flavors", lambda: list(cloud.conn.compute.flavors(details=True))), False)


def list_keypairs(cloud: Cloud, *, refresh: bool = False) -> list[Any]:
    """Return the user's keypairs (one request)."""
    return _cached(cloud, "keypairs", lambda: cloud.call(
        "list keypairs", lambda: list(cloud.conn.compute.keypairs())), refresh)


def list_volumes(cloud: Cloud, *, refresh: bool = False) -> list[Any]:
    """Return the project's volumes with details, attachments included (one request)."""
    return _cached(cloud, "volumes", lambda: cloud.call(
        "list volumes", lambda: list(cloud.conn.block_storage.volumes(details=True))), refresh)


def list_floating_ips(cloud: Cloud, *, refresh: bool = False) -> list[Any]:
    """Return the project's floating IPs (one request)."""
    conn = cloud.conn
    return _cached(cloud, "floating_ips", lambda: cloud.call(
        "list floating IPs",
        lambda: list(conn.network.ips(project_id=conn.current_project_id))), refresh)


def list_ports(cloud: Cloud) -> list[Any]:
    """Return every port of the project (one request; cached for the run)."""
    conn = cloud.conn
    return _cached(cloud, "ports", lambda: cloud.call(
        "list ports", lambda: list(conn.network.ports(project_id=conn.current_project_id))), False)


def server_ports(cloud: Cloud, server_id: str) -> list[Any]:
    """Return the server's ports as Neutron has them now (one request, never cached)."""
    conn = cloud.conn
    return cloud.call(f"list ports of server {server_id}",
                      lambda: list(conn.network.ports(device_id=server_id)))


def list_images(cloud: Cloud) -> list[Any]:
    """Every image the project can see (one listing, paged by the SDK if long)."""
    return _cached(cloud, "images", lambda: cloud.call(
        "list images", lambda: list(cloud.conn.image.images())), False)


def find_images(cloud: Cloud, ref: str) -> list[Any]:
    """Return the images whose id or name is ``ref`` (one request; cached per ref)."""
    key = f"images:{ref}"
    if key in cloud.listings:
        return cloud.listings.get(key)
    conn = cloud.conn
    if UUID.match(ref):
        image = get_or_none(cloud, f"get image {ref}", lambda: conn.image.get_image(ref))
        if image is not None:
            return cloud.listings.put(key, [image])
    return cloud.listings.put(
        key, cloud.call(f"find image {ref}", lambda: list(conn.image.images(name=ref))))


def pick(items: Iterable[Any], ref: str, *, kind: str, spec_path: Path | str, entry: str,
         fix: str | None = None) -> Any:
    """Return the one item whose id or name is ``ref``.

    An exact id wins over names; otherwise exactly one item may bear the name.

    :param kind: what is looked for ("image", "flavor", "network"...), for the message.
    :param entry: the spec entry that names it, e.g. ``servers.web1.flavor``.
    :raises ConfigError: no such item (with close names as a hint), or the name is ambiguous.
    """
    items = list(items)
    named = matching(items, ref)
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        ids = ", ".join(sorted(str(i.id) for i in named))
        raise ConfigError(f"{spec_path}: {entry}: {len(named)} {kind}s are named {ref!r} "
                          f"(ids {ids}); use the id of the one you mean, or rename the others")
    names = sorted({str(i.name) for i in items if value_of(i, "name")})
    hint = did_you_mean(ref, names, n=3, otherwise=fix or (
        f"available: {listed(names)}" if names else f"create the {kind} first"))
    raise ConfigError(f"{spec_path}: {entry}: no {kind} named {ref!r} in the cloud; {hint}")


def value_of(item: Any, key: str) -> Any:
    """``item[key]`` of a dict, ``item.key`` of a resource; None when absent."""
    return item.get(key) if isinstance(item, Mapping) else getattr(item, key, None)


def matching(items: Iterable[Any], ref: str) -> list[Any]:
    """The items whose id is ``ref`` (an exact id wins), else those named ``ref`` (no error)."""
    items = list(items)
    by_id = [i for i in items if value_of(i, "id") == ref]
    return by_id[:1] or [i for i in items if value_of(i, "name") == ref]
