"""Floating IPs: a server's ports, which port takes the floating IP, giving one, moving one,
releasing one. Neutron is asked, never Nova's address cache (it lags behind a change).

A floating IP that ivc allocated for a server carries the description ``ivc:<env>:<name>``
(``floating_marker``): ivc may reuse or release it. Any other floating IP is only ever moved or
disassociated, never deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import CloudError, ConfigError
from ivc_tasks.resources.resolve import (
    forget,
    list_floating_ips,
    list_networks,
    pick,
    server_ports,
)
from ivc_tasks.resources.waits import delete_or_gone
from ivc_tasks.result import Action
from ivc_tasks.spec import Server, Spec

log = logging.getLogger("ivc")


def floating_marker(env: str, name: str) -> str:
    """The description that marks a floating IP as ivc's, for server ``name``."""
    return f"ivc:{env}:{name}"


def server_floating_ip(cloud: Cloud, server: Any) -> tuple[list[Any], Any | None]:
    """The server's ports and the floating IP on one of them, if any (two requests)."""
    ports = server_ports(cloud, server.id)
    port_ids = {p.id for p in ports}
    fips = list_floating_ips(cloud, refresh=True)
    return ports, next((f for f in fips if f.port_id and f.port_id in port_ids), None)


def pick_port(ports: Sequence[Any], network_id: str | None, order: Sequence[str] = ()
              ) -> Any | None:
    """The port on ``network_id``, else the first port on the networks of ``order``."""
    with_ip = [p for p in ports if p.fixed_ips]
    same = [p for p in with_ip if network_id and p.network_id == network_id]
    if same:
        return same[0]
    rank = {net: i for i, net in enumerate(order)}
    ranked = sorted((p for p in with_ip if p.network_id in rank), key=lambda p: rank[p.network_id])
    return ranked[0] if ranked else None


def associate(cloud: Cloud, fip: Any, port_id: str | None, operation: str) -> None:
    """Point the floating IP at ``port_id`` (None: disassociate it): one update.

    :param operation: what is done, for logs and errors ("move floating IP 1.2.3.4 to web1").
    """
    conn = cloud.conn
    cloud.call(operation, lambda: conn.network.update_ip(fip, port_id=port_id))


def release(cloud: Cloud, fip: Any) -> None:
    """Delete (release) a floating IP; gone already counts."""
    conn = cloud.conn
    delete_or_gone(cloud, f"release floating IP {fip.floating_ip_address}",
                   lambda: conn.network.delete_ip(fip, ignore_missing=False))


# -- public networks ----------------------------------------------------------------------
# Router interface ports (legacy, distributed, HA): a router's leg on an internal network.
ROUTER_INTERFACE_OWNERS = ("network:router_interface", "network:router_interface_distributed",
                           "network:ha_router_replicated_interface")


def is_public(network: Any) -> bool:
    """Whether a server on ``network`` has a public address there, as Neutron shows it to the
    project: the network is ``router:external`` (a floating IP pool, or a provider network
    servers attach to directly), or ``shared`` (a provider network offered to the project,
    such as OVHcloud's Ext-Net). Such a network needs no floating IP and no config drive
    (its metadata service is reachable); every other network is internal."""
    return bool(getattr(network, "is_router_external", False)
                or getattr(network, "is_shared", False))


def router_external_networks(cloud: Cloud, internal_ids: Sequence[str]) -> dict[str, str]:
    """``{internal network id: external network id}``: the external network that the router
    of each internal network reaches (its ``external_gateway_info.network_id``); networks with
    no router the project can see are left out (two requests)."""
    conn = cloud.conn
    ports = cloud.call("list router interfaces", lambda: list(conn.network.ports(
        device_owner=list(ROUTER_INTERFACE_OWNERS))))
    routers = {r.id: r for r in cloud.call("list routers", lambda: list(conn.network.routers()))}
    out: dict[str, str] = {}
    for port in ports:
        router = routers.get(port.device_id)
        gateway = (getattr(router, "external_gateway_info", None) or {}).get("network_id") \
            if router is not None else None
        if gateway and port.network_id in internal_ids:
            out.setdefault(port.network_id, gateway)
    return out


# -- a server's own floating IP (create-instance) ------------------------------------------
@dataclass
class FloatingPlan:
    """Where the server's floating IP comes from.

    ``network`` None: several external networks and none chosen (``problem`` says so); only
    moving an existing floating IP is possible then.
    """

    network: Any  # the external network
    internal_network_ids: list[str] = field(default_factory=list)  # the port's network first
    why: str = ""  # how the network was chosen
    problem: str = ""


