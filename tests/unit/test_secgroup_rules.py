"""Rule identity (Neutron's duplicate key) and the declared-vs-existing diff."""

import pytest

from ivc_tasks.secgroup_rules import (
    RulePlan,
    api_body,
    normalise_prefix,
    plan_rules,
    protocol_number,
    rule_key,
)
from ivc_tasks.spec import Rule


def neutron(**overrides):
    """A rule as the API returns it: every key present, unset ones None."""
    rule = {
        "id": "r-1", "security_group_id": "sg-1", "direction": "ingress", "ethertype": "IPv4",
        "protocol": None, "port_range_min": None, "port_range_max": None,
        "remote_ip_prefix": None, "remote_group_id": None, "remote_address_group_id": None,
        "description": "",
    }
    rule.update(overrides)
    return rule


@pytest.mark.parametrize(("given", "expected"), [
    ("tcp", 6), ("TCP", 6), ("6", 6), (6, 6), (" udp ", 17), ("icmp", 1), ("icmpv6", 58),
    ("ipv6-icmp", 58), ("58", 58), ("sctp", 132), ("gre", 47), ("esp", 50), ("ah", 51),
    ("vrrp", 112), ("igmp", 2), ("ospf", 89), ("pgm", 113), ("rsvp", 46), ("udplite", 136),
    ("dccp", 33), ("ipip", 4), ("egp", 8), ("encap", 98), ("ipv6-encap", 41),
    ("ipv6-frag", 44), ("ipv6-nonxt", 59), ("ipv6-opts", 60), ("ipv6-route", 43),
    ("ip", 0), ("0", 0), (0, 0), (255, 255),
    (None, None), ("any", None), ("ANY", None), ("", None),
])
def test_protocol_number(given, expected):
    assert protocol_number(given) == expected


@pytest.mark.parametrize("given", ["tcpp", "256", 256, -1, True, 1.5])
def test_protocol_number_rejects(given):
    with pytest.raises(ValueError):
        protocol_number(given)


@pytest.mark.parametrize(("given", "expected"), [
    (None, None), ("", None), ("0.0.0.0/0", None), ("::/0", None), ("::0/0", None),
    ("0.0.0.0", "0.0.0.0/32"),  # a bare IP, not "anywhere"
    ("10.0.0.1", "10.0.0.1/32"), ("2001:db8::1", "2001:db8::1/128"),
    ("10.0.0.0/8", "10.0.0.0/8"), ("2001:DB8:0::/32", "2001:db8::/32"),
    ("10.0.0.5/24", "10.0.0.5/24"),  # host bits kept, as neutron keeps them
])
def test_normalise_prefix(given, expected):
    assert normalise_prefix(given) == expected


def test_rule_key_shape():
    rule = neutron(protocol="tcp", port_range_min=22, port_range_max=22,
                   remote_ip_prefix="192.0.2.0/24", description="ignored")
    assert rule_key(rule) == ("ingress", "IPv4", 6, 22, 22, None, None, "192.0.2.0/24")


