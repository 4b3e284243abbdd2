"""The OVH-style shape on the local cloud (issue 10): project ``ivc-ovh`` (clouds.yaml entry
``ivc-local-ovh``) sees the shared external network ``ext-net`` and attaches servers to it
directly; their public address is their port's, with no floating IP.

- a server whose declaration keeps its address (``keep_address = ["ext-net"]``) keeps the same
  port (IP and MAC) across two rotates; a run killed after the port left the old server ends,
  rerun, with one server holding it; the outage is measured and printed;
- without the declaration the rotate says, before (dry run) and after (text and JSON), that
  the public address changes;
- a server only on the shared external network gets no config drive;
- the demo project (``ivc-local``) still sees one external network, ``public``;
- with two external networks visible (``public``, ``ext-net``), a new floating IP comes from
  the one the router of the server's network reaches, and a rotate moves it without
  ``IVC_FLOATING_NETWORK``.

Run alone: ``python3 -m pytest tests/integration/test_public_network.py -s`` prints the outages.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.integration.conftest import CLOUDS_YAML, Ivc, _connect
from tests.integration.rotateworld import server_gone

pytestmark = pytest.mark.cloud

OVH_CLOUD = "ivc-local-ovh"
KEPT_PHASES = ["preflight", "stop", "move-port", "create", "ready-gate", "move-volumes",
               "move-floating-ip", "healthy-gate", "delete-old", "finish"]
PLAIN_PHASES = ["preflight", "create", "ready-gate", "stop", "move-volumes", "move-floating-ip",
                "healthy-gate", "delete-old", "finish"]
SPEC = """
[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
keypair = "ivc-demo"

[servers.PREFIX-kept]
networks = ["ext-net"]
keep_address = ["ext-net"]

[servers.PREFIX-plain]
networks = ["ext-net"]

[servers.PREFIX-routed]
networks = ["ovh-private"]
floating_ip = true
"""


@pytest.fixture(scope="module")
def ovh_conn():
    return _connect(OVH_CLOUD)


@pytest.fixture
def ovh(tmp_path, unique, ovh_conn):
    """ivc run as the ``ivc-ovh`` user (its own env file); what it made is deleted afterwards,
    the kept ports included."""
    helper = Ivc(tmp_path, unique, ovh_conn)
    helper.env_file.write_text(f"OS_CLOUD={OVH_CLOUD}\nOS_CLIENT_CONFIG_FILE={CLOUDS_YAML}\n"
                               "IVC_POLL_INTERVAL=0.5\n")
    helper.write_spec(SPEC)
    yield helper
    helper.cleanup()
    for port in ovh_conn.network.ports():
        if (port.name or "").startswith(f"ivc-{unique}-"):
            ovh_conn.network.delete_port(port)


def the_server(ivc, name):
    servers = [s for s in ivc.servers() if s.metadata.get("ivc_name") == name]
    assert len(servers) == 1, [(s.id, s.status) for s in servers]
    return ivc.conn.compute.get_server(servers[0].id)


def ports_of(conn, server_id, network="ext-net"):
    net = conn.network.find_network(network, ignore_missing=False)
    return [p for p in conn.network.ports(device_id=server_id) if p.network_id == net.id]


def ip_of(port):
    return port.fixed_ips[0]["ip_address"]


def rotate_json(ivc, name):
    t0 = time.monotonic()
    run = ivc.run("rotate", "--name", name, "--json")
    assert run.code == 0, run
    rotation = run.data["rotations"][0]
    return run, rotation, time.monotonic() - t0


def no_markers(server):
    return not any(k.startswith(("ivc_rotation", "ivc_role", "ivc_replaces", "ivc_was",
                                 "ivc_port:", "ivc_fip:")) for k in server.metadata)


# -- the networks each project sees ----------------------------------------------------------------
def test_the_demo_project_sees_one_external_network_and_ivc_ovh_sees_ext_net_shared(conn,
                                                                                      ovh_conn):
    demo = {n.name: n for n in conn.network.networks()}
    assert [n for n, net in demo.items() if net.is_router_external] == ["public"]
    assert "ext-net" not in demo
    ovh = {n.name: n for n in ovh_conn.network.networks()}
    assert sorted(n for n, net in ovh.items() if net.is_router_external) == ["ext-net", "public"]
    assert ovh["ext-net"].is_shared is True and ovh["public"].is_shared is False


# -- keep_address: the same port across two rotates --------------------------------------------
def test_a_kept_address_survives_two_rotates_and_the_outage_is_printed(ovh, capsys):
    name = f"{ovh.prefix}-kept"
    dry = ovh.run("create-instance", "--name", name, "--dry-run", "--json")
    assert dry.code == 0, dry
    assert [a["kind"] for a in dry.data["actions"]] == ["port", "server"], dry.data["actions"]
    deploy = ovh.run("create-instance", "--name", name, "--json")
    assert deploy.code == 0, deploy
    assert [a["kind"] for a in deploy.data["actions"]][:1] == ["port"], deploy.data["actions"]
    server = the_server(ovh, name)
    assert not server.has_config_drive, "a server only on a shared external network needs none"
    (port,) = ports_of(ovh.conn, server.id)
    assert port.name == f"ivc-{ovh.env}-{name}-ext-net"
    address, mac = ip_of(port), port.mac_address

    dry = ovh.run("rotate", "--name", name, "--dry-run", "--json")
    assert dry.code == 0, dry
    notes = {p["phase"]: p.get("note", "") for p in dry.data["phases"]}
    assert list(notes) == KEPT_PHASES
    assert f"keeps {address} on ext-net" in notes["create"] and port.id in notes["move-port"]
    outages = []
    for gen in (2, 3):
        old_id = server.id
        run, rotation, wall = rotate_json(ovh, name)
        assert [p["phase"] for p in run.data["phases"]] == KEPT_PHASES
        assert rotation["addresses"] == [{"network": "ext-net", "old": [address],
                                          "new": [address], "kept": True}]
        server = the_server(ovh, name)
        assert server.id != old_id and server.metadata["ivc_gen"] == str(gen)
        assert not server.has_config_drive and no_markers(server)
        (now,) = ports_of(ovh.conn, server.id)
        assert (now.id, ip_of(now), now.mac_address) == (port.id, address, mac)
        assert not [t for t in (now.tags or []) if t.startswith("ivc-")]
        assert server_gone(ovh.conn, old_id)
        outages.append((rotation["outage_seconds"], wall))
    with capsys.disabled():
        for i, (outage, wall) in enumerate(outages, 1):
            print(f"\n[ext-net, keep_address] rotate {i}: outage {outage:.1f} s (stop, detach "
                  f"the port, boot with it), rotate wall time {wall:.1f} s; address {address} "
                  "kept")


def test_killed_after_the_port_left_the_old_server_a_rerun_finishes_with_it(ovh):
    name = f"{ovh.prefix}-kept"
    made = ovh.run("create-instance", "--name", name)
    assert made.code == 0, made
    server = the_server(ovh, name)
    (port,) = ports_of(ovh.conn, server.id)
    proc = subprocess.Popen([*ovh_command(), "rotate", "--name", name], cwd=ovh_cwd(),
                            env=ovh_environ(ovh), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the port is off the old server once create starts
        if line.startswith("phase: create ("):
            proc.kill()
            break
    proc.wait(timeout=60)
    proc.stderr.close()
    proc.stdout.close()
    rerun = ovh.run("rotate", "--name", name, "--json")
    assert rerun.code == 0, rerun
    final = the_server(ovh, name)
    assert final.status == "ACTIVE" and no_markers(final)
    (now,) = ports_of(ovh.conn, final.id)
    assert (now.id, ip_of(now)) == (port.id, ip_of(port))
    assert not [t for t in (now.tags or []) if t.startswith("ivc-")]


def ovh_command():
    import sys
    return [sys.executable, "-m", "invoke"]


def ovh_cwd():
    from tests.integration.conftest import ROOT
    return ROOT


def ovh_environ(ivc):
    import os
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("IVC_", "OS_"))}
    environ.update({"IVC_ROOT": str(ivc.root), "IVC_ENV": ivc.env})
    return environ


# -- without keep_address: told before and after -----------------------------------------------------
def test_without_keep_address_the_rotate_says_the_public_address_changes(ovh, capsys):
    name = f"{ovh.prefix}-plain"
    made = ovh.run("create-instance", "--name", name)
    assert made.code == 0, made
    server = the_server(ovh, name)
    assert not server.has_config_drive
    (port,) = ports_of(ovh.conn, server.id)
    before = ip_of(port)
    dry = ovh.run("rotate", "--name", name, "--dry-run")
    assert dry.code == 0, dry
    assert f"a NEW address on ext-net (now {before})" in dry.out
    assert 'keep_address = ["ext-net"]' in dry.out + dry.err
    run, rotation, wall = rotate_json(ovh, name)
    assert [p["phase"] for p in run.data["phases"]] == PLAIN_PHASES
    (change,) = rotation["addresses"]
    after = the_server(ovh, name)
    (now,) = ports_of(ovh.conn, after.id)
    assert change == {"network": "ext-net", "old": [before], "new": [ip_of(now)], "kept": False}
    assert ip_of(now) != before
    assert any("changed" in w and before in w for w in run.data["warnings"])
    text = ovh.run("rotate", "--name", name)
    assert text.code == 0, text
    assert f"address on ext-net: {ip_of(now)} -> " in text.out and "(changed)" in text.out
    with capsys.disabled():
        print(f"\n[ext-net, no keep_address] rotate: outage {rotation['outage_seconds']:.1f} s "
              f"(stop only: the new server booted first), wall time {wall:.1f} s; address "
              f"{before} -> {ip_of(now)}")


# -- two external networks: the router's ---------------------------------------------------------
def test_a_floating_ip_comes_from_the_network_the_router_reaches_and_moves(ovh, capsys):
    name = f"{ovh.prefix}-routed"
    made = ovh.run("create-instance", "--name", name, "--json")
    assert made.code == 0, made
    server = the_server(ovh, name)
    assert server.has_config_drive  # only on a private network
    ext = ovh.conn.network.find_network("ext-net", ignore_missing=False)
    (fip,) = [f for f in ovh.conn.network.ips() if f.description == f"ivc:{ovh.env}:{name}"]
    assert fip.floating_network_id == ext.id
    run, rotation, wall = rotate_json(ovh, name)  # two external networks: no exit 2
    assert rotation["addresses"] == []  # no public network: the floating IP moved
    moved = ovh.conn.network.get_ip(fip.id)
    (port,) = ports_of(ovh.conn, the_server(ovh, name).id, "ovh-private")
    assert moved.port_id == port.id
    with capsys.disabled():
        print(f"\n[ovh-private + floating IP from ext-net] rotate: outage "
              f"{rotation['outage_seconds']:.1f} s, wall time {wall:.1f} s; floating IP "
              f"{fip.floating_ip_address} kept")


def test_a_failed_create_after_the_port_moved_puts_it_back_on_the_old_server(ovh, tmp_path):
    from tests.integration.faultproxy import proxied_clouds_yaml, start_proxies

    name = f"{ovh.prefix}-kept"
    made = ovh.run("create-instance", "--name", name)
    assert made.code == 0, made
    server = the_server(ovh, name)
    (port,) = ports_of(ovh.conn, server.id)
    proxies = start_proxies("compute", "network")
    try:
        path = proxied_clouds_yaml(CLOUDS_YAML, tmp_path / "clouds.yaml", proxies,
                                   cloud=OVH_CLOUD)
        fault = proxies["compute"].add("POST", r"/v2.1/servers$", 500)
        run = ovh.run("rotate", "--name", name, env={
            "OS_CLOUD": "ivc-proxied", "OS_CLIENT_CONFIG_FILE": str(path)})
    finally:
        for proxy in proxies.values():
            proxy.close()
    assert run.code == 3 and fault.hits == 1, run
    assert "failed in phase create" in run.err and "rolled back" in run.err, run
    back = the_server(ovh, name)
    assert (back.id, back.status) == (server.id, "ACTIVE"), "the old server serves again"
    (now,) = ports_of(ovh.conn, back.id)
    assert (now.id, ip_of(now), now.mac_address) == (port.id, ip_of(port), port.mac_address)
    assert not [t for t in (now.tags or []) if t.startswith("ivc-")]


def test_a_kept_port_on_a_server_in_error_is_freed_by_deleting_it_then_reused(ovh):
    """Nova detaches no interface from a server in ERROR: it is deleted first (which unbinds a
    port it was given), and the new server boots with the port."""
    name = f"{ovh.prefix}-kept"
    made = ovh.run("create-instance", "--name", name)
    assert made.code == 0, made
    server = the_server(ovh, name)
    (port,) = ports_of(ovh.conn, server.id)
    _connect("ivc-local-admin").compute.reset_server_state(server, "error")
    run, rotation, _ = rotate_json(ovh, name)
    assert [p["phase"] for p in run.data["phases"]] == [
        "preflight", "delete-old", "create", "move-volumes", "move-floating-ip", "healthy-gate",
        "finish"]
    assert rotation["addresses"][0]["kept"] is True
    final = the_server(ovh, name)
    assert final.id != server.id and final.status == "ACTIVE" and no_markers(final)
    (now,) = ports_of(ovh.conn, final.id)
    assert (now.id, ip_of(now)) == (port.id, ip_of(port))