def plan_floating(cloud: Cloud, spec: Spec, declared: Server, networks: list[Any], *,
                  required: bool = True) -> FloatingPlan:
    """Pick the external network for the server's floating IP.

    In order: ``IVC_FLOATING_NETWORK``; the only external network the project sees; the one the
    router of the server's first routed internal network reaches (a floating IP works only
    there). The floating IP goes on the port of that internal network.

    :param required: False when an existing floating IP will be moved (rotate): no network
        chosen is then not an error (``network`` None, ``problem`` set).
    :raises ConfigError: the server is only on public networks; no external network; several,
        none chosen, and ``required``.
    """
    entry = f"servers.{declared.name}.floating_ip"
    internal = [n.id for n in networks if not is_public(n)]
    if not internal:
        raise ConfigError(f"{spec.path}: {entry}: the server is only on public networks "
                          f"({', '.join(n.name for n in networks)}), where it has a public "
                          "address already; set floating_ip = false")
    external = [n for n in list_networks(cloud) if n.is_router_external]
    if cloud.settings.floating_network:
        chosen = pick(external, cloud.settings.floating_network, kind="external network",
                      spec_path=spec.path, entry=f"{entry} (IVC_FLOATING_NETWORK)")
        return FloatingPlan(network=chosen, internal_network_ids=internal,
                            why="IVC_FLOATING_NETWORK")
    if len(external) == 1:
        return FloatingPlan(network=external[0], internal_network_ids=internal,
                            why="the only external network")
    if not external:
        raise ConfigError(f"{spec.path}: {entry}: the cloud shows no external network to take "
                          "a floating IP from; set floating_ip = false or ask for one")
    by_id = {n.id: n for n in external}
    reached = router_external_networks(cloud, internal)
    for net_id in internal:
        if reached.get(net_id) in by_id:
            order = [net_id, *(i for i in internal if i != net_id)]
            name = next(n.name for n in networks if n.id == net_id)
            return FloatingPlan(network=by_id[reached[net_id]], internal_network_ids=order,
                                why=f"the external network the router of {name} reaches")
    names = ", ".join(sorted(n.name for n in external))
    problem = (f"{spec.path}: {entry}: several external networks ({names}) and no router of the "
               "server's networks reaches one of them; set IVC_FLOATING_NETWORK in the env file "
               "to the one to use")
    if required:
        raise ConfigError(problem)
    return FloatingPlan(network=None, internal_network_ids=internal, problem=problem)


def ensure_floating_ip(cloud: Cloud, name: str, fplan: FloatingPlan, server: Any
                       ) -> Action | None:
    """Give ``server`` a floating IP, reusing one when possible; None when it has one already.

    Reuse, in order: one already on a port of the server; an unattached one described for this
    server; else create one on the external network, associated to the port in the same request.

    :raises ConfigError: it needs a new one and no external network was chosen.
    :raises CloudError: the server has no port on an internal network; a cloud call failed.
    """
    conn = cloud.conn
    ports, attached = server_floating_ip(cloud, server)
    if attached is not None:
        log.info("server %s has floating IP %s already", name, attached.floating_ip_address)
        return None
    port = pick_port(ports, None, fplan.internal_network_ids)
    if port is None:
        raise CloudError(f"server {name} ({server.id}) has no port on an internal network to "
                         "put a floating IP on")
    if fplan.network is None:
        raise ConfigError(fplan.problem)
    marker = floating_marker(cloud.env, name)
    spare = [f for f in list_floating_ips(cloud) if not f.port_id and f.description == marker
             and f.floating_network_id == fplan.network.id]
    if spare:
        fip = spare[0]
        associate(cloud, fip, port.id, f"associate floating IP {fip.floating_ip_address} with {name}")
        log.info("associated floating IP %s with %s", fip.floating_ip_address, name)
        return Action("associate", "floating_ip", name, fip.floating_ip_address, {
            "id": fip.id, "address": fip.floating_ip_address, "port_id": port.id})

    def made_meanwhile() -> Any | None:
        return next((f for f in list_floating_ips(cloud, refresh=True) if f.port_id == port.id),
                    None)

    fip = cloud.call(f"create floating IP for {name}",
                     lambda: conn.network.create_ip(floating_network_id=fplan.network.id,
                                                    port_id=port.id, description=marker),
                     done_already=made_meanwhile)
    forget(cloud, "floating_ips")
    log.info("created floating IP %s for %s", fip.floating_ip_address, name)
    return Action("create", "floating_ip", name, fip.floating_ip_address, {
        "id": fip.id, "address": fip.floating_ip_address, "port_id": port.id,
        "network": fplan.network.name})


# -- moving floating IPs between servers (rotate) ------------------------------------------
def move_floating_ips(cloud: Cloud, fips: Mapping[str, tuple[str, str]], target: Any,
                      target_name: str, *, back_to_recorded_port: bool,
                      internal_order: Sequence[str] = ()) -> tuple[list[Action], set[str]]:
    """Put each floating IP of ``fips`` on a port of server ``target`` (one update each).

    :param fips: ``{fip id: (port id it had on the old server, network id)}``.
    :param back_to_recorded_port: rollback: prefer the recorded port itself, and list the
        floating IPs afresh (an update that failed on our side may have taken effect).
    :returns: the actions, and the ids of the floating IPs now on the target.
    """
    actions: list[Action] = []
    placed: set[str] = set()
    if not fips:
        return actions, placed
    ports = server_ports(cloud, target.id)
    listed = {f.id: f for f in list_floating_ips(cloud, refresh=back_to_recorded_port)}
    for fip_id, (port_id, network_id) in fips.items():
        fip = listed.get(fip_id)
        if fip is None:
            log.warning("floating IP %s is gone; nothing to move", fip_id)
            continue
        port = next((p for p in ports if p.id == port_id), None) if back_to_recorded_port \
            else None
        port = port or pick_port(ports, network_id, internal_order)
        if port is None:
            raise CloudError(f"server {target_name} ({target.id}) has no port on network "
                             f"{network_id} for floating IP {fip.floating_ip_address}")
        if fip.port_id == port.id:
            placed.add(fip_id)
            continue
        log.info("moving floating IP %s to %s (port %s)", fip.floating_ip_address, target_name,
                 port.id)
        associate(cloud, fip, port.id,
                  f"move floating IP {fip.floating_ip_address} to {target_name}")
        placed.add(fip_id)
        actions.append(Action("associate", "floating_ip", fip.floating_ip_address,
                              f"to {target_name} ({target.id})",
                              {"id": fip_id, "port_id": port.id, "from_port_id": fip.port_id}))
    forget(cloud, "floating_ips")
    return actions, placed