@pytest.mark.parametrize(("a", "b", "same"), [
    # protocol: a name and its number are the same; any == none
    (neutron(protocol="tcp"), neutron(protocol="6"), True),
    (neutron(protocol="udp"), neutron(protocol=17), True),
    (neutron(protocol="any"), neutron(protocol=None), True),
    (neutron(protocol="0"), neutron(protocol=None), False),  # neutron: 0 is not "any"
    (neutron(protocol="tcp"), neutron(protocol="udp"), False),
    # IPv6: icmp, icmpv6 and 1 are stored as ipv6-icmp (58)
    (neutron(ethertype="IPv6", protocol="icmp"), neutron(ethertype="IPv6", protocol="ipv6-icmp"), True),
    (neutron(ethertype="IPv6", protocol="1"), neutron(ethertype="IPv6", protocol="58"), True),
    (neutron(ethertype="IPv6", protocol="icmpv6"), neutron(ethertype="IPv6", protocol="58"), True),
    (neutron(protocol="icmp"), neutron(ethertype="IPv6", protocol="icmp"), False),
    # prefixes: 0.0.0.0/0, ::/0 and none are the same; a bare IP is a /32
    (neutron(remote_ip_prefix="0.0.0.0/0"), neutron(), True),
    (neutron(ethertype="IPv6", remote_ip_prefix="::/0"), neutron(ethertype="IPv6"), True),
    (neutron(remote_ip_prefix="10.0.0.1"), neutron(remote_ip_prefix="10.0.0.1/32"), True),
    (neutron(remote_ip_prefix="10.0.0.0/24"), neutron(remote_ip_prefix="10.0.1.0/24"), False),
    # ports: the full range is stored as no range
    (neutron(protocol="tcp", port_range_min=1, port_range_max=65535), neutron(protocol="tcp"), True),
    (neutron(protocol="tcp", port_range_min=80, port_range_max=80),
     neutron(protocol="tcp", port_range_min=80, port_range_max=81), False),
    (neutron(protocol="tcp", port_range_min="80", port_range_max="80"),
     neutron(protocol="tcp", port_range_min=80, port_range_max=80), True),
    # the rest of the key
    (neutron(description="a", id="x"), neutron(description="b", id="y"), True),
    (neutron(direction="egress"), neutron(), False),
    (neutron(ethertype="IPv6"), neutron(), False),
    (neutron(remote_group_id="g1"), neutron(remote_group_id="g2"), False),
    (neutron(remote_address_group_id="ag1"), neutron(), False),
])
def test_rule_key_equality(a, b, same):
    assert (rule_key(a) == rule_key(b)) is same


@pytest.mark.parametrize(("declared", "existing"), [
    (Rule(protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix="0.0.0.0/0",
          description="ssh"),
     neutron(protocol="tcp", port_range_min=22, port_range_max=22)),
    (Rule(protocol="6", port_range_min=22, port_range_max=22),
     neutron(protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix="0.0.0.0/0")),
    (Rule(ethertype="IPv6", protocol="icmp"), neutron(ethertype="IPv6", protocol="ipv6-icmp")),
    (Rule(protocol="tcp", port_range_min=8000, port_range_max=8100, remote_group="web"),
     neutron(protocol="tcp", port_range_min=8000, port_range_max=8100, remote_group_id="id-web")),
    (Rule(direction="egress", ethertype="IPv6"), neutron(direction="egress", ethertype="IPv6")),
    (Rule(protocol="encap"), neutron(protocol="98")),
])
def test_declared_rule_matches_api_rule(declared, existing):
    assert rule_key(declared, {"web": "id-web"}) == rule_key(existing)


@pytest.mark.filterwarnings("ignore:The _compute_attributes method is deprecated")
@pytest.mark.parametrize("ethertype", ["IPv4", "IPv6"])
def test_sdk_resource_is_accepted(ethertype):
    # openstacksdk names the field ether_type; the API body calls it ethertype
    from openstack.network.v2.security_group_rule import SecurityGroupRule

    resource = SecurityGroupRule.existing(
        id="r", direction="ingress", ethertype=ethertype, protocol="tcp", port_range_min=80,
        port_range_max=80, remote_ip_prefix=None, remote_group_id=None)
    assert rule_key(resource) == ("ingress", ethertype, 6, 80, 80, None, None, None)


def test_unresolved_group_matches_nothing():
    declared = Rule(protocol="tcp", port_range_min=80, port_range_max=80, remote_group="new")
    assert rule_key(declared, {})[5] == "<id of new>"
    assert rule_key(declared, {}) != rule_key(neutron(protocol="tcp", port_range_min=80,
                                                      port_range_max=80))


@pytest.mark.parametrize(("rule", "body"), [
    (Rule(), {"direction": "ingress", "ethertype": "IPv4"}),
    (Rule(protocol="tcp", port_range_min=80, port_range_max=81, remote_ip_prefix="10.0.0.0/8",
          description="web"),
     {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 80,
      "port_range_max": 81, "remote_ip_prefix": "10.0.0.0/8", "description": "web"}),
    (Rule(direction="egress", ethertype="IPv6", protocol="ipv6-icmp", port_range_min=128),
     {"direction": "egress", "ethertype": "IPv6", "protocol": "ipv6-icmp", "port_range_min": 128}),
    (Rule(protocol="tcp", port_range_min=1, port_range_max=2, remote_group="web"),
     {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 1,
      "port_range_max": 2, "remote_group_id": "id-web"}),
    (Rule(protocol="encap"), {"direction": "ingress", "ethertype": "IPv4", "protocol": "98"}),
])
def test_api_body(rule, body):
    assert api_body(rule, {"web": "id-web"}) == body


