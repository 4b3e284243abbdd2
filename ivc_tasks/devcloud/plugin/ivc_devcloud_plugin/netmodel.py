"""What the network agent wants, computed from Neutron's state: pure functions, no I/O.

The state (``NetState``) is what netdb.py reads from Neutron's database; from it this module
derives the device names, which ports to plug into which guest, which networks a router links,
where metadata is served, and the whole ruleset of the cloud namespace as iptables-restore
text (Neutron's iptables firewall, its L3 agent's floating IP NAT, the metadata marks).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass, field

CLOUD_NS = "ivc-cloud"
GUEST_NS_PREFIX = "ivcg-"
HOST_DEV, CLOUD_DEV = "ivc-host", "ivc-cloud0"        # the veth pair host <-> cloud namespace
HOST_ADDR, CLOUD_ADDR, LINK_PREFIX = "169.254.77.1", "169.254.77.2", 30
METADATA_ADDR, METADATA_PORT = "169.254.169.254", 80


@dataclass(frozen=True)
class Subnet:
    id: str
    network_id: str
    cidr: str
    gateway_ip: str | None
    ip_version: int = 4


@dataclass(frozen=True)
class Port:
    id: str
    network_id: str
    mac: str
    device_id: str
    device_owner: str
    project_id: str
    ips: tuple = ()                  # ((ip, subnet_id), ...)
    security: bool = True
    groups: tuple = ()               # security group ids


@dataclass(frozen=True)
class Rule:
    id: str
    group_id: str
    direction: str                   # ingress | egress
    ethertype: str = "IPv4"
    protocol: str | None = None
    port_min: int | None = None
    port_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group_id: str | None = None


@dataclass(frozen=True)
class Router:
    id: str
    gw_port_id: str | None = None
    enable_snat: bool = True


@dataclass(frozen=True)
class FloatingIp:
    id: str
    address: str
    port_id: str | None
    fixed_ip: str | None
    router_id: str | None


@dataclass
class NetState:
    subnets: list = field(default_factory=list)
    ports: list = field(default_factory=list)
    rules: list = field(default_factory=list)
    routers: list = field(default_factory=list)
    router_ports: list = field(default_factory=list)     # ((router_id, port_id, port_type), ...)
    fips: list = field(default_factory=list)
    external: set = field(default_factory=set)            # external network ids
    names: dict = field(default_factory=dict)             # network id -> name


def short(ident: str, n: int = 10) -> str:
    return ident.replace("-", "")[:n]


def bridge_name(network_id: str) -> str:
    return f"ivcb-{short(network_id)}"


def tap_name(port_id: str) -> str:
    """The cloud-side end of a guest port's veth (15 characters at most, as the kernel wants)."""
    return f"ivct-{short(port_id)}"


def peer_name(port_id: str) -> str:
    return f"ivcx-{short(port_id)}"


def guest_ns(instance_id: str) -> str:
    return f"{GUEST_NS_PREFIX}{instance_id}"


def signature(secret: str, instance_id: str) -> str:
    """X-Instance-ID-Signature as Neutron's metadata proxy signs it and Nova checks it."""
    return hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest()


def v4_subnets(state: NetState) -> dict[str, Subnet]:
    return {s.id: s for s in state.subnets if s.ip_version == 4}


def prefixed(ip: str, subnet: Subnet) -> str:
    return f"{ip}/{ipaddress.ip_network(subnet.cidr).prefixlen}"


def guest_ports(state: NetState, instances: set[str]) -> list[Port]:
    """Ports bound to an instance whose guest namespace exists (E1 makes ``ivcg-<uuid>``)."""
    return [p for p in state.ports
            if p.device_owner.startswith("compute:") and p.device_id in instances]


def router_networks(state: NetState) -> dict[str, set[str]]:
    """Router id -> the networks it joins (its interfaces' and its gateway's)."""
    by_id = {p.id: p for p in state.ports}
    joined: dict[str, set[str]] = {r.id: set() for r in state.routers}
    for router_id, port_id, _ in state.router_ports:
        if port_id in by_id:
            joined.setdefault(router_id, set()).add(by_id[port_id].network_id)
    return joined


def interface_networks(state: NetState) -> set[str]:
    """Networks with a router interface: where Neutron's L3 agent serves metadata."""
    by_id = {p.id: p for p in state.ports}
    return {by_id[port_id].network_id for _, port_id, kind in state.router_ports
            if kind == "network:router_interface" and port_id in by_id}


