"""The local cloud works end to end, driven by plain openstacksdk (no ivc code).

Security group with rules; a server with image, flavor, the private network, security groups,
user_data and config_drive to ACTIVE; a 1 GB volume (a fixture: ivc itself never creates one)
attached, detached, attached to a second server; a floating IP moved between the servers' ports;
servers deleted and the volume found intact and available.
"""

import base64

import pytest

from .rotateworld import image_named

pytestmark = pytest.mark.cloud

USERDATA = "#cloud-config\nhostname: devcloud-test\n"


def _boot(conn, name, secgroup):
    image = image_named(conn, "ivc-tiny")
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    network = conn.network.find_network("private", ignore_missing=False)
    server = conn.compute.create_server(
        name=name, image_id=image.id, flavor_id=flavor.id, networks=[{"uuid": network.id}],
        security_groups=[{"name": secgroup}], key_name="ivc-demo", config_drive=True,
        user_data=base64.b64encode(USERDATA.encode()).decode())
    return conn.compute.wait_for_server(server, status="ACTIVE", interval=0.5, wait=120)


def _port_of(conn, server):
    return next(iter(conn.network.ports(device_id=server.id)))


def test_full_round_trip(conn, admin_conn, unique):
    sg = conn.network.create_security_group(name=f"{unique}-sg", description="devcloud test")
    servers, volume, fip = [], None, None
    try:
        conn.network.create_security_group_rules([
            {"security_group_id": sg.id, "direction": "ingress", "protocol": "tcp",
             "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0"},
            {"security_group_id": sg.id, "direction": "ingress", "protocol": "icmp"},
        ])
        rules = [r for r in conn.network.security_group_rules(security_group_id=sg.id)
                 if r.direction == "ingress"]
        assert sorted((r.protocol, r.port_range_min) for r in rules) == [("icmp", None),
                                                                        ("tcp", 22)]

        first = _boot(conn, f"{unique}-a", sg.name)
        servers.append(first)
        assert first.status == "ACTIVE"
        seen = admin_conn.compute.get_server(first.id)
        assert str(seen.has_config_drive).lower() == "true"
        assert base64.b64decode(seen.user_data).decode() == USERDATA
        assert [g["name"] for g in seen.security_groups] == [sg.name]
        assert list(seen.addresses) == ["private"]

        volume = conn.block_storage.create_volume(name=f"{unique}-vol", size=1,
                                                  metadata={"marker": unique})
        volume = conn.block_storage.wait_for_status(volume, "available", interval=0.5, wait=60)
        conn.compute.create_volume_attachment(first, volume=volume)
        volume = conn.block_storage.wait_for_status(volume, "in-use", interval=0.5, wait=60)
        assert [a["server_id"] for a in volume.attachments] == [first.id]

        conn.compute.delete_volume_attachment(first, volume.id)
        volume = conn.block_storage.wait_for_status(volume, "available", interval=0.5, wait=60)
        assert volume.attachments == []

        second = _boot(conn, f"{unique}-b", sg.name)
        servers.append(second)
        conn.compute.create_volume_attachment(second, volume=volume)
        volume = conn.block_storage.wait_for_status(volume, "in-use", interval=0.5, wait=60)
        assert [a["server_id"] for a in volume.attachments] == [second.id]

        public = conn.network.find_network("public", ignore_missing=False)
        port_a, port_b = _port_of(conn, first), _port_of(conn, second)
        fip = conn.network.create_ip(floating_network_id=public.id, port_id=port_a.id)
        assert conn.network.get_ip(fip.id).port_id == port_a.id
        conn.network.update_ip(fip, port_id=port_b.id)
        assert conn.network.get_ip(fip.id).port_id == port_b.id
        # The devcloud's stand-in for an L3 agent reports the status of an associated IP.
        fip = conn.network.wait_for_status(conn.network.get_ip(fip.id), "ACTIVE",
                                           interval=0.5, wait=30)
        assert fip.status == "ACTIVE"

        for server in servers:
            conn.compute.delete_server(server)
        for server in servers:
            conn.compute.wait_for_delete(server, interval=0.5, wait=120)
        servers.clear()
        volume = conn.block_storage.wait_for_status(volume, "available", interval=0.5, wait=60)
        assert volume.attachments == []
        assert volume.metadata["marker"] == unique
        assert volume.size == 1
    finally:
        if fip is not None:
            conn.network.delete_ip(fip, ignore_missing=False)
        for server in servers:
            conn.compute.delete_server(server, ignore_missing=False)
            conn.compute.wait_for_delete(server, interval=0.5, wait=120)
        if volume is not None:
            conn.block_storage.wait_for_status(volume, "available", interval=0.5, wait=60)
            conn.block_storage.delete_volume(volume, ignore_missing=False)
        conn.network.delete_security_group(sg, ignore_missing=False)


def test_demo_resources_are_seeded(conn):
    assert image_named(conn, "ivc-tiny") is not None
    assert {f.name for f in conn.compute.flavors()} >= {"m1.tiny", "m1.small"}
    assert conn.network.find_network("public", ignore_missing=False).is_router_external is True
    assert conn.network.find_network("private", ignore_missing=False) is not None
    assert conn.compute.find_keypair("ivc-demo", ignore_missing=False) is not None
    names = {v.name: v.status for v in conn.block_storage.volumes()}
    assert names.get("web1-data") in ("available", "in-use")
    assert names.get("web1-logs") in ("available", "in-use")
