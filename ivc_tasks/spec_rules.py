"""Reading the declared security groups and their rules (a part of ``spec_loader.Loader``).

The checks are Neutron's: protocols by name or number, port ranges only where the protocol has
ports, ICMP type and code, IPv4/IPv6 prefixes matching the ethertype, 255-character texts.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from ivc_tasks.errors import clip_repr as _r
from ivc_tasks.hints import did_you_mean, type_name
from ivc_tasks.secgroup_rules import (
    ICMP_PROTOCOLS,
    IPV6_ONLY_PROTOCOLS,
    PORT_PROTOCOLS,
    protocol_number,
)
from ivc_tasks.spec_model import Rule, SecGroup

SECGROUP_KEYS = ("description", "rules", "default_egress")
RULE_KEYS = ("direction", "ethertype", "protocol", "ports", "icmp_type", "icmp_code",
             "remote_ip_prefix", "remote_group", "description")


class SecGroupReader:
    """The security-group half of the loader (``fail``, ``table``, ``keys``, ``string`` and
    ``neutron_text`` come from ``spec_loader.Loader``)."""

    # -- security groups ----------------------------------------------------------------------
    def secgroup(self, name: str, raw: Any, declared: Mapping[str, Any]) -> SecGroup:
        entry = f"secgroups.{name}"
        if not name.strip() or len(name) > 255 or name.lower() == "default":
            self.fail(entry, f"{_r(name)} is not a usable group name",
                      "pick a non-empty name of at most 255 characters other than 'default'")
        self.keys(self.table(raw, entry), entry, SECGROUP_KEYS)
        description = self.neutron_text(raw.get("description", ""), f"{entry}.description")
        rules = raw.get("rules", [])
        if not isinstance(rules, list):
            self.fail(f"{entry}.rules", f"expected a list of rules, got {type_name(rules)}",
                      "write rules = [ { ... }, ... ] or use [[secgroups.NAME.rules]]")
        parsed = tuple(self.rule(r, f"{entry}.rules[{i}]", declared) for i, r in enumerate(rules))
        default_egress = raw.get("default_egress")
        if default_egress is not None:
            default_egress = self.boolean(default_egress, f"{entry}.default_egress")
        return SecGroup(name=name, description=description, rules=parsed,
                        default_egress=default_egress)

    def rule(self, raw: Any, entry: str, declared: Mapping[str, Any]) -> Rule:
        self.keys(self.table(raw, entry), entry, RULE_KEYS)
        direction = raw.get("direction", "ingress")
        if direction not in ("ingress", "egress"):
            self.fail(f"{entry}.direction", f"{_r(direction)} is not a direction",
                      'use "ingress" or "egress"')
        protocol, number = self.protocol(raw.get("protocol"), f"{entry}.protocol")
        prefix, family = self.prefix(raw.get("remote_ip_prefix"), f"{entry}.remote_ip_prefix")
        ethertype = self.ethertype(raw.get("ethertype"), f"{entry}.ethertype", family, number)
        if number in IPV6_ONLY_PROTOCOLS and ethertype == "IPv4":
            self.fail(f"{entry}.ethertype", f"protocol {_r(protocol)} is IPv6-only but the rule is IPv4",
                      'set ethertype = "IPv6" (and an IPv6 remote_ip_prefix, if any)')
        pmin, pmax = self.ports(raw, entry, protocol, number)
        group = raw.get("remote_group")
        if group is not None:
            group = self.string(group, f"{entry}.remote_group")
            if group not in declared:
                hint = did_you_mean(group, declared, otherwise="declare it under [secgroups]")
                self.fail(f"{entry}.remote_group", f"{_r(group)} is not a declared security group", hint)
            if prefix is not None:
                self.fail(entry, "remote_ip_prefix and remote_group are both set",
                          "keep one: a rule matches either addresses or members of a group")
        description = self.neutron_text(raw.get("description", ""), f"{entry}.description")
        return Rule(direction=direction, ethertype=ethertype, protocol=protocol,
                    port_range_min=pmin, port_range_max=pmax, remote_ip_prefix=prefix,
                    remote_group=group, description=description)

    def protocol(self, raw: Any, entry: str) -> tuple[str | None, int | None]:
        try:
            number = protocol_number(raw)
        except ValueError as exc:
            self.fail(entry, str(exc), 'use a name such as "tcp", "udp", "icmp" or a number 0-255')
        if number is None:
            return None, None
        if isinstance(raw, int) or raw.strip().isdigit():
            return str(number), number
        return raw.strip().lower(), number

    def prefix(self, raw: Any, entry: str) -> tuple[str | None, int | None]:
        if raw is None:
            return None, None
        text = self.string(raw, entry)
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError:
            try:
                loose = ipaddress.ip_network(text, strict=False)
            except ValueError:
                self.fail(entry, f"{_r(text)} is not an IP address or CIDR",
                          'write e.g. "203.0.113.0/24", "198.51.100.7" or "2001:db8::/32"')
            self.fail(entry, f"{_r(text)} has host bits set", f'use the network "{loose}"')
        return str(network), network.version

    def ethertype(self, raw: Any, entry: str, family: int | None, number: int | None) -> str:
        if raw is None:
            if family is not None:
                return f"IPv{family}"
            return "IPv6" if number in IPV6_ONLY_PROTOCOLS else "IPv4"
        canonical = {"ipv4": "IPv4", "ipv6": "IPv6"}.get(str(raw).lower())
        if canonical is None:
            self.fail(entry, f"{_r(raw)} is not an ethertype", 'use "IPv4" or "IPv6"')
        if family is not None and canonical != f"IPv{family}":
            self.fail(entry, f"{canonical} contradicts the IPv{family} remote_ip_prefix",
                      f'set ethertype = "IPv{family}" or remove it')
        return canonical

    def ports(self, raw: dict, entry: str, protocol: str | None, number: int | None
              ) -> tuple[int | None, int | None]:
        has_icmp = "icmp_type" in raw or "icmp_code" in raw
        if "ports" in raw and has_icmp:
            self.fail(entry, "ports and icmp_type/icmp_code are both set",
                      "keep ports for tcp/udp/sctp, icmp_type/icmp_code for icmp")
        if "ports" in raw:
            if number not in PORT_PROTOCOLS:
                fix = ("use icmp_type/icmp_code instead" if number in ICMP_PROTOCOLS else
                       "remove ports, or use tcp, udp, sctp, udplite or dccp")
                self.fail(f"{entry}.ports", f"protocol {protocol or 'any'} has no ports", fix)
            return self.port_range(raw["ports"], f"{entry}.ports")
        if has_icmp:
            if number not in ICMP_PROTOCOLS:
                self.fail(f"{entry}.icmp_type" if "icmp_type" in raw else f"{entry}.icmp_code",
                          f"protocol {protocol or 'any'} has no ICMP type or code",
                          'set protocol = "icmp" (or "ipv6-icmp") or remove them')
            if "icmp_type" not in raw:
                self.fail(f"{entry}.icmp_code", "an ICMP code needs an icmp_type", "add icmp_type")
            return (self.icmp_value(raw["icmp_type"], f"{entry}.icmp_type"),
                    self.icmp_value(raw["icmp_code"], f"{entry}.icmp_code")
                    if "icmp_code" in raw else None)
        return None, None

    def port_range(self, raw: Any, entry: str) -> tuple[int, int]:
        text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text) if isinstance(text, str) else None
        if match is None:
            self.fail(entry, f"{_r(raw)} is not a port or a port range", 'write "22" or "8000-8100"')
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if not (1 <= low <= 65535 and 1 <= high <= 65535):
            self.fail(entry, f"{_r(raw)} is outside 1-65535", "use ports from 1 to 65535")
        if low > high:
            self.fail(entry, f"{_r(raw)} starts above its end", f'write "{high}-{low}"')
        return low, high

    def icmp_value(self, raw: Any, entry: str) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 255:
            self.fail(entry, f"{_r(raw)} is not an integer from 0 to 255",
                      "write e.g. icmp_type = 8 (echo request)")
        return raw