DEFAULT_EGRESS = [
    neutron(id="e4", direction="egress", ethertype="IPv4"),
    neutron(id="e6", direction="egress", ethertype="IPv6"),
]
SSH = Rule(protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix="0.0.0.0/0")
SSH_BODY = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22,
            "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0"}
PING = Rule(protocol="icmp")
PING_BODY = {"direction": "ingress", "ethertype": "IPv4", "protocol": "icmp"}
SSH_EXISTING = neutron(id="s", protocol="tcp", port_range_min=22, port_range_max=22)


@pytest.mark.parametrize(("declared", "existing", "create", "delete_ids", "keep_ids"), [
    # a brand-new group: its two default egress rules are not declared -> reported for prune
    ([SSH, PING], DEFAULT_EGRESS, [SSH_BODY, PING_BODY], ["e4", "e6"], []),
    # declaring the default egress rules keeps them
    ([SSH, Rule(direction="egress"), Rule(direction="egress", ethertype="IPv6")], DEFAULT_EGRESS,
     [SSH_BODY], [], ["e4", "e6"]),
    # in sync
    ([SSH], [SSH_EXISTING], [], [], ["s"]),
    # declared duplicates collapse (description is not identity)
    ([SSH, Rule(protocol="6", port_range_min=22, port_range_max=22, description="again")], [],
     [SSH_BODY], [], []),
    # nothing declared: everything is extra
    ([], [SSH_EXISTING], [], ["s"], []),
    # two existing rules with one key (e.g. made before neutron checked): one kept, one extra
    ([SSH], [SSH_EXISTING, neutron(id="s2", protocol="6", port_range_min=22, port_range_max=22)],
     [], ["s2"], ["s"]),
])
def test_plan_rules(declared, existing, create, delete_ids, keep_ids):
    plan = plan_rules(declared, existing, {})
    assert plan.create == create
    assert [r["id"] for r in plan.delete] == delete_ids
    assert [r["id"] for r in plan.keep] == keep_ids


def test_plan_rules_resolves_remote_group():
    declared = [Rule(protocol="tcp", port_range_min=8000, port_range_max=8100, remote_group="web")]
    existing = [neutron(id="x", protocol="tcp", port_range_min=8000, port_range_max=8100,
                        remote_group_id="id-web")]
    assert plan_rules(declared, existing, {"web": "id-web"}) == RulePlan(keep=existing)
    assert plan_rules(declared, existing, {"web": "id-other"}).create == [
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 8000,
         "port_range_max": 8100, "remote_group_id": "id-other"}]


@pytest.mark.parametrize(("plan", "prune", "expected"), [
    (RulePlan(), False, True),
    (RulePlan(delete=[{}]), False, True),
    (RulePlan(delete=[{}]), True, False),
    (RulePlan(create=[{}]), False, False),
])
def test_in_sync(plan, prune, expected):
    assert plan.in_sync(prune=prune) is expected


# -- environments and Neutron's default egress rules --------------------------------------------
from ivc_tasks.secgroup_rules import (  # noqa: E402
    DEFAULT_EGRESS,
    default_egress_wanted,
    marked_env,
    rule_marker,
)

EGRESS_V4 = neutron(id="e4", direction="egress", description=None)
EGRESS_V6 = neutron(id="e6", direction="egress", ethertype="IPv6", description=None)
SSH = Rule(protocol="tcp", port_range_min=22, port_range_max=22, description="ssh")


@pytest.mark.parametrize(("env", "description", "marker"), [
    ("a", "", "ivc:a"), ("a", "ssh", "ivc:a ssh"), ("prod.eu-1", None, "ivc:prod.eu-1"),
    (None, "ssh", "ssh"), (None, "", ""),
])
def test_rule_marker(env, description, marker):
    assert rule_marker(env, description) == marker


