"""Security group rule identity and diff, the way Neutron sees it (pure: no cloud calls).

Neutron refuses a rule whose key equals an existing one (409). Its key (neutron 29,
``SecurityGroupDbMixin._rule_to_key``) is: direction, ethertype, protocol (a name and its number
are the same; with IPv6, ``icmp``/``icmpv6``/``1`` become ``ipv6-icmp``/``58``), port_range_min,
port_range_max (1-65535 is stored as no range), remote_group_id, remote_address_group_id and
remote_ip_prefix (``0.0.0.0/0``, ``::/0`` and none are the same; a bare IP gets /32 or /128).
The description is not part of it. ``rule_key`` computes that key for a declared rule and for a
rule as the API returns it, so the two can be compared.

Environments: a rule cannot carry tags and cannot be updated (Neutron answers 500 to a PUT), so
the rules ivc creates carry their environment in their description: ``ivc:<env>``, then a space
and the declared description if any (``rule_marker``, ``marked_env``). ``plan_rules`` sorts a
group's undeclared rules by who made them: this environment (``delete``: --prune deletes them),
another environment (``foreign``: never touched) or nobody ivc knows (``unmanaged``: made by
hand or by ivc before environments; never deleted, reported).

Neutron's default egress rules (IPv4 and IPv6, any: ``DEFAULT_EGRESS``) come with every new
group. Unless the group says ``default_egress = false`` (or declares egress rules of its own,
which then replace them), they count as declared: kept, created again if missing, never
reported.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Names neutron accepts (neutron_lib.constants.IP_PROTOCOL_MAP), and their numbers.
PROTOCOL_NUMBERS: dict[str, int] = {
    "hopopt": 0, "ip": 0, "icmp": 1, "igmp": 2, "ipip": 4, "tcp": 6, "egp": 8, "udp": 17,
    "dccp": 33, "ipv6-encap": 41, "ipv6-route": 43, "ipv6-frag": 44, "rsvp": 46, "gre": 47,
    "esp": 50, "ah": 51, "icmpv6": 58, "ipv6-icmp": 58, "ipv6-nonxt": 59, "ipv6-opts": 60,
    "ospf": 89, "pgm": 113, "vrrp": 112, "sctp": 132, "udplite": 136,
}
# IANA names neutron does NOT accept by name: a declaration may use them, ivc sends the number.
EXTRA_PROTOCOL_NUMBERS: dict[str, int] = {"encap": 98}
# Protocols whose rules may carry a port range (neutron's SG_PORT_PROTO_NUMS).
PORT_PROTOCOLS = frozenset({6, 17, 33, 132, 136})
# Protocols whose port_range_min/max carry the ICMP type/code.
ICMP_PROTOCOLS = frozenset({1, 58})
# Protocols neutron refuses with ethertype IPv4.
IPV6_ONLY_PROTOCOLS = frozenset({41, 43, 44, 58, 59, 60})
ANY_PROTOCOL = "any"

_ANY_PREFIXES = ("0.0.0.0/0", "::/0")
MARKER_PREFIX = "ivc:"
_MARKER = re.compile(r"^ivc:([A-Za-z0-9._-]+)(?: |$)")
# the keys of the two egress rules Neutron puts in every new group (see rule_key)
DEFAULT_EGRESS: tuple[tuple, ...] = tuple(
    ("egress", family, None, None, None, None, None, None) for family in ("IPv4", "IPv6"))
_FULL_PORT_RANGE = (1, 65535)


def protocol_number(protocol: Any) -> int | None:
    """Return the IP protocol number of a rule's protocol, or None for any protocol.

    :param protocol: a name (any case), a number or its string, ``"any"`` or None.
    :raises ValueError: for an unknown name or a number outside 0-255.
    """
    if protocol is None or (isinstance(protocol, str) and protocol.strip().lower() in ("", ANY_PROTOCOL)):
        return None
    if isinstance(protocol, bool):
        raise ValueError(f"protocol {protocol!r} is not a name or a number")
    if isinstance(protocol, int) or (isinstance(protocol, str) and protocol.strip().isdigit()):
        number = int(protocol)
        if not 0 <= number <= 255:
            raise ValueError(f"protocol number {number} is outside 0-255")
        return number
    if isinstance(protocol, str):
        name = protocol.strip().lower()
        if name in PROTOCOL_NUMBERS:
            return PROTOCOL_NUMBERS[name]
        if name in EXTRA_PROTOCOL_NUMBERS:
            return EXTRA_PROTOCOL_NUMBERS[name]
    raise ValueError(f"unknown protocol {protocol!r}")


def normalise_prefix(prefix: str | None) -> str | None:
    """Return a remote IP prefix as neutron compares it: None for "anywhere", bare IPs as /32, /128.

    Host bits are kept as given (neutron keeps them too).

    :raises ValueError: if ``prefix`` is not an IP address or CIDR.
    """
    if prefix is None or str(prefix).strip() == "":
        return None
    text = str(ipaddress.ip_interface(str(prefix).strip()))
    return None if text in _ANY_PREFIXES else text


def _canonical_ethertype(value: Any) -> str:
    text = str(value or "IPv4")
    return {"ipv4": "IPv4", "ipv6": "IPv6"}.get(text.lower(), text)


def _port(value: Any) -> int | None:
    return None if value is None else int(value)


def _protocol_for_key(protocol: Any, ethertype: str) -> int | str | None:
    try:
        number = protocol_number(protocol)
    except ValueError:
        return str(protocol)  # neutron compares unknown values as given
    if ethertype == "IPv6" and number == 1:
        number = 58  # neutron stores IPv6 icmp as ipv6-icmp
    return number


def rule_key(rule: Any, group_ids_by_name: Mapping[str, str] | None = None) -> tuple:
    """Return the identity of a rule as Neutron's duplicate check sees it.

    :param rule: a declared ``ivc_tasks.spec.Rule`` (its ``remote_group`` is a group NAME), or a
        rule as the API returns it (a mapping, e.g. an openstacksdk ``SecurityGroupRule``).
    :param group_ids_by_name: ids of the declared groups, to resolve a declared ``remote_group``.
        A name missing from it (a group not created yet, e.g. in a dry run) stands as
        ``"<id of NAME>"``, which equals no real id.
    :returns: ``(direction, ethertype, protocol number or None, port_range_min, port_range_max,
        remote_group_id, remote_address_group_id, remote_ip_prefix)``.
    """
    if isinstance(rule, Mapping):
        get = rule.get
        remote_group_id = get("remote_group_id")
    else:
        def get(name: str) -> Any:
            return getattr(rule, name, None)
        remote_group_id = _group_id(rule.remote_group, group_ids_by_name)
    # an openstacksdk SecurityGroupRule calls it ``ether_type``; the API and spec ``ethertype``
    ethertype = _canonical_ethertype(get("ethertype") or get("ether_type"))
    ports = (_port(get("port_range_min")), _port(get("port_range_max")))
    if ports == _FULL_PORT_RANGE:
        ports = (None, None)  # neutron stores the full range as no range
    return (
        str(get("direction") or "ingress"),
        ethertype,
        _protocol_for_key(get("protocol"), ethertype),
        *ports,
        remote_group_id or None,
        get("remote_address_group_id") or None,
        normalise_prefix(get("remote_ip_prefix")),
    )


def _group_id(name: str | None, group_ids_by_name: Mapping[str, str] | None) -> str | None:
    if not name:
        return None
    return (group_ids_by_name or {}).get(name, f"<id of {name}>")


def rule_marker(env: str | None, description: str | None = "") -> str:
    """The description of a rule ivc creates in environment ``env``: ``ivc:<env>``, then a
    space and the declared ``description`` if any (the declared description alone without
    ``env``)."""
    if not env:
        return description or ""
    return f"{MARKER_PREFIX}{env}" + (f" {description}" if description else "")


def marked_env(rule: Any) -> str | None:
    """The environment whose marker a rule's description carries, else None."""
    get = rule.get if isinstance(rule, Mapping) else (lambda k: getattr(rule, k, None))
    match = _MARKER.match(get("description") or "")
    return match.group(1) if match else None


