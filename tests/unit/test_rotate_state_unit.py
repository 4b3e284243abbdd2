"""rotate against the in-memory fake, for the paths issue 15 restructured: a kept port
(``keep_address``) moving forward and back, the keep_address + ERROR path, the first failure of
a parallel run stopping new rotations, and the dry run's create request being the executor's.

Each test checks what the cloud holds at the end (servers, the kept port, its tags, volumes,
markers), not only what rotate returned.
"""

from __future__ import annotations

import threading

import pytest
from declared import DEFAULTS
from fakecloud import http_error
from test_rotate_unit import ENV, LOCK, MARKERS, new_cloud, tags

from ivc_tasks.errors import CloudError, RolledBack
from ivc_tasks.steps.rotate import RotateFailed, RotateOptions, rotate

VOLUMES = ("web1-data", "web1-logs")  # the fake cloud holds them (conftest's conn)
KEPT = DEFAULTS + """
[servers.web1]
networks = ["public"]
keep_address = ["public"]
volumes = ["web1-data", "web1-logs"]
metadata = { role = "web" }
"""


@pytest.fixture
def kept_spec(spec_of):    # spec_of and conn are conftest's
    return spec_of(KEPT)


def deployed_with_kept_port(conn, spec, *, status="ACTIVE"):
    """web1 as a deploy with ``keep_address`` leaves it: ivc's port on the public network."""
    old = conn.add_server("web1", metadata=tags(spec, 1, volumes=conn.volumes), status=status)
    port = conn._add_port(old.id, "net-pub", given=True, name=f"ivc-{ENV}-web1-public",
                          description=f"ivc:{ENV}:web1")
    for volume in conn.volumes:
        conn._attach(volume.id, old.id)
    return old, port


def web1(conn):
    return [s for s in conn.servers if s.metadata.get("ivc_name") == "web1"]


def no_markers(server):
    return not [k for k in server.metadata
                if k in MARKERS or k.startswith(("ivc_fip:", "ivc_port:"))]


# -- keep_address: forward -----------------------------------------------------------------------
def test_a_kept_port_moves_to_the_new_server_with_its_address(conn, kept_spec):
    old, port = deployed_with_kept_port(conn, kept_spec)
    address = port.fixed_ips[0]["ip_address"]
    result = rotate(new_cloud(conn), kept_spec, ["web1"])
    report = result.rotations[0]
    assert [p.name for p in report.phases] == [
        "preflight", "stop", "move-port", "create", "ready-gate", "move-volumes",
        "move-floating-ip", "healthy-gate", "delete-old", "finish"]
    (new,) = web1(conn)
    assert new.id == report.new_id and conn.deleted == [old.id]
    # the very port (same id, same address) is on the new server; it outlived the old one
    assert conn.ports_of(new.id) == [port] and port.fixed_ips[0]["ip_address"] == address
    assert port.tags == [] and no_markers(new)
    # the create request gave it the port and recorded it and the old server's status
    assert new.body["networks"] == [{"port": port.id}]
    assert new.body["metadata"][f"ivc_port:{port.id}"] == "net-pub"
    assert new.body["metadata"]["ivc_was"] == "ACTIVE"
    assert new.body["metadata"]["ivc_replaces"] == old.id
    assert all(conn.holders(v) == [new.id] for v in conn.volumes)
    assert report.addresses == [{"network": "public", "old": [address], "new": [address],
                                 "kept": True}]
    # tagged with the move before it left the old server, untagged by finish
    tag_calls = [args[1] for key, args, _ in conn.calls if key == "network.set_tags"]
    assert tag_calls == [[f"ivc-rotation:{report_run(conn)}", f"ivc-from:{old.id}",
                          "ivc-was:ACTIVE"], []]
    assert LOCK not in {k.name for k in conn.keys}


def report_run(conn):
    """The rotation id this run wrote (the new server's create request)."""
    return next(s.body["metadata"]["ivc_rotation"] for s in conn.servers if hasattr(s, "body"))


# -- keep_address: rollback ----------------------------------------------------------------------
def test_a_failure_after_the_port_moved_puts_it_back_on_the_old_server(conn, kept_spec):
    old, port = deployed_with_kept_port(conn, kept_spec)
    conn.fail_next("compute.create_volume_attachment", http_error(500, "Unexpected API Error"))
    with pytest.raises(RolledBack) as info:
        rotate(new_cloud(conn), kept_spec, ["web1"])
    assert "failed in phase move-volumes" in str(info.value)
    (server,) = web1(conn)
    assert server.id == old.id and server.status == "ACTIVE"  # started again: it was ACTIVE
    assert conn.ports_of(old.id) == [port] and port.tags == []
    assert len(conn.deleted) == 1 and conn.deleted[0] != old.id  # the new server
    assert all(conn.holders(v) == [old.id] for v in conn.volumes)
    assert no_markers(server)
    assert conn.count("compute.create_server_interface") == 1  # the port went back once


def test_a_create_refused_after_the_port_moved_gives_it_back(conn, kept_spec):
    old, port = deployed_with_kept_port(conn, kept_spec)
    conn.fail_next("compute.create_server", http_error(400, "Invalid request"))
    with pytest.raises(RolledBack) as info:
        rotate(new_cloud(conn), kept_spec, ["web1"])
    assert "failed in phase create" in str(info.value)
    (server,) = web1(conn)
    assert server.id == old.id and server.status == "ACTIVE"
    assert conn.ports_of(old.id) == [port] and port.tags == [] and conn.deleted == []


