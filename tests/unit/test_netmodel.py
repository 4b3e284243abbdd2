"""The network agent's pure parts: Neutron rules -> iptables, NAT, host routes, signature."""

import hashlib
import hmac
import sys

import pytest

from ivc_tasks.devcloud.layout import PLUGIN_DIR

sys.path.insert(0, str(PLUGIN_DIR))
from ivc_devcloud_plugin import netmodel
from ivc_devcloud_plugin.netmodel import FloatingIp, NetState, Port, Router, Rule, Subnet

R = Rule


@pytest.mark.parametrize("rule, members, want", [
    (R("r", "g", "ingress", protocol="tcp", port_min=22, port_max=22), {},
     ["-p tcp -m tcp --dport 22"]),
    (R("r", "g", "ingress", protocol="6", port_min=8000, port_max=8080,
       remote_ip_prefix="10.1.2.3"), {},
     ["-s 10.1.2.3/32 -p tcp -m tcp --dport 8000:8080"]),
    (R("r", "g", "ingress", protocol="udp", remote_ip_prefix="0.0.0.0/0"), {}, ["-p udp"]),
    (R("r", "g", "ingress", protocol="icmp", port_min=8, port_max=0), {},
     ["-p icmp -m icmp --icmp-type 8/0"]),
    (R("r", "g", "ingress", protocol="icmp"), {}, ["-p icmp"]),
    (R("r", "g", "ingress"), {}, [""]),
    (R("r", "g", "egress", remote_ip_prefix="192.0.2.0/24"), {}, ["-d 192.0.2.0/24"]),
    (R("r", "g", "ingress", protocol="tcp", port_min=80, port_max=80, remote_group_id="web"),
     {"web": ["10.0.0.5", "10.0.0.6"]},
     ["-s 10.0.0.5/32 -p tcp -m tcp --dport 80", "-s 10.0.0.6/32 -p tcp -m tcp --dport 80"]),
    (R("r", "g", "ingress", remote_group_id="empty"), {}, []),
    (R("r", "g", "ingress", ethertype="IPv6"), {}, []),
])
def test_rule_matches(rule, members, want):
    assert netmodel.rule_matches(rule, members) == want


def _state(**over):
    subnets = [Subnet("s1", "net1", "10.0.0.0/24", "10.0.0.1"),
               Subnet("s2", "ext", "198.18.0.0/24", "198.18.0.1")]
    ports = [Port("p1", "net1", "fa:16:3e:00:00:01", "vm1", "compute:nova", "proj",
                  (("10.0.0.5", "s1"),), True, ("sg",)),
             Port("p2", "net1", "fa:16:3e:00:00:02", "vm2", "compute:nova", "proj",
                  (("10.0.0.6", "s1"),), False, ()),
             Port("ri", "net1", "fa:16:3e:00:00:03", "r1", "network:router_interface", "proj",
                  (("10.0.0.1", "s1"),)),
             Port("gw", "ext", "fa:16:3e:00:00:04", "r1", "network:router_gateway", "",
                  (("198.18.0.2", "s2"),))]
    state = NetState(subnets=subnets, ports=ports,
                     rules=[R("a", "sg", "ingress", protocol="tcp", port_min=8080, port_max=8080),
                            R("b", "sg", "egress")],
                     routers=[Router("r1", "gw", True)],
                     router_ports=[("r1", "ri", "network:router_interface"),
                                   ("r1", "gw", "network:router_gateway")],
                     fips=[FloatingIp("f1", "198.18.0.10", "p1", "10.0.0.5", "r1")],
                     external={"ext"})
    for key, value in over.items():
        setattr(state, key, value)
    return state


