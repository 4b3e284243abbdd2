"""Public networks, kept addresses and the choice of external network (issue 10), without a
cloud: the rules (pure) and the floating-IP choice against the in-memory fake."""

from types import SimpleNamespace as NS

import pytest
from fakecloud import FakeConnection, Resource, ticking_cloud

from ivc_tasks.errors import ConfigError
from ivc_tasks.resources.floating_ips import is_public, plan_floating
from ivc_tasks.resources.markers import PortMove, is_marker, port_move
from ivc_tasks.resources.ports import address_changes, kept_port_name, public_addresses
from ivc_tasks.spec import load_spec
from ivc_tasks.steps.rotate.decide import FINISH, FORWARD, ROLLBACK, ROTATE
from ivc_tasks.steps.rotate.phases import plan_phases

SPEC = """
[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"

[servers.web]
networks = ["private"]
floating_ip = true

[servers.pub]
networks = ["ext-net", "private"]
keep_address = ["ext-net"]
"""


# the fixture spec is conftest's
def cloud_of(conn, floating_network=None):
    return ticking_cloud(conn, "test", floating_network=floating_network)


@pytest.mark.parametrize("external, shared, public", [
    (True, False, True),    # a floating IP pool, or a provider network attached directly
    (True, True, True),     # OVHcloud's Ext-Net
    (False, True, True),    # a shared provider network
    (False, False, False),  # a project network
])
def test_is_public(external, shared, public):
    assert is_public(NS(is_router_external=external, is_shared=shared)) is public
    assert is_public(NS(is_router_external=external)) is external  # no `shared` shown


@pytest.mark.parametrize("kind, old, expected", [
    (ROTATE, "ACTIVE", ["stop", "move-port", "create", "ready-gate", "move-volumes",
                        "move-floating-ip", "healthy-gate", "delete-old", "finish"]),
    (ROTATE, "SHUTOFF", ["stop", "move-port", "create", "ready-gate", "move-volumes",
                         "move-floating-ip", "healthy-gate", "delete-old", "finish"]),
    (ROLLBACK, "ACTIVE", ["rollback", "stop", "move-port", "create", "ready-gate",
                          "move-volumes", "move-floating-ip", "healthy-gate", "delete-old",
                          "finish"]),
    # the new server holds the port already, or the old one cannot give it: the usual order
    (FORWARD, "SHUTOFF", ["ready-gate", "stop", "move-volumes", "move-floating-ip",
                          "healthy-gate", "delete-old", "finish"]),
    (FINISH, None, ["move-volumes", "move-floating-ip", "healthy-gate", "finish"]),
    # Nova detaches no interface from a server in ERROR: deleting it frees the kept port
    (ROTATE, "ERROR", ["delete-old", "create", "move-volumes", "move-floating-ip",
                       "healthy-gate", "finish"]),
])
def test_a_kept_port_moves_before_the_new_server_is_made(kind, old, expected):
    assert plan_phases(kind, old_status=old, keep_port=True) == expected
    assert "move-port" not in plan_phases(kind, old_status=old)


def test_keep_address_names_a_network_of_the_server(spec, tmp_path):
    assert spec.servers["pub"].keep_address == ("ext-net",)
    assert spec.servers["web"].keep_address == ()
    bad = tmp_path / "bad.toml"
    bad.write_text(SPEC.replace('keep_address = ["ext-net"]', 'keep_address = ["Ext-Net"]'))
    with pytest.raises(ConfigError) as info:
        load_spec(bad, env_name="test")
    assert str(info.value) == (
        f"{bad}: servers.pub.keep_address[0]: 'Ext-Net' is not one of the server's networks "
        "(ext-net, private); name a network of its networks list, written the same way")


def test_addresses_public_only_and_what_changed():
    nets = [NS(id="n-ext", name="ext-net", is_router_external=True, is_shared=True),
            NS(id="n-priv", name="private", is_router_external=False, is_shared=False)]
    port = NS(id="p1", network_id="n-ext", fixed_ips=[{"ip_address": "192.0.2.5"}])
    private = NS(id="p2", network_id="n-priv", fixed_ips=[{"ip_address": "10.0.0.5"}])
    before = public_addresses([port, private, port], nets)  # a port listed twice counts once
    assert before == {"ext-net": ["192.0.2.5"]}
    assert address_changes(before, before, {"ext-net"}) == [
        {"network": "ext-net", "old": ["192.0.2.5"], "new": ["192.0.2.5"], "kept": True}]
    assert address_changes(before, {"ext-net": ["192.0.2.9"]}) == [
        {"network": "ext-net", "old": ["192.0.2.5"], "new": ["192.0.2.9"], "kept": False}]