def test_a_resumed_port_move_rolls_back_with_the_status_its_tags_recorded(conn, kept_spec):
    # a killed run stopped the old server and detached the port; the new server never came:
    # the port's tags are the only record that the old server was ACTIVE
    old, port = deployed_with_kept_port(conn, kept_spec, status="SHUTOFF")
    port.device_id = ""
    port.tags = ["ivc-rotation:rot-1", f"ivc-from:{old.id}", "ivc-was:ACTIVE"]
    conn.fail_next("compute.create_server", http_error(400, "Invalid request"))
    with pytest.raises(RolledBack):
        rotate(new_cloud(conn), kept_spec, ["web1"])
    (server,) = web1(conn)
    assert server.id == old.id and server.status == "ACTIVE"  # ivc-was: started again
    assert conn.ports_of(old.id) == [port] and port.tags == []


# -- keep_address + ERROR: the old server goes first ------------------------------------------------
def test_keep_address_error_path_says_the_old_server_is_deleted_and_none_made(conn,
                                                                              kept_spec):
    old, port = deployed_with_kept_port(conn, kept_spec, status="ERROR")
    conn.fail_next("compute.create_server", http_error(400, "Invalid request"))
    with pytest.raises(CloudError) as info:
        rotate(new_cloud(conn), kept_spec, ["web1"])
    message = str(info.value)
    assert not isinstance(info.value, RolledBack) and info.value.exit_code == 1
    assert message.startswith(f"rotate web1: the old server {old.id} is deleted (it was in "
                              "ERROR; deleting it freed its kept port) but phase create "
                              "failed and no new server was made: ")
    assert message.endswith("run `invoke rotate --name web1` again to finish it (it creates "
                            "the server)")
    assert "?" not in message and "is ACTIVE" not in message
    assert conn.deleted == [old.id] and web1(conn) == [] and port.device_id == ""
    # and the rerun does what it says (once Cinder has detached the deleted server's volumes)
    conn.settle()
    result = rotate(new_cloud(conn), kept_spec, ["web1"])
    (new,) = web1(conn)
    assert result.rotations[0].decision == "create" and conn.ports_of(new.id) == [port]


# -- parallel: the first failure stops new rotations -------------------------------------------------
THREE = """
[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
userdata = "t.j2"

[servers.web1]
networks = ["private"]

[servers.web2]
networks = ["private"]

[servers.web3]
networks = ["private"]
"""


def test_the_first_failure_of_a_parallel_run_stops_new_rotations(conn, spec_of,
                                                                monkeypatch):
    spec = spec_of(THREE)
    olds = {}
    for name in ("web1", "web2", "web3"):
        meta = {**tags(spec, 1), "ivc_name": name}
        meta.pop("role", None)
        meta["ivc_userdata"] = tags(spec, 1)["ivc_userdata"]
        olds[name] = conn.add_server(name, metadata=meta, networks=["net-priv"])
    # web1 and web2 run side by side (parallel 2); web1's create fails once web2 has started,
    # web2's create waits until web1 has rolled back: web3 must then never start
    web2_started, web1_failed = threading.Event(), threading.Event()
    from ivc_tasks.steps.rotate import executor, forward
    create, roll_back = forward.create_server, executor.roll_back

    def create_server(cloud, name, body):
        if name == "web1":
            assert web2_started.wait(10), "web2 never started"
        elif name == "web2":
            web2_started.set()
            assert web1_failed.wait(10), "web1's rotation never failed"
        return create(cloud, name, body)

    def rolled_back(r, s, phase, cause):
        try:
            roll_back(r, s, phase, cause)
        finally:
            web1_failed.set()

    monkeypatch.setattr(forward, "create_server", create_server)
    monkeypatch.setattr(executor, "roll_back", rolled_back)
    conn.fail_next("compute.create_server", http_error(400, "Invalid request"))
    with pytest.raises(RotateFailed) as info:
        rotate(new_cloud(conn), spec, ["web1", "web2", "web3"],
               options=RotateOptions(parallel=2))
    reports = {r.name: r for r in info.value.result.rotations}
    assert info.value.exit_code == 3  # the one failure rolled back
    assert "failed in phase create" in reports["web1"].error
    assert reports["web2"].error is None and reports["web2"].outcome == "rotated"
    assert reports["web3"].error == "not started: another rotation of this run failed first"
    assert reports["web3"].phases == [] and olds["web3"] in conn.servers
    assert [s.id for s in conn.servers if s.metadata["ivc_name"] == "web3"] == [olds["web3"].id]
    assert conn.deleted == [olds["web2"].id]


# -- the dry run shows the request the executor sends ----------------------------------------------
def test_the_dry_run_create_request_is_the_one_the_executor_sends(conn, kept_spec):
    old, port = deployed_with_kept_port(conn, kept_spec)
    dry = rotate(new_cloud(conn), kept_spec, ["web1"], dry_run=True)
    (shown,) = [a for a in dry.rotations[0].actions if a.verb == "create"]
    done = rotate(new_cloud(conn), kept_spec, ["web1"])
    (sent,) = [a for a in done.rotations[0].actions if a.verb == "create" and a.kind == "server"]
    shown, sent = shown.detail["request"], sent.detail["request"]
    assert shown["user_data"] == sent["user_data"] and "sha256" in str(sent["user_data"])
    assert shown["networks"] == sent["networks"] == [{"port": port.id}]
    this_run = {k for k, v in sent["metadata"].items() if v == report_run(conn)}
    assert this_run == {"ivc_run", "ivc_rotation"}
    assert {k: v for k, v in shown["metadata"].items() if k not in this_run} == \
        {k: v for k, v in sent["metadata"].items() if k not in this_run}
    assert {shown["metadata"][k] for k in this_run} == {"<this run>"}
    assert shown == {**sent, "metadata": shown["metadata"]}