def test_ruleset_secured_port_default_deny_stateful_and_unsecured_port_open():
    state = _state()
    text = netmodel.ruleset(state, state.ports[:2], {"net1": 1, "ext": 2}, {"net1"},
                            {"net1", "ext"})
    lines = text.splitlines()
    chain = "ivc-i-p1"
    assert [x for x in lines if x.startswith(f"-A {chain}")] == [
        f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        f"-A {chain} -m conntrack --ctstate INVALID -j DROP",
        f"-A {chain} -p tcp -m tcp --dport 8080 -j RETURN",
        f"-A {chain} -j DROP"]
    assert "-A ivc-ingress -d 10.0.0.5/32 -o ivcb-net1 -j ivc-i-p1" in lines
    assert [x for x in lines if x.startswith("-A ivc-egress")] == [
        "-A ivc-egress -m physdev --physdev-in ivct-p1 -j ivc-s-p1",
        "-A ivc-egress -m physdev --physdev-in ivct-p1 -j ivc-o-p1"]
    assert [x for x in lines if x.startswith("-A ivc-s-p1")] == [
        "-A ivc-s-p1 -s 10.0.0.5/32 -j RETURN", "-A ivc-s-p1 -j DROP"]
    assert "-A ivc-o-p1 -j RETURN" in lines                   # egress: any, as declared
    assert not [x for x in lines if "p2" in x]                 # port security off: no filter
    # the router joins net1 and ext; floating IP NAT both ways; SNAT of the rest to the gateway
    assert "-A ivc-isolate -i ivcb-net1 -o ivcb-ext -j ACCEPT" in lines
    assert "-A PREROUTING -d 198.18.0.10/32 -j DNAT --to-destination 10.0.0.5" in lines
    assert "-A POSTROUTING -s 10.0.0.5/32 ! -o ivcb-net1 -j SNAT --to-source 198.18.0.10" in lines
    assert "-A POSTROUTING -s 10.0.0.0/24 -o ivcb-ext -j SNAT --to-source 198.18.0.2" in lines
    assert ("-A PREROUTING -i ivcb-net1 -d 169.254.169.254/32 -p tcp -m tcp --dport 80 "
            "-j MARK --set-xmark 0x1/0xffffffff") in lines
    assert not [x for x in lines if "-i ivcb-ext -d 169.254.169.254" in x]
    assert lines[-1] == "COMMIT" and text.endswith("\n") and text.count("COMMIT") == 3


def test_floating_ip_follows_its_port():
    moved = [FloatingIp("f1", "198.18.0.10", "p2", "10.0.0.6", "r1")]
    state = _state(fips=moved)
    text = netmodel.ruleset(state, state.ports[:2], {}, set(), {"net1", "ext"})
    assert "-A PREROUTING -d 198.18.0.10/32 -j DNAT --to-destination 10.0.0.6" in text
    assert "10.0.0.5 " not in text.split("*nat")[1]


def test_metadata_networks_only_behind_a_router_unless_isolated_enabled():
    state = _state()
    assert netmodel.metadata_networks(state) == {"net1"}
    assert netmodel.metadata_networks(state, frozenset({"ext", "nope"})) == {"net1", "ext"}
    state.names = {"ext": "ext-net"}
    assert netmodel.metadata_networks(state, frozenset({"ext-net"})) == {"net1", "ext"}


def test_guest_ports_need_the_guest_namespace():
    state = _state()
    assert [p.id for p in netmodel.guest_ports(state, {"vm2", "r1"})] == ["p2"]


def test_group_members_ipv4_of_member_ports():
    assert netmodel.group_members(_state()) == {"sg": ["10.0.0.5"]}


HOST = [("default", "eth0"), ("192.0.2.0/24", "eth0"), ("172.17.0.0/16", "docker0"),
        ("198.18.0.0/24", "ivc-host")]


@pytest.mark.parametrize("cidr, clash", [
    ("192.0.2.0/25", "192.0.2.0/24 dev eth0"), ("192.0.2.128/25", "192.0.2.0/24 dev eth0"),
    ("192.0.0.0/16", "192.0.2.0/24 dev eth0"), ("172.17.5.0/24", "172.17.0.0/16 dev docker0"),
    ("198.18.0.0/24", None), ("203.0.113.0/24", None)])
def test_overlapping_ignores_default_and_own_routes(cidr, clash):
    assert netmodel.overlapping(cidr, HOST) == clash


def test_host_route_plan():
    add, skipped = netmodel.host_route_plan(["203.0.113.0/24", "192.0.2.0/25", "203.0.113.0/24"],
                                            HOST)
    assert add == ["203.0.113.0/24"]
    assert skipped == {"192.0.2.0/25": "192.0.2.0/24 dev eth0"}


def test_signature_is_nova_hmac_sha256():
    want = hmac.new(b"s3cret", b"uuid-1", hashlib.sha256).hexdigest()
    assert netmodel.signature("s3cret", "uuid-1") == want


def test_device_names_fit_the_kernel_limit():
    port = "0123abcd-4567-89ef-0123-456789abcdef"
    for name in (netmodel.tap_name(port), netmodel.peer_name(port), netmodel.bridge_name(port)):
        assert len(name) <= 15
    assert netmodel.tap_name(port) == "ivct-0123abcd45"


def test_isolated_metadata_names_the_seeded_ext_net():
    from ivc_tasks.devcloud import seed, services
    assert services.ISOLATED_METADATA == seed.EXT_NET


def test_down_removes_what_the_agent_makes():
    from ivc_tasks.devcloud import guestnet
    assert (guestnet.CLOUD_NS, guestnet.HOST_DEV) == (netmodel.CLOUD_NS, netmodel.HOST_DEV)
