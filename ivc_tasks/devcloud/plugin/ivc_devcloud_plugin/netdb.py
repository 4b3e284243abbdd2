"""Read Neutron's state from its database, read-only (SELECT only).

Why the database and not the API: one agent round is one query per kind (ports, addresses,
subnets, routers, floating IPs, security groups) on a local socket, with no token to fetch and
nothing queued behind the single neutron-api worker that every test shares; and a round where
nothing changed is ONE query (``fingerprint``: every Neutron resource carries a standard
attribute row whose revision number rises on each change and which goes with it on delete).
"""

from __future__ import annotations

import configparser

import sqlalchemy as sa

from .netmodel import FloatingIp, NetState, Port, Router, Rule, Subnet

FINGERPRINT = sa.text("SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(SUM(revision_number), 0) "
                      "FROM standardattributes")
QUERIES = {   # ordered, so that the same state always gives the same ruleset text
    "ports": "SELECT p.id, p.network_id, p.mac_address, p.device_id, p.device_owner, "
             "p.project_id, COALESCE(s.port_security_enabled, 1) FROM ports p "
             "LEFT JOIN portsecuritybindings s ON s.port_id = p.id ORDER BY p.id",
    "ips": "SELECT port_id, ip_address, subnet_id FROM ipallocations",
    "groups": "SELECT port_id, security_group_id FROM securitygroupportbindings",
    "subnets": "SELECT id, network_id, cidr, gateway_ip, ip_version FROM subnets ORDER BY id",
    "rules": "SELECT id, security_group_id, direction, ethertype, protocol, port_range_min, "
             "port_range_max, remote_ip_prefix, remote_group_id FROM securitygrouprules ORDER BY id",
    "routers": "SELECT id, gw_port_id, enable_snat FROM routers",
    "router_ports": "SELECT router_id, port_id, port_type FROM routerports ORDER BY port_id",
    "fips": "SELECT id, floating_ip_address, fixed_port_id, fixed_ip_address, router_id "
            "FROM floatingips ORDER BY id",
    "external": "SELECT network_id FROM externalnetworks",
    "networks": "SELECT id, name FROM networks",
}


def connection_url(neutron_conf: str) -> str:
    parser = configparser.RawConfigParser()
    parser.read(neutron_conf)
    return parser.get("database", "connection")


def engine(neutron_conf: str):
    return sa.create_engine(connection_url(neutron_conf), pool_pre_ping=True, pool_size=1)


def fingerprint(db) -> tuple:
    return tuple(db.execute(FINGERPRINT).fetchone())


def read_state(db) -> NetState:
    rows = {name: db.execute(sa.text(sql)).fetchall() for name, sql in QUERIES.items()}
    ips: dict[str, list] = {}
    for port_id, ip, subnet_id in rows["ips"]:
        ips.setdefault(port_id, []).append((ip, subnet_id))
    groups: dict[str, list] = {}
    for port_id, group_id in rows["groups"]:
        groups.setdefault(port_id, []).append(group_id)
    return NetState(
        subnets=[Subnet(i, n, c, g, int(v)) for i, n, c, g, v in rows["subnets"]],
        ports=[Port(i, n, m, d or "", o or "", pr or "", tuple(sorted(ips.get(i, []))),
                    bool(sec), tuple(sorted(groups.get(i, []))))
               for i, n, m, d, o, pr, sec in rows["ports"]],
        rules=[Rule(i, g, d, e, p, lo, hi, r, rg)
               for i, g, d, e, p, lo, hi, r, rg in rows["rules"]],
        routers=[Router(i, gw, bool(snat)) for i, gw, snat in rows["routers"]],
        router_ports=[tuple(r) for r in rows["router_ports"]],
        fips=[FloatingIp(i, a, p, f, r) for i, a, p, f, r in rows["fips"]],
        external={r[0] for r in rows["external"]},
        names={i: n for i, n in rows["networks"]},
    )
