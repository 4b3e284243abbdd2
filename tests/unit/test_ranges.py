"""The seed's choice of address ranges: never one that overlaps a route the host has."""

from types import SimpleNamespace as NS

import pytest

from ivc_tasks.devcloud import ranges

# this machine's shape: eth0 in the documentation range the OVH shape's ext-net used
HOST = [("default", "eth0"), ("192.0.2.0/24", "eth0")]


@pytest.mark.parametrize("preferred, taken, want", [
    ("203.0.113.0/24", [], "203.0.113.0/24"),               # free here: kept
    ("192.0.2.0/25", [], "198.18.0.0/25"),                  # under eth0's route: moved
    ("192.0.2.128/25", ["198.18.0.0/25"], "198.18.0.128/25"),
    ("198.51.100.0/24", ["198.51.100.0/24"], "198.18.0.0/24"),  # taken by another subnet
])
def test_choose(preferred, taken, want):
    assert ranges.choose(preferred, HOST, taken) == want


def test_choose_skips_host_routes_inside_the_pool_and_ignores_the_clouds_own():
    routes = HOST + [("198.18.0.0/24", "docker0"), ("198.18.1.0/24", "ivc-host")]
    assert ranges.choose("192.0.2.0/24", routes, []) == "198.18.1.0/24"
    assert ranges.clash("198.18.1.0/24", routes) is None
    assert ranges.clash("198.18.0.128/25", routes) == "198.18.0.0/24 dev docker0"


def test_choose_fails_when_the_pool_is_full():
    with pytest.raises(ValueError, match="no free /16"):
        ranges.choose("192.0.2.0/16", HOST + [("198.18.0.0/15", "x")], [])


class FakeNet:
    """Just what ensure_subnet calls, recording the calls."""

    def __init__(self, subnets, ports, routers):
        self.subs, self.ports_, self.routers = subnets, ports, routers
        self.calls = []

    def subnets(self, **_):
        return list(self.subs)

    def find_subnet(self, name, network_id=None, ignore_missing=True):
        return next((s for s in self.subs if s.name == name), None)

    def ports(self, network_id=None):
        return list(self.ports_)

    def get_router(self, router_id):
        return self.routers[router_id]

    def update_router(self, router, **kw):
        self.calls.append(("update_router", router.name, kw))

    def remove_interface_from_router(self, router, subnet_id):
        self.calls.append(("remove_interface", router.name, subnet_id))

    def add_interface_to_router(self, router, subnet_id):
        self.calls.append(("add_interface", router.name, subnet_id))

    def delete_subnet(self, subnet):
        self.calls.append(("delete_subnet", subnet.id))
        self.subs.remove(subnet)

    def create_subnet(self, **kw):
        self.calls.append(("create_subnet", kw["cidr"]))
        new = NS(id="new", name=kw["name"], cidr=kw["cidr"], ip_version=4)
        self.subs.append(new)
        return new


def _ext(ports):
    old = NS(id="old", name="ext-net-subnet", cidr="192.0.2.0/25", ip_version=4,
             is_dhcp_enabled=False)
    router = NS(name="ovh-router", external_gateway_info={"network_id": "ext"})
    return FakeNet([old], ports, {"r1": router}), NS(id="ext", name="ext-net")


def test_ensure_subnet_moves_a_clashing_subnet_used_only_by_routers():
    net, ext = _ext([NS(device_owner="network:router_gateway", device_id="r1",
                        fixed_ips=[{"subnet_id": "old"}])])
    said = []
    new = ranges.ensure_subnet(net, ext, "ext-net-subnet", "192.0.2.0/25", said.append, HOST,
                               enable_dhcp=False)     # as the seed passes it
    assert new.cidr == "198.18.0.0/25"
    assert net.calls == [("update_router", "ovh-router", {"external_gateway_info": {}}),
                         ("delete_subnet", "old"), ("create_subnet", "198.18.0.0/25"),
                         ("update_router", "ovh-router",
                          {"external_gateway_info": {"network_id": "ext"}})]
    assert said == ["ext-net: moved subnet 192.0.2.0/25 (it overlapped the host's route "
                    "192.0.2.0/24 dev eth0) to 198.18.0.0/25; routers ovh-router follow"]


def test_ensure_subnet_leaves_a_clashing_subnet_in_use_and_says_so():
    net, ext = _ext([NS(device_owner="compute:nova", device_id="vm",
                        fixed_ips=[{"subnet_id": "old"}])])
    said = []
    kept = ranges.ensure_subnet(net, ext, "ext-net-subnet", "192.0.2.0/25", said.append, HOST)
    assert kept.cidr == "192.0.2.0/25" and net.calls == []
    assert "1 port(s) still use it (compute:nova" in said[0] and "devcloud.reset" in said[0]


def test_ensure_subnet_keeps_a_free_one_and_makes_a_missing_one_in_a_free_range():
    net, ext = _ext([])
    net.subs[0].cidr = "198.18.5.0/25"
    assert ranges.ensure_subnet(net, ext, "ext-net-subnet", "192.0.2.0/25", print, HOST).id \
        == "old"
    said = []
    made = ranges.ensure_subnet(net, ext, "other-subnet", "192.0.2.128/25", said.append, HOST)
    assert made.cidr == "198.18.0.0/25"
    assert said == ["ext-net: 192.0.2.128/25 overlaps a route of this machine; using "
                    "198.18.0.0/25"]