@pytest.mark.parametrize(("description", "env"), [
    ("ivc:a", "a"), ("ivc:a ssh from anywhere", "a"), ("ivc:prod.eu-1 x", "prod.eu-1"),
    (None, None), ("", None), ("ssh", None), ("ivc: web traffic", None), ("ivc:", None),
    ("ivc:a:web1", None),  # a floating IP's kind of marker, not a rule's
])
def test_marked_env(description, env):
    assert marked_env(neutron(description=description)) == env


def test_api_body_carries_the_marker():
    assert api_body(SSH, {}, "a")["description"] == "ivc:a ssh"
    assert api_body(Rule(), {}, "a")["description"] == "ivc:a"
    assert api_body(SSH, {})["description"] == "ssh"


@pytest.mark.parametrize(("rules", "setting", "wanted"), [
    ((), None, True), ((SSH,), None, True), ((Rule(direction="egress", protocol="tcp"),), None, False),
    ((), False, False), ((), True, True), ((Rule(direction="egress"),), True, True),
])
def test_default_egress_wanted(rules, setting, wanted):
    assert default_egress_wanted(rules, setting) is wanted


def test_default_egress_rules_are_part_of_the_group():
    plan = plan_rules([SSH], [EGRESS_V4, EGRESS_V6], {}, env="a")
    assert plan.keep == [EGRESS_V4, EGRESS_V6] and plan.delete == [] and plan.unmanaged == []
    assert [b["description"] for b in plan.create] == ["ivc:a ssh"]
    assert {rule_key(EGRESS_V4), rule_key(EGRESS_V6)} == set(DEFAULT_EGRESS)


def test_missing_default_egress_rules_are_created_again():
    plan = plan_rules([SSH], [], {}, env="a")
    assert [(b["direction"], b["ethertype"], b["description"]) for b in plan.create] == [
        ("ingress", "IPv4", "ivc:a ssh"), ("egress", "IPv4", "ivc:a"), ("egress", "IPv6", "ivc:a")]


@pytest.mark.parametrize(("rules", "setting"), [
    ([SSH], False), ([SSH, Rule(direction="egress", protocol="udp", port_range_min=53,
                                port_range_max=53)], None),
])
def test_default_egress_not_wanted_is_this_groups_to_prune(rules, setting):
    plan = plan_rules(rules, [EGRESS_V4, EGRESS_V6], {}, env="a", default_egress=setting)
    assert plan.delete == [EGRESS_V4, EGRESS_V6] and plan.unmanaged == []
    shared = plan_rules(rules, [EGRESS_V4, EGRESS_V6], {}, env="a", default_egress=setting,
                        shared=True)
    assert shared.delete == [] and shared.unmanaged == [EGRESS_V4, EGRESS_V6]


def test_undeclared_rules_sorted_by_the_environment_that_made_them():
    mine = neutron(id="m", protocol="tcp", port_range_min=80, port_range_max=80,
                   description="ivc:a http")
    theirs = neutron(id="t", protocol="tcp", port_range_min=81, port_range_max=81,
                     description="ivc:b")
    by_hand = neutron(id="h", protocol="tcp", port_range_min=82, port_range_max=82,
                      description="web")
    declared_by_b = neutron(id="d", protocol="tcp", port_range_min=22, port_range_max=22,
                            description="ivc:b ssh")
    plan = plan_rules([SSH], [EGRESS_V4, EGRESS_V6, mine, theirs, by_hand, declared_by_b], {},
                      env="a")
    assert plan.delete == [mine] and plan.foreign == [theirs] and plan.unmanaged == [by_hand]
    assert plan.keep == [EGRESS_V4, EGRESS_V6, declared_by_b] and plan.create == []


def test_without_an_environment_every_undeclared_rule_is_to_delete():
    plan = plan_rules([SSH], [EGRESS_V4, neutron(id="x", description="ivc:b")], {})
    assert plan.delete == [EGRESS_V4, neutron(id="x", description="ivc:b")]
    assert plan.create[0]["description"] == "ssh"


@pytest.mark.parametrize(("description", "declared"), [
    ("ivc:a", ""), ("ivc:a ssh from anywhere", "ssh from anywhere"), (None, ""), ("ssh", "ssh"),
    ("ivc: web", "ivc: web"),
])
def test_declared_description(description, declared):
    from ivc_tasks.secgroup_rules import declared_description
    assert declared_description(description) == declared
