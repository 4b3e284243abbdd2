"""Address ranges for the networks the seed makes: never one that overlaps a route of the host.

The local cloud's network agent routes every subnet from the host into the cloud's namespace
(netagent, docs/guest-network.md). The machine's own interface can sit in a documentation range
too (here eth0 is 192.0.2.2/24, gateway 192.0.2.1): a host route for 192.0.2.0/25 into the
cloud would cut the machine off its gateway. So the seed keeps a network's usual range only
where it is free on this machine and otherwise takes the first free block of the same size in
198.18.0.0/15 (RFC 2544's benchmarking range), checking ``ip route`` at seed time.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Callable
from typing import Any

from .layout import plugin_module

POOL = ipaddress.ip_network("198.18.0.0/15")
CLOUD_DEV = "ivc-host"        # the host's end of the veth into the cloud (its routes are ours)
ROUTER_OWNERS = ("network:router_gateway", "network:router_interface")


def host_routes() -> list[tuple[str, str]]:
    """The host's IPv4 routes (destination, device), as ``ip -j route`` gives them, and every
    address the host talks to as a /32 of its own (the plugin's hostneeds.py: here the package
    registries sit in 203.0.113.0/24)."""
    needs = plugin_module("hostneeds").destinations()
    try:
        out = subprocess.run(["ip", "-j", "-4", "route", "show"], capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [(r["dst"], r.get("dev", "")) for r in json.loads(out or "[]")] + needs


def clash(cidr: str, routes: list[tuple[str, str]]) -> str | None:
    """The host route ``cidr`` overlaps ("192.0.2.0/24 dev eth0"); the default route and the
    cloud's own routes do not count."""
    net = ipaddress.ip_network(cidr, strict=False)
    for dst, dev in routes:
        if dst in ("default", "0.0.0.0/0") or dev == CLOUD_DEV:
            continue
        if ipaddress.ip_network(dst, strict=False).overlaps(net):
            return f"{dst} dev {dev}"
    return None


def choose(preferred: str, routes: list[tuple[str, str]], taken: list[str]) -> str:
    """``preferred`` when it overlaps no host route and no range in ``taken``; otherwise the
    first such block of the same size in 198.18.0.0/15.

    :raises ValueError: no free block left in the pool.
    """
    used = [ipaddress.ip_network(t, strict=False) for t in taken]

    def free(net) -> bool:
        return clash(str(net), routes) is None and not any(net.overlaps(u) for u in used)

    want = ipaddress.ip_network(preferred, strict=False)
    if free(want):
        return str(want)
    for block in POOL.subnets(new_prefix=max(want.prefixlen, POOL.prefixlen)):
        if free(block):
            return str(block)
    raise ValueError(f"no free /{want.prefixlen} left in {POOL} on this machine")


def ensure_subnet(net: Any, network: Any, name: str, preferred: str, say: Callable,
                  routes: list[tuple[str, str]] | None = None, **create: Any) -> Any:
    """The subnet ``name`` of ``network`` in a range free on this machine.

    Found and free: kept. Missing: made in ``choose(preferred)``. Found but overlapping a host
    route (a cloud seeded before ranges were checked): made again in a free range when only
    routers use it (their interfaces and gateways are moved over); otherwise left as it is,
    with a message saying what holds it (the agent does not route it from the host).
    """
    routes = host_routes() if routes is None else routes
    taken = [s.cidr for s in net.subnets() if s.ip_version == 4 and s.name != name]
    from openstack import exceptions  # lazy: devcloud status/down need no openstacksdk

    try:   # find_* with ignore_missing=True is deprecated (openstacksdk 4.x)
        subnet = net.find_subnet(name, network_id=network.id, ignore_missing=False)
    except exceptions.NotFoundException:
        subnet = None
    if subnet is not None:
        why = clash(subnet.cidr, routes)
        if why is None:
            return subnet
        users = [p for p in net.ports(network_id=network.id)
                 if any(ip.get("subnet_id") == subnet.id for ip in p.fixed_ips)]
        holders = [p for p in users if p.device_owner not in ROUTER_OWNERS]
        if holders:
            say(f"{network.name}: subnet {subnet.cidr} overlaps the host's route {why} and "
                f"{len(holders)} port(s) still use it ({holders[0].device_owner or 'no owner'}"
                f", ...): the host cannot reach it; delete them and run `invoke devcloud.up` "
                "again, or `invoke devcloud.reset`")
            return subnet
        return _move(net, network, subnet, users, choose(preferred, routes, taken), why, say,
                     **create)
    cidr = choose(preferred, routes, taken)
    if cidr != preferred:
        say(f"{network.name}: {preferred} overlaps a route of this machine; using {cidr}")
    return net.create_subnet(name=name, network_id=network.id, ip_version=4, cidr=cidr, **create)


def _move(net, network, subnet, users, cidr, why, say, **create):
    """Remake ``subnet`` in ``cidr``, taking the routers that used it along."""
    gateways, interfaces = [], []
    for port in users:
        router = net.get_router(port.device_id)
        if port.device_owner == "network:router_gateway":
            gateways.append((router, router.external_gateway_info))
            net.update_router(router, external_gateway_info={})
        else:
            interfaces.append(router)
            net.remove_interface_from_router(router, subnet_id=subnet.id)
    net.delete_subnet(subnet)
    new = net.create_subnet(name=subnet.name, network_id=network.id, ip_version=4, cidr=cidr,
                            **{"enable_dhcp": subnet.is_dhcp_enabled, **create})
    for router in interfaces:
        net.add_interface_to_router(router, subnet_id=new.id)
    for router, info in gateways:
        net.update_router(router, external_gateway_info={"network_id": info["network_id"]})
    say(f"{network.name}: moved subnet {subnet.cidr} (it overlapped the host's route {why}) to "
        f"{cidr}; routers {', '.join(r.name for r in interfaces + [g for g, _ in gateways])} "
        "follow")
    return new