def metadata_networks(state: NetState, isolated: frozenset = frozenset()) -> set[str]:
    """Where 169.254.169.254 answers: behind a router, or on a network (named by id or name in
    ``isolated``) where isolated metadata is enabled, as Neutron's DHCP agent serves it."""
    nets = {s.network_id for s in state.subnets}
    return interface_networks(state) | {n for n in nets
                                        if n in isolated or state.names.get(n) in isolated}


def group_members(state: NetState) -> dict[str, list[str]]:
    """Security group id -> the IPv4 fixed addresses of the ports in it (remote_group)."""
    members: dict[str, list[str]] = {}
    for port in state.ports:
        for group in port.groups:
            members.setdefault(group, []).extend(
                ip for ip, _ in port.ips if ipaddress.ip_address(ip).version == 4)
    return {g: sorted(set(ips)) for g, ips in members.items()}


PROTOCOL_NAMES = {"1": "icmp", "6": "tcp", "17": "udp", "132": "sctp"}


def rule_matches(rule: Rule, members: dict[str, list[str]]) -> list[str]:
    """One Neutron rule -> the iptables matches it allows (one string each; [] = nothing).

    Mirrors neutron.agent.linux.iptables_firewall: protocol, then the remote (``-s`` for
    ingress, ``-d`` for egress; a remote group is its members' addresses), then the port range
    (``--dport a:b``) or, for ICMP, the type and code.
    """
    if rule.ethertype != "IPv4":
        return []
    parts = []
    proto = PROTOCOL_NAMES.get(str(rule.protocol), rule.protocol) if rule.protocol else None
    if proto in ("any", "0"):
        proto = None
    if proto:
        parts.append(f"-p {proto}")
        if proto in ("tcp", "udp", "sctp") and rule.port_min is not None:
            top = rule.port_max if rule.port_max is not None else rule.port_min
            ports = str(rule.port_min) if top == rule.port_min else f"{rule.port_min}:{top}"
            parts.append(f"-m {proto} --dport {ports}")
        elif proto == "icmp" and rule.port_min is not None:
            code = f"/{rule.port_max}" if rule.port_max is not None else ""
            parts.append(f"-m icmp --icmp-type {rule.port_min}{code}")
    flag = "-s" if rule.direction == "ingress" else "-d"
    if rule.remote_group_id:
        remotes = [f"{ip}/32" for ip in members.get(rule.remote_group_id, [])]
    elif rule.remote_ip_prefix and rule.remote_ip_prefix not in ("0.0.0.0/0",):
        remotes = [str(ipaddress.ip_network(rule.remote_ip_prefix, strict=False))]
    else:
        remotes = [None]
    return [" ".join([f"{flag} {r}"] * bool(r) + parts) for r in remotes]


def _port_chains(port: Port, rules: list[Rule], members: dict) -> tuple[list[str], list[str]]:
    """The chain declarations and rules of one port with port security (ingress, egress)."""
    decl, body = [], []
    for direction, letter in (("ingress", "i"), ("egress", "o")):
        chain = f"ivc-{letter}-{short(port.id, 12)}"
        decl.append(f":{chain} - [0:0]")
        body += [f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
                 f"-A {chain} -m conntrack --ctstate INVALID -j DROP"]
        for rule in rules:
            if rule.group_id in port.groups and rule.direction == direction:
                body += [f"-A {chain} {m} -j RETURN".replace("  ", " ")
                         for m in rule_matches(rule, members)]
        body.append(f"-A {chain} -j DROP")
    return decl, body