def declared_description(description: str | None) -> str:
    """A rule's description without ivc's ``ivc:<env>`` marker (what was declared)."""
    text = description or ""
    match = _MARKER.match(text)
    return text[match.end():] if match else text


def default_egress_wanted(declared: Iterable[Any], setting: bool | None) -> bool:
    """Whether Neutron's default egress rules count as part of a group.

    :param declared: the group's declared rules.
    :param setting: the group's ``default_egress`` (None: not set).
    :returns: ``setting`` when set; otherwise True unless an egress rule is declared (declared
        egress rules replace the defaults).
    """
    if setting is not None:
        return setting
    return not any(getattr(r, "direction", "ingress") == "egress" for r in declared)


def api_body(rule: Any, group_ids_by_name: Mapping[str, str] | None = None,
             env: str | None = None) -> dict[str, Any]:
    """Return the body that creates a declared rule, without ``security_group_id``.

    Keys whose value is None are left out; a protocol neutron knows only by number is sent as
    its number. With ``env``, the description carries the environment's marker
    (``rule_marker``).
    """
    body: dict[str, Any] = {"direction": rule.direction, "ethertype": rule.ethertype}
    protocol = rule.protocol
    if isinstance(protocol, str) and protocol.lower() in EXTRA_PROTOCOL_NUMBERS:
        protocol = str(EXTRA_PROTOCOL_NUMBERS[protocol.lower()])
    optional = {
        "protocol": protocol,
        "port_range_min": rule.port_range_min,
        "port_range_max": rule.port_range_max,
        "remote_ip_prefix": rule.remote_ip_prefix,
        "remote_group_id": _group_id(rule.remote_group, group_ids_by_name),
        "description": rule_marker(env, rule.description) or None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


@dataclass(frozen=True)
class RulePlan:
    """What it takes to make a group's rules match the declaration.

    ``create``: API bodies (without ``security_group_id``) of declared rules that are missing.
    ``delete``: undeclared rules this environment made (its marker), and the unmarked default
    egress rules when the group no longer wants them (``default_egress`` off) and no other
    environment shares it: --prune deletes them.
    ``foreign``: undeclared rules another environment made: never touched.
    ``unmanaged``: undeclared rules no environment made (by hand, or by ivc before
    environments; default egress rules of a shared group that this one does not want): kept,
    reported.
    ``keep``: existing rules that are declared (whoever made them).
    """

    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[Any] = field(default_factory=list)
    keep: list[Any] = field(default_factory=list)
    foreign: list[Any] = field(default_factory=list)
    unmanaged: list[Any] = field(default_factory=list)

    def in_sync(self, *, prune: bool) -> bool:
        """Return True when nothing would be created (and, with ``prune``, nothing deleted)."""
        return not self.create and not (prune and self.delete)


def _default_egress_body(key: tuple, env: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"direction": key[0], "ethertype": key[1]}
    if env:
        body["description"] = rule_marker(env)
    return body


def plan_rules(
    declared: Iterable[Any],
    existing: Iterable[Mapping[str, Any]],
    group_ids_by_name: Mapping[str, str] | None = None,
    *,
    env: str | None = None,
    default_egress: bool | None = None,
    shared: bool = False,
) -> RulePlan:
    """Compare declared rules with a group's existing rules.

    Declared rules with the same key collapse into one (the first one's description wins).

    :param declared: ``ivc_tasks.spec.Rule`` objects of one group.
    :param existing: that group's rules as the API returns them.
    :param group_ids_by_name: ids of the declared groups, for ``remote_group``.
    :param env: the environment: its marker goes into the bodies to create and says which
        undeclared rules are its own. None: every undeclared rule is in ``delete``, and the
        default egress rules are treated as any other (no environments: the old behaviour).
    :param default_egress: the group's ``default_egress`` setting (see
        ``default_egress_wanted``); only used with ``env``.
    :param shared: another environment's tag is on the group: unmarked default egress rules
        this group does not want are reported (``unmanaged``) rather than deleted.
    """
    declared = list(declared)
    wanted: dict[tuple, dict[str, Any]] = {}
    for rule in declared:
        wanted.setdefault(rule_key(rule, group_ids_by_name),
                          api_body(rule, group_ids_by_name, env))
    egress_wanted = env is not None and default_egress_wanted(declared, default_egress)
    if egress_wanted:
        for key in DEFAULT_EGRESS:
            wanted.setdefault(key, _default_egress_body(key, env))
    plan = RulePlan()
    matched: set[tuple] = set()
    for rule in existing:
        key = rule_key(rule)
        owner = marked_env(rule)
        if key in wanted and key not in matched:
            matched.add(key)
            plan.keep.append(rule)
        elif env is None or owner == env:
            plan.delete.append(rule)
        elif owner is not None:
            plan.foreign.append(rule)
        elif key in DEFAULT_EGRESS and not shared:
            plan.delete.append(rule)  # unmarked: Neutron's own, which this group does not want
        else:
            plan.unmanaged.append(rule)
    plan.create.extend(body for key, body in wanted.items() if key not in matched)
    return plan


def rule_text(rule: Mapping[str, Any] | Any, names_by_id: Mapping[str, str] | None = None) -> str:
    """Return a rule in a few words: ``ingress IPv4 tcp 22 from 0.0.0.0/0 (ssh)`` (its
    description without ivc's environment marker)."""
    get = rule.get if isinstance(rule, Mapping) else (lambda k: getattr(rule, k, None))
    ethertype = get("ethertype") or get("ether_type") or "IPv4"
    parts = [get("direction") or "ingress", ethertype, get("protocol") or "any"]
    low, high = get("port_range_min"), get("port_range_max")
    if low is not None:
        parts.append(str(low) if high in (None, low) else f"{low}-{high}")
    remote_group = get("remote_group_id")
    if remote_group:
        parts.append(f"from group {(names_by_id or {}).get(remote_group, remote_group)}")
    elif get("remote_ip_prefix"):
        parts.append(f"from {get('remote_ip_prefix')}")
    text = " ".join(str(p) for p in parts)
    description = declared_description(get("description"))
    return text + (f" ({description})" if description else "")


def group_tag(env: str) -> str:
    """The Neutron tag that says environment ``env`` manages a security group."""
    return f"{MARKER_PREFIX}{env}"


def tagged_envs(group: Any) -> list[str]:
    """The environments whose tag a group carries."""
    return sorted(t[len(MARKER_PREFIX):] for t in (getattr(group, "tags", None) or [])
                  if t.startswith(MARKER_PREFIX))


def is_default_egress(rule: Any) -> bool:
    return rule_key(rule) in DEFAULT_EGRESS


def undeclared_warning(name: str, rules: Sequence[Any], names_by_id: Mapping[str, str],
                        env: str) -> str:
    texts = "; ".join(rule_text(r, names_by_id) for r in rules)
    note = f"made in environment {env}"
    if any(is_default_egress(r) for r in rules):
        note = ("Neutron's default egress among them: default_egress = false, or the egress rules "
                "the group declares, replace it")
    return (f"security group {name}: {len(rules)} undeclared rule(s) kept ({texts}); --prune "
            f"deletes them ({note})")


def neutron_defaults() -> list[dict[str, Any]]:
    """The rules Neutron puts in a group it creates (for planning a group not made yet)."""
    return [{"direction": key[0], "ethertype": key[1], "description": None}
            for key in DEFAULT_EGRESS]
