"""The local cloud's network agent: Neutron's L2, L3, firewall and metadata agents in one loop.

About once a second it reads Neutron's state (netdb.py: one query when nothing changed) and
makes the kernel match it (netplumb.py): the cloud namespace ``ivc-cloud``; a bridge per
network holding its subnets' gateway addresses; for each port of an instance whose guest
namespace ``ivcg-<uuid>`` exists, a veth with the port's MAC and addresses in the guest;
routes from the host to every subnet that overlaps no route the host had; and the namespace's
iptables (security groups, floating IP NAT, router SNAT, metadata marks; netmodel.py). It
serves 169.254.169.254 to the networks behind a router (metaproxy.py).

Usage: python -m ivc_devcloud_plugin.netagent --neutron-config neutron.conf --nova-config nova.conf
"""

from __future__ import annotations

import argparse
import configparser
import time

from . import hostneeds, metaproxy, netdb, netmodel, netplumb
from .netmodel import CLOUD_NS, GUEST_NS_PREFIX

FULL_READ_EVERY = 30.0   # seconds: read everything even when the fingerprint did not change


class Agent:
    def __init__(self, db_engine, lookup: metaproxy.Lookup, isolated: frozenset = frozenset()):
        self.engine = db_engine
        self.lookup = lookup
        self.isolated = isolated
        self.marks: dict[str, int] = {}
        self.plugged: dict[str, tuple] = {}       # port id -> (netns, mac, ips, network)
        self.state = None
        self.fingerprint = None
        self.read_at = 0.0
        self.rules = None
        self.bridges = None
        self.skipped: dict = {}

    def read(self) -> netmodel.NetState:
        with self.engine.connect() as db:
            fp = netdb.fingerprint(db)
            if fp != self.fingerprint or time.monotonic() - self.read_at > FULL_READ_EVERY:
                self.state = netdb.read_state(db)
                self.fingerprint, self.read_at = fp, time.monotonic()
        return self.state

    def round(self) -> None:
        spaces = netplumb.namespaces()
        if CLOUD_NS not in spaces:
            say(f"made {', '.join(netplumb.ensure_base())}")
            self.plugged, self.rules, self.bridges = {}, None, None
        state = self.read()
        subnets = netmodel.v4_subnets(state)
        bridges: dict[str, list[str]] = {}
        for subnet in subnets.values():
            addrs = bridges.setdefault(subnet.network_id, [])
            if subnet.gateway_ip:
                addrs.append(netmodel.prefixed(subnet.gateway_ip, subnet))
        if bridges != self.bridges:      # a few `ip` calls per bridge: only on a change
            netplumb.sync_bridges(bridges)
            self.bridges = bridges
        for net in sorted(bridges):
            self.marks.setdefault(net, len(self.marks) + 1)
        meta = netmodel.metadata_networks(state, self.isolated)
        self.lookup.update(self.marks, state, meta)
        instances = {n[len(GUEST_NS_PREFIX):] for n in spaces if n.startswith(GUEST_NS_PREFIX)}
        self._plug(state, subnets, instances, set(bridges), meta)
        plugged = [p for p in state.ports if p.id in self.plugged]
        text = netmodel.ruleset(state, plugged, self.marks, meta, set(bridges))
        if text != self.rules:
            netplumb.apply_rules(text)
            if self.rules is not None:
                say(f"iptables: ruleset applied ({text.count(chr(10))} lines)")
            self.rules = text
        add, skipped = netmodel.host_route_plan([s.cidr for s in subnets.values()],
                                                netplumb.host_routes()
                                                + hostneeds.destinations())
        netplumb.sync_host_routes(add)
        if skipped != self.skipped:
            for cidr, clash in skipped.items():
                say(f"host route: not routing {cidr}: it overlaps the host's route {clash}")
            self.skipped = skipped

    def _plug(self, state, subnets, instances, bridges, meta) -> None:
        want = {}
        for port in netmodel.guest_ports(state, instances):
            ips = tuple(ip for ip, sid in port.ips if sid in subnets)
            if port.network_id in bridges:
                want[port.id] = (netmodel.guest_ns(port.device_id), port.mac, ips,
                                 port.network_id)
        taps = netplumb.plugged_taps()
        for port_id, record in list(self.plugged.items()):
            gone = netmodel.tap_name(port_id) not in taps
            if gone or want.get(port_id) != record:
                netplumb.unplug(netmodel.tap_name(port_id))
                del self.plugged[port_id]
                say(f"unplugged port {port_id} from {record[0]}")
        known = {netmodel.tap_name(p) for p in self.plugged}
        for tap in taps - known:
            netplumb.unplug(tap)
        by_id = {p.id: p for p in state.ports}
        for port_id, record in want.items():
            if port_id in self.plugged:
                continue
            port = by_id[port_id]
            pairs = [(ip, subnets[sid]) for ip, sid in port.ips if sid in subnets]
            gateway = next((s.gateway_ip for _, s in pairs if s.gateway_ip), None)
            try:
                addrs = [netmodel.prefixed(ip, s) for ip, s in pairs]
                ifname = netplumb.plug(port, record[0], addrs, gateway,
                                       gateway if port.network_id in meta else None)
            except netplumb.PlumbError as exc:   # the guest namespace went meanwhile
                say(f"port {port_id}: not plugged: {exc}")
                continue
            self.plugged[port_id] = record
            say(f"plugged port {port_id} into {record[0]} as {ifname} "
                f"({', '.join(record[2])}, {port.mac})")


def say(message: str) -> None:
    print(f"netagent: {message}", flush=True)


def metadata_secret(nova_conf: str) -> tuple[str, tuple[str, int]]:
    parser = configparser.RawConfigParser()
    parser.read(nova_conf)
    secret = parser.get("neutron", "metadata_proxy_shared_secret")
    host = parser.get("DEFAULT", "metadata_listen", fallback="127.0.0.1")
    port = parser.getint("DEFAULT", "metadata_listen_port", fallback=8775)
    return secret, (host, port)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neutron-config", required=True)
    parser.add_argument("--nova-config", required=True)
    parser.add_argument("--isolated-metadata", default="",
                        help="networks (names or ids, comma-separated) served metadata without "
                        "a router (Neutron's enable_isolated_metadata)")
    args = parser.parse_args(argv)
    made = netplumb.ensure_base()
    say(f"cloud namespace {CLOUD_NS} ready{': made ' + ', '.join(made) if made else ''}")
    for tap in netplumb.plugged_taps():       # start clean: every port is plugged again
        netplumb.unplug(tap)
    secret, nova = metadata_secret(args.nova_config)
    lookup = metaproxy.Lookup()
    metaproxy.serve(lookup, secret, nova)
    say(f"metadata proxy on {netmodel.METADATA_ADDR}:{netmodel.METADATA_PORT} in {CLOUD_NS} "
        f"-> Nova's metadata API at {nova[0]}:{nova[1]}")
    isolated = frozenset(n for n in args.isolated_metadata.split(",") if n)
    agent = Agent(netdb.engine(args.neutron_config), lookup, isolated)
    while True:
        try:
            agent.round()
        except Exception as exc:  # noqa: BLE001 (keep reconciling; the log says what went wrong)
            say(f"{type(exc).__name__}: {exc}")
            time.sleep(3)
        time.sleep(1)


if __name__ == "__main__":
    main()