def ruleset(state: NetState, plugged: list[Port], marks: dict[str, int],
            metadata_nets: set[str], bridges: set[str]) -> str:
    """The cloud namespace's iptables-restore text (filter, nat and mangle tables).

    ``plugged``: the guest ports plugged now; ``marks``: network id -> the mark that tells the
    metadata proxy which network a request came from; ``bridges``: network ids with a bridge.
    """
    subnets = v4_subnets(state)
    members = group_members(state)
    filt = [":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
            ":ivc-egress - [0:0]", ":ivc-ingress - [0:0]", ":ivc-isolate - [0:0]"]
    body = [f"-A INPUT -d {METADATA_ADDR}/32 -p tcp -m tcp --dport {METADATA_PORT} "
            "-m mark --mark 0 -j DROP",
            "-A FORWARD -j ivc-egress", "-A FORWARD -j ivc-ingress", "-A FORWARD -j ivc-isolate"]
    for port in sorted(plugged, key=lambda p: p.id):
        if not port.security:
            continue
        decl, chains = _port_chains(port, state.rules, members)
        filt += decl
        tap, bridge = tap_name(port.id), bridge_name(port.network_id)
        chain = short(port.id, 12)
        filt.append(f":ivc-s-{chain} - [0:0]")             # the port's own source addresses
        body.append(f"-A ivc-egress -m physdev --physdev-in {tap} -j ivc-s-{chain}")
        body.append(f"-A ivc-egress -m physdev --physdev-in {tap} -j ivc-o-{chain}")
        for ip, _ in port.ips:
            if ipaddress.ip_address(ip).version != 4:
                continue
            chains.append(f"-A ivc-s-{chain} -s {ip}/32 -j RETURN")
            body.append(f"-A ivc-ingress -d {ip}/32 -o {bridge} -j ivc-i-{chain}")
        chains.append(f"-A ivc-s-{chain} -j DROP")          # a spoofed source address
        body += chains
    body += ["-A ivc-isolate -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
             f"-A ivc-isolate -i {CLOUD_DEV} -j ACCEPT", f"-A ivc-isolate -o {CLOUD_DEV} -j ACCEPT"]
    for net in sorted(bridges):
        body.append(f"-A ivc-isolate -i {bridge_name(net)} -o {bridge_name(net)} -j ACCEPT")
    links = sorted({(a, b) for nets in router_networks(state).values() for a in nets for b in nets
                    if a != b and a in bridges and b in bridges})
    body += [f"-A ivc-isolate -i {bridge_name(a)} -o {bridge_name(b)} -j ACCEPT" for a, b in links]
    body.append("-A ivc-isolate -j DROP")

    nat = [":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
           ":POSTROUTING ACCEPT [0:0]"]
    nat_body = []
    by_id = {p.id: p for p in state.ports}
    routers = {r.id: r for r in state.routers}
    for fip in sorted(state.fips, key=lambda f: f.address):
        if fip.port_id and fip.fixed_ip and fip.port_id in by_id:
            nat_body.append(f"-A PREROUTING -d {fip.address}/32 -j DNAT "
                            f"--to-destination {fip.fixed_ip}")
            inside = bridge_name(by_id[fip.port_id].network_id)
            nat_body.append(f"-A POSTROUTING -s {fip.fixed_ip}/32 ! -o {inside} -j SNAT "
                            f"--to-source {fip.address}")
    for router_id, nets in sorted(router_networks(state).items()):
        router = routers.get(router_id)
        gw = by_id.get(router.gw_port_id) if router and router.gw_port_id else None
        if not gw or not router.enable_snat or not gw.ips:
            continue
        gw_ip = gw.ips[0][0]
        for net in sorted(nets - {gw.network_id}):
            for s in subnets.values():
                if s.network_id == net:
                    nat_body.append(f"-A POSTROUTING -s {s.cidr} -o {bridge_name(gw.network_id)} "
                                    f"-j SNAT --to-source {gw_ip}")
                    nat_body.append(f"-A POSTROUTING -s {s.cidr} -o {CLOUD_DEV} -j SNAT "
                                    f"--to-source {gw_ip}")
    mangle = [":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]",
              ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]"]
    mangle_body = [f"-A PREROUTING -i {bridge_name(net)} -d {METADATA_ADDR}/32 -p tcp -m tcp "
                   f"--dport {METADATA_PORT} -j MARK --set-xmark {marks[net]:#x}/0xffffffff"
                   for net in sorted(metadata_nets & bridges) if net in marks]
    return "\n".join(["*filter", *filt, *body, "COMMIT", "*nat", *nat, *nat_body, "COMMIT",
                      "*mangle", *mangle, *mangle_body, "COMMIT", ""])


def overlapping(cidr: str, routes: list[tuple[str, str]]) -> str | None:
    """The first host route (destination, device) ``cidr`` overlaps; the default route and the
    cloud's own routes do not count."""
    net = ipaddress.ip_network(cidr, strict=False)
    for dst, dev in routes:
        if dst in ("default", "0.0.0.0/0") or dev == HOST_DEV:
            continue
        other = ipaddress.ip_network(dst, strict=False)
        if other.version == net.version and other.overlaps(net):
            return f"{dst} dev {dev}"
    return None


def host_route_plan(cidrs: list[str], routes: list[tuple[str, str]]):
    """Which subnet CIDRs the host routes into the cloud namespace (never one that overlaps a
    route the host had), and which it skips with the route in the way."""
    add, skipped = [], {}
    for cidr in sorted(set(cidrs)):
        clash = overlapping(cidr, routes)
        if clash:
            skipped[cidr] = clash
        else:
            add.append(cidr)
    return add, skipped
