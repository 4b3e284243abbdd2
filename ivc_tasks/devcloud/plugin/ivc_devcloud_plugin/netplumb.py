"""The kernel side of the network agent: namespaces, bridges, veths, routes, iptables (``ip``).

Every function is idempotent and asks the kernel what is there before it changes anything.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess

from .netmodel import (
    CLOUD_ADDR,
    CLOUD_DEV,
    CLOUD_NS,
    HOST_ADDR,
    HOST_DEV,
    LINK_PREFIX,
    METADATA_ADDR,
    bridge_name,
    peer_name,
    tap_name,
)

NETNS_DIR = "/run/netns"
CLOUD_SYSCTLS = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1",
                 "net.ipv4.tcp_fwmark_accept": "1", "net.ipv4.conf.all.rp_filter": "0",
                 "net.ipv4.conf.default.rp_filter": "0"}


class PlumbError(RuntimeError):
    pass


def run(*args: str, check: bool = True, input: str | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, input=input)
    if check and done.returncode != 0:
        raise PlumbError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    return run("ip", *(["-n", ns] if ns else []), *args, check=check)


def namespaces() -> set[str]:
    try:
        return set(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return set()


def links(ns: str | None = None) -> dict[str, dict]:
    return {link["ifname"]: link for link in json.loads(ip("-j", "link", "show", ns=ns) or "[]")}


def addresses(dev: str, ns: str | None = None) -> set[str]:
    out = json.loads(ip("-j", "-4", "addr", "show", "dev", dev, ns=ns) or "[]")
    return {f"{a['local']}/{a['prefixlen']}" for link in out for a in link.get("addr_info", [])}


def ensure_base(ns: str = CLOUD_NS, host_dev: str = HOST_DEV, cloud_dev: str = CLOUD_DEV,
                host_addr: str = HOST_ADDR, cloud_addr: str = CLOUD_ADDR) -> list[str]:
    """The cloud namespace and the veth pair that joins it to the host; return what it made.
    (The names are parameters so that a test can make and remove a namespace of its own.)"""
    made = []
    if ns not in namespaces():
        ip("netns", "add", ns)
        made.append(f"namespace {ns}")
    for key, value in CLOUD_SYSCTLS.items():
        run("ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}")
    ip("link", "set", "lo", "up", ns=ns)
    if f"{METADATA_ADDR}/32" not in addresses("lo", ns):
        ip("addr", "add", f"{METADATA_ADDR}/32", "dev", "lo", ns=ns)
    if host_dev not in links():
        ip("link", "del", cloud_dev, ns=ns, check=False)
        ip("link", "add", host_dev, "type", "veth", "peer", "name", cloud_dev, "netns", ns)
        made.append(f"veth {host_dev} <-> {ns}/{cloud_dev}")
    if f"{host_addr}/{LINK_PREFIX}" not in addresses(host_dev):
        ip("addr", "add", f"{host_addr}/{LINK_PREFIX}", "dev", host_dev)
    if f"{cloud_addr}/{LINK_PREFIX}" not in addresses(cloud_dev, ns):
        ip("addr", "add", f"{cloud_addr}/{LINK_PREFIX}", "dev", cloud_dev, ns=ns)
    ip("link", "set", host_dev, "up")
    ip("link", "set", cloud_dev, "up", ns=ns)
    return made


def sync_bridges(wanted: dict[str, list[str]], ns: str = CLOUD_NS) -> None:
    """network id -> the gateway addresses (ip/prefix) its bridge holds; bridges of networks
    no longer wanted go."""
    have = {name for name in links(ns) if name.startswith("ivcb-")}
    names = {bridge_name(net): addrs for net, addrs in wanted.items()}
    for name in have - set(names):
        ip("link", "del", name, ns=ns, check=False)
    for name, addrs in names.items():
        if name not in have:
            ip("link", "add", name, "type", "bridge", ns=ns)
            ip("link", "set", name, "up", ns=ns)
        current = addresses(name, ns)
        for addr in set(addrs) - current:
            ip("addr", "add", addr, "dev", name, ns=ns)
        for addr in current - set(addrs):
            ip("addr", "del", addr, "dev", name, ns=ns, check=False)


def plugged_taps() -> set[str]:
    return {name for name in links(CLOUD_NS) if name.startswith("ivct-")}


def plug(port, netns: str, addrs: list[str], gateway: str | None, metadata_via: str | None,
         ns: str = CLOUD_NS) -> str:
    """A veth for ``port``: the guest end in ``netns`` with the port's MAC and addresses (named
    eth0, eth1, ... in plug order), the other end on its network's bridge. Return the name."""
    tap, peer = tap_name(port.id), peer_name(port.id)
    ip("link", "del", tap, ns=ns, check=False)
    ip("link", "add", tap, "type", "veth", "peer", "name", peer, "netns", netns, ns=ns)
    taken = set(links(netns))
    ifname = next(f"eth{i}" for i in range(64) if f"eth{i}" not in taken)
    ip("link", "set", peer, "name", ifname, "address", port.mac, ns=netns)
    for addr in addrs:
        ip("addr", "add", addr, "dev", ifname, ns=netns)
    ip("link", "set", ifname, "up", ns=netns)
    ip("link", "set", "lo", "up", ns=netns)
    ip("link", "set", tap, "master", bridge_name(port.network_id), "up", ns=ns)
    if gateway:
        ip("route", "add", "default", "via", gateway, "dev", ifname, ns=netns, check=False)
    if metadata_via:
        ip("route", "replace", f"{METADATA_ADDR}/32", "via", metadata_via, "dev", ifname, ns=netns)
    return ifname


def unplug(tap: str, ns: str = CLOUD_NS) -> None:
    ip("link", "del", tap, ns=ns, check=False)


def host_routes() -> list[tuple[str, str]]:
    routes = json.loads(ip("-j", "-4", "route", "show") or "[]")
    return [(r["dst"], r.get("dev", "")) for r in routes]


def sync_host_routes(cidrs: list[str]) -> None:
    """Exactly ``cidrs`` routed from the host into the cloud namespace (already checked free)."""
    link = str(ipaddress.ip_network(f"{HOST_ADDR}/{LINK_PREFIX}", strict=False))
    have = {dst for dst, dev in host_routes() if dev == HOST_DEV and dst != link}
    for cidr in set(cidrs) - have:
        ip("route", "replace", cidr, "via", CLOUD_ADDR, "dev", HOST_DEV)
    for cidr in have - set(cidrs):
        ip("route", "del", cidr, "dev", HOST_DEV, check=False)


def apply_rules(text: str) -> None:
    """Replace the cloud namespace's filter, nat and mangle tables in one atomic restore."""
    run("ip", "netns", "exec", CLOUD_NS, "iptables-restore", input=text)


def teardown(ns: str = CLOUD_NS, host_dev: str = HOST_DEV) -> list[str]:
    """Remove the cloud namespace (its bridges, veths, rules and the guests' links go with it)
    and the host's end; the host routes through it go with the device."""
    gone = []
    if ns in namespaces():
        ip("netns", "del", ns, check=False)
        gone.append(f"namespace {ns}")
    if host_dev in links():
        ip("link", "del", host_dev, check=False)
        gone.append(f"veth {host_dev}")
    return gone