def test_the_move_under_way_lives_in_the_port_tags_and_the_new_servers_markers():
    port = NS(tags=["other", "ivc-rotation:r1", "ivc-from:srv-1", "ivc-was:ACTIVE"])
    assert port_move(port) == PortMove(rotation="r1", from_id="srv-1", was="ACTIVE")
    assert port_move(NS(tags=["other"])) is None
    assert is_marker("ivc_port:p1") and not is_marker("ivc_vol:data")
    assert kept_port_name("prod", "web1", "Ext-Net") == "ivc-prod-web1-Ext-Net"


# -- which external network a floating IP comes from ------------------------------------------
def two_external(conn):
    conn.networks.append(NS(id="net-pub2", name="public2", is_router_external=True))
    return conn


def test_several_external_networks_the_routers_one_is_taken(spec):
    conn = two_external(FakeConnection())
    conn.routers = [Resource(id="r1", external_gateway_info={"network_id": "net-pub2"})]
    conn.ports.append(Resource(id="p-r1", device_id="r1", network_id="net-priv",
                               device_owner="network:router_interface", fixed_ips=[]))
    cloud = cloud_of(conn)
    nets = [n for n in conn.networks if n.name == "private"]
    plan = plan_floating(cloud, spec, spec.servers["web"], nets)
    assert plan.network.id == "net-pub2" and "router of private" in plan.why
    # IVC_FLOATING_NETWORK still wins
    chosen = plan_floating(cloud_of(conn, "public"), spec, spec.servers["web"], nets)
    assert chosen.network.id == "net-pub"


def test_several_external_networks_and_no_router_a_new_floating_ip_needs_the_setting(spec):
    conn = two_external(FakeConnection())
    nets = [n for n in conn.networks if n.name == "private"]
    with pytest.raises(ConfigError) as info:
        plan_floating(cloud_of(conn), spec, spec.servers["web"], nets)
    assert str(info.value) == (
        f"{spec.path}: servers.web.floating_ip: several external networks (public, public2) and "
        "no router of the server's networks reaches one of them; set IVC_FLOATING_NETWORK in the "
        "env file to the one to use")
    # moving an existing floating IP (rotate) needs no choice
    plan = plan_floating(cloud_of(conn), spec, spec.servers["web"], nets, required=False)
    assert plan.network is None and "IVC_FLOATING_NETWORK" in plan.problem


def test_a_server_only_on_public_networks_takes_no_floating_ip(spec):
    conn = FakeConnection()
    shared = NS(id="net-ext", name="ext-net", is_router_external=False, is_shared=True)
    with pytest.raises(ConfigError) as info:
        plan_floating(cloud_of(conn), spec, spec.servers["web"], [shared])
    assert str(info.value) == (
        f"{spec.path}: servers.web.floating_ip: the server is only on public networks (ext-net), "
        "where it has a public address already; set floating_ip = false")


def test_the_ovh_style_example_declarations_load():
    from pathlib import Path

    spec = load_spec(Path(__file__).resolve().parents[2] / "env" / "example.toml",
                     env_name="example")
    assert spec.servers["web1"].keep_address == ("Ext-Net",)
    assert spec.servers["worker1"].floating_ip and not spec.servers["app1"].keep_address


def test_the_local_cloud_writes_an_entry_for_the_ovh_style_project(tmp_path):
    from ivc_tasks.devcloud import lifecycle, seed
    from ivc_tasks.devcloud.layout import Layout

    entries = seed.cloud_entries({"demo": "d", "admin": "a"})
    assert entries["ivc-local-ovh"]["auth"]["project_name"] == "ivc-ovh"
    assert entries["ivc-local-ovh"]["auth"]["username"] == "ivc-ovh"
    layout = Layout(tmp_path)
    layout.make_dirs()
    layout.stamp("seeded").write_text("ok")  # seeded by code without the second shape
    assert not lifecycle._seeded(layout)
    layout.stamp("seeded").write_text(seed.SEED_VERSION)
    assert lifecycle._seeded(layout)
