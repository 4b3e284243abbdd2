"""Issue 10 against the local cloud, run as a user runs ivc (`invoke ... --json`): two servers
sharing a new keypair deploy in one run; a server made by hand under a declared name stops
deploy (exit 2, nothing changed) and is adopted on request (`rotate --adopt`), leaving one
managed server with its volumes and floating IP; a rotate from a second declarations file is
refused (exit 2, nothing changed).
"""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ivc_tasks.resources.servers import present

from .conftest import cloud_state
from .rotateworld import image_named, server_gone

pytestmark = pytest.mark.cloud

HEAD = """
[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
keypair = "ivc-demo"
userdata = "templates/ci.j2"
userdata_vars = { greeting = "hello" }
"""
WEB = HEAD + """
[servers.PREFIX-web]
networks = ["private"]
volumes = ["PREFIX-data", "PREFIX-logs"]
floating_ip = true
"""


def public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH,
                            serialization.PublicFormat.OpenSSH).decode() + " ivc@test"


def holders(conn, volume_id):
    volume = conn.block_storage.get_volume(volume_id)
    return volume.status, sorted(a["server_id"] for a in volume.attachments or [])


def test_two_servers_sharing_a_new_keypair_deploy_in_one_run(ivc, conn):
    (ivc.root / "env" / "k.pub").write_text(public_key() + "\n")
    ivc.write_spec(HEAD.replace('keypair = "ivc-demo"', 'keypair = "PREFIX-key"') + """
[keypairs.PREFIX-key]
public_key_file = "k.pub"

[servers.PREFIX-a]
networks = ["private"]

[servers.PREFIX-b]
networks = ["private"]
""")
    run = ivc.run("deploy", "--json")
    assert run.code == 0, run
    creates = [(a["kind"], a["name"]) for a in run.data["actions"] if a["action"] == "create"]
    assert creates.count(("keypair", f"{ivc.prefix}-key")) == 1
    assert sorted(n for k, n in creates if k == "server") == [f"{ivc.prefix}-a", f"{ivc.prefix}-b"]
    servers = ivc.servers()
    assert sorted(s.key_name for s in servers) == [f"{ivc.prefix}-key"] * 2
    assert all(s.metadata["ivc_spec"] == f"{ivc.env}.toml" for s in servers)
    again = ivc.run("deploy", "--json")
    assert again.code == 0 and not again.data["changed"], again
    assert again.data["mutating_requests"] == 0


def test_a_hand_made_server_stops_deploy_and_is_adopted_on_request(ivc, conn):
    data, logs = ivc.volume("data"), ivc.volume("logs")
    ivc.write_spec(WEB)
    name = f"{ivc.prefix}-web"
    image = image_named(conn, "ivc-tiny")
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    private = conn.network.find_network("private", ignore_missing=False)
    public = conn.network.find_network("public", ignore_missing=False)
    hand = conn.compute.create_server(name=name, image_id=image.id, flavor_id=flavor.id,
                                      networks=[{"uuid": private.id}],
                                      metadata={"made": "by hand"})
    hand = conn.compute.wait_for_server(hand, interval=0.5, wait=120)
    for volume in (data, logs):
        conn.compute.create_volume_attachment(hand, volume)
    for volume in (data, logs):
        conn.block_storage.wait_for_status(volume, "in-use", interval=0.5, wait=120)
    (port,) = list(conn.network.ports(device_id=hand.id))
    fip = conn.network.create_ip(floating_network_id=public.id, port_id=port.id,
                                 description=f"{ivc.prefix} made by hand")
    try:
        before = cloud_state(conn, ivc.prefix, ivc.env)
        run = ivc.run("deploy", "--json")
        assert run.code == 2, run
        assert hand.id in run.data["error"] and f"--adopt {hand.id}" in run.data["error"]
        assert run.data["mutating_requests"] == 0
        assert cloud_state(conn, ivc.prefix, ivc.env) == before

        shown = ivc.run("status", "--json")
        assert shown.code == 0, shown
        entries = [s for s in shown.data["servers"] if s["id"] == hand.id]
        assert entries and entries[0]["managed"] is False

        adopt = ivc.run("rotate", "--name", name, "--adopt", hand.id, "--json")
        assert adopt.code == 0, adopt
        (report,) = adopt.data["rotations"]
        assert report["decision"] == "adopt" and report["old_id"] == hand.id
        (server,) = ivc.servers()
        assert server.id == report["new_id"] and server.status == "ACTIVE"
        assert server.metadata["ivc_gen"] == "1" and server.metadata["ivc_name"] == name
        assert not [k for k in server.metadata if k.startswith(("ivc_rotation", "ivc_fip:"))]
        assert server_gone(conn, hand.id)
        for volume in (data, logs):
            assert holders(conn, volume.id) == ("in-use", [server.id])
        fip = conn.network.get_ip(fip.id)
        assert conn.network.get_port(fip.port_id).device_id == server.id
        assert [s.id for s in present(conn.compute.servers(details=True)) if s.name == name] \
            == [server.id]

        rerun = ivc.run("deploy", "--json")
        assert rerun.code == 0 and not rerun.data["changed"], rerun
    finally:
        conn.network.delete_ip(fip, ignore_missing=True)


def test_a_rotate_from_a_second_declarations_file_is_refused(ivc, conn):
    ivc.volume("data")
    ivc.volume("logs")
    ivc.write_spec(WEB)
    run = ivc.run("deploy", "--json")
    assert run.code == 0, run
    (server,) = ivc.servers()
    assert server.metadata["ivc_spec"] == f"{ivc.env}.toml"
    # file B declares the same server with one volume only (the other is A's)
    (ivc.root / "env" / "b.toml").write_text(
        WEB.replace(', "PREFIX-logs"', "").replace("PREFIX", ivc.prefix))
    before = cloud_state(conn, ivc.prefix, ivc.env)
    for task in (("rotate", "--name", f"{ivc.prefix}-web"), ("deploy",)):
        refused = ivc.run(*task, "--json", env={"IVC_SPEC": "env/b.toml"})
        assert refused.code == 2, refused
        assert "made from other declarations" in refused.data["error"]
        assert f"{ivc.env}.toml" in refused.data["error"]
        assert refused.data["mutating_requests"] == 0
    assert cloud_state(conn, ivc.prefix, ivc.env) == before
    # its own file rotates it, the volumes follow
    again = ivc.run("rotate", "--name", f"{ivc.prefix}-web", "--json")
    assert again.code == 0, again
    (new,) = ivc.servers()
    assert new.id != server.id and new.metadata["ivc_spec"] == f"{ivc.env}.toml"
