"""Kept ports: a server's port on a network whose address must survive a rotate (a server's
``keep_address``), and a server's addresses per network.

Nova deletes a port it made itself when the port is detached or its server deleted; a port
given at boot (``networks=[{"port": id}]``) is only unbound. So ivc makes a kept port itself,
before the server: name ``ivc-<env>-<server>-<network>``, description ``ivc:<env>:<server>``
(the floating IPs' marker), the server's security groups (Nova applies none to a port it is
given). A rotate detaches it from the stopped old server (``DELETE .../os-interface/<port>``)
and boots the new server with it: same IP, same MAC.

While a move is under way the port carries Neutron tags (the new server does not exist yet
when the port leaves the old one), and the new server's create request records the port too:
both are rotation markers, defined, read and written in ``resources/markers.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import ConfigError
from ivc_tasks.resources.floating_ips import floating_marker, is_public
from ivc_tasks.result import Action
from ivc_tasks.spec import NEUTRON_NAME_MAX, Server, Spec

log = logging.getLogger("ivc")



def kept_port_name(env: str, name: str, network_name: str) -> str:
    """The name ivc gives the kept port of server ``name`` on a network."""
    return f"ivc-{env}-{name}-{network_name}"[:NEUTRON_NAME_MAX]


def kept_networks(declared: Server, networks: Sequence[Any]) -> list[Any]:
    """The resolved networks (``networks`` in declared order) whose address is kept."""
    return [net for ref, net in zip(declared.networks, networks, strict=False)
            if ref in declared.keep_address]


def get_port(cloud: Cloud, port_id: str) -> Any | None:
    """The port as Neutron shows it now; None when it is gone."""
    from ivc_tasks.resources.resolve import get_or_none
    conn = cloud.conn
    return get_or_none(cloud, f"get port {port_id}", lambda: conn.network.get_port(port_id))


def find_kept_port(cloud: Cloud, name: str, network: Any) -> Any | None:
    """Server ``name``'s kept port on ``network`` (by its name and ivc's description)."""
    conn = cloud.conn
    wanted = kept_port_name(cloud.env, name, network.name)
    ports = cloud.call(f"find port {wanted}", lambda: list(conn.network.ports(
        network_id=network.id, name=wanted)))
    ours = [p for p in ports if p.description == floating_marker(cloud.env, name)]
    ours.sort(key=lambda p: (not p.device_id, p.created_at or ""))  # one in use first
    return ours[0] if ours else None


def plan_kept_ports(cloud: Cloud, spec: Spec, declared: Server, networks: Sequence[Any], *,
                    own: Iterable[str] = ()) -> dict[str, Any | None]:
    """``{network id: kept port}`` for the server's ``keep_address`` networks (None: ivc makes
    it before the server).

    :param own: ids of this name's servers: a kept port may be on one of them (rotate).
    :raises ConfigError: the kept port is on another server.
    """
    own = set(own)
    out: dict[str, Any | None] = {}
    for net in kept_networks(declared, networks):
        port = find_kept_port(cloud, declared.name, net)
        if port is not None and port.device_id and port.device_id not in own:
            raise ConfigError(f"{spec.path}: servers.{declared.name}.keep_address: port "
                              f"{port.name} ({port.id}, {addresses_of_port(port)}) is attached "
                              f"to server {port.device_id}, not to {declared.name}; detach it "
                              "there first (openstack server remove port)")
        out[net.id] = port
    return out


def ensure_kept_ports(cloud: Cloud, name: str, ports: dict[str, Any | None],
                      networks: Sequence[Any], group_ids: Sequence[str]) -> list[Action]:
    """Make the kept ports that do not exist yet (``ports`` values None), in place.

    :raises CloudError: a create failed.
    """
    conn = cloud.conn
    actions = []
    for net in networks:
        if net.id not in ports or ports[net.id] is not None:
            continue
        wanted = kept_port_name(cloud.env, name, net.name)
        body: dict[str, Any] = {"network_id": net.id, "name": wanted,
                                "description": floating_marker(cloud.env, name)}
        if group_ids:
            body["security_group_ids"] = list(group_ids)
        port = cloud.call(f"create port {wanted}", lambda body=body: conn.network.create_port(
            **body), done_already=lambda net=net: find_kept_port(cloud, name, net))
        ports[net.id] = port
        log.info("created port %s on %s for %s: %s", port.id, net.name, name,
                 addresses_of_port(port))
        actions.append(Action("create", "port", wanted, f"on {net.name}, address "
                              f"{addresses_of_port(port)} (kept across rotations)",
                              {"id": port.id, "network": net.name,
                               "addresses": port_ips(port)}))
    return actions


# -- addresses ------------------------------------------------------------------------------
def port_ips(port: Any) -> list[str]:
    return [ip["ip_address"] for ip in (getattr(port, "fixed_ips", None) or [])
            if ip.get("ip_address")]


def addresses_of_port(port: Any) -> str:
    return ", ".join(port_ips(port)) or "no address"


def public_addresses(ports: Iterable[Any], networks: Iterable[Any]) -> dict[str, list[str]]:
    """``{network name: [ip, ...]}`` of the ports on the public networks among ``networks``."""
    public = {n.id: n.name for n in networks if is_public(n)}
    out: dict[str, list[str]] = {}
    for port in {p.id: p for p in ports}.values():  # each port once
        if port.network_id in public:
            out.setdefault(public[port.network_id], []).extend(port_ips(port))
    return out


def address_changes(before: Mapping[str, list[str]], after: Mapping[str, list[str]],
                    kept: Iterable[str] = ()) -> list[dict[str, Any]]:
    """One entry per public network: ``network``, ``old``, ``new``, ``kept`` (bool)."""
    kept = set(kept)
    return [{"network": net, "old": sorted(before.get(net, [])), "new": sorted(after.get(net, [])),
             "kept": net in kept and sorted(before.get(net, [])) == sorted(after.get(net, []))}
            for net in sorted(set(before) | set(after))]


# -- moving a port between servers ------------------------------------------------------------
def _wait_port(cloud: Cloud, port_id: str, what: str, done: Callable[[Any], bool]) -> Any:
    """Poll the port (eagerly) until ``done(port)``; the port as it is then.

    :raises CloudError: the port is gone, or not done within the volume timeout.
    """
    return cloud.poll(what, lambda: get_port(cloud, port_id),
                      lambda p: "gone" if p is None else f"on {p.device_id or 'no server'}",
                      done=lambda p: p is not None and done(p),
                      failed=lambda p: f"port {port_id} is gone" if p is None else None,
                      timeout=cloud.settings.volume_timeout, eager=True)


def detach_port(cloud: Cloud, server_id: str, port: Any, what: str) -> bool:
    """Detach ``port`` from server ``server_id`` and wait until Neutron shows it free.

    :returns: False when it was not on that server (nothing sent).
    """
    conn = cloud.conn
    fresh = get_port(cloud, port.id) or port
    if fresh.device_id != server_id:
        return False
    log.info("%s: detaching port %s (%s) from server %s", what, port.id,
             addresses_of_port(fresh), server_id)
    cloud.call(f"{what}: detach port {port.id}",
               lambda: conn.compute.delete_server_interface(port.id, server=server_id,
                                                            ignore_missing=True))
    _wait_port(cloud, port.id, f"{what}: port {port.id} detached",
               lambda p: p.device_id != server_id)
    return True


def attach_port(cloud: Cloud, server_id: str, port: Any, what: str) -> bool:
    """Attach ``port`` to server ``server_id`` and wait until Neutron shows it there.

    :returns: False when it was there already (nothing sent).
    """
    conn = cloud.conn
    fresh = get_port(cloud, port.id) or port
    if fresh.device_id == server_id:
        return False
    log.info("%s: attaching port %s (%s) to server %s", what, port.id, addresses_of_port(fresh),
             server_id)
    cloud.call(f"{what}: attach port {port.id}",
               lambda: conn.compute.create_server_interface(server_id, port_id=port.id))
    _wait_port(cloud, port.id, f"{what}: port {port.id} attached",
               lambda p: p.device_id == server_id)
    return True
