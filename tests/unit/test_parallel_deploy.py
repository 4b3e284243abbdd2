"""deploy --parallel against the in-memory fake: security groups first, servers side by side,
one shared poller, and a failure that stops new work while the running servers finish."""

import logging
import threading

import pytest
from fakecloud import http_error, ticking_cloud

from ivc_tasks.steps.deploy import DeployFailed, deploy

HEAD = """
[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
keypair = "ivc-demo"

[secgroups.web]
description = "web"
rules = [ { protocol = "tcp", ports = "22", remote_ip_prefix = "0.0.0.0/0" } ]
"""
SERVER = """
[servers.{name}]
networks = ["private"]
security_groups = ["web"]
volumes = ["{name}-data"]
"""
NAMES = ["web1", "web2", "web3"]
SPEC = HEAD + "".join(SERVER.format(name=n) for n in NAMES)  # conftest's spec fixture loads it
VOLUMES = [f"{name}-data" for name in NAMES]  # conftest's conn holds them


@pytest.fixture
def conn(conn):
    conn.boot_polls = 3  # each boot is seen ACTIVE at the third look
    return conn


def new_cloud(conn, parallel=1):
    """No sleeping, a clock that ticks 1 ms at every look: the shared poller (whose schedule
    tests/unit/test_poller.py checks) spaces its lists by their duration on that clock, so
    its threads wait a few ms at most; a wait that never ends still times out (300 s of
    ticks)."""
    return ticking_cloud(conn, "test", parallel=parallel, tick=0.001)


def boot_fault_for(conn, monkeypatch, name, message="No valid host was found", together=3):
    """The server created for ``name`` goes to ERROR at boot (whichever thread creates it);
    the first ``together`` creates wait for each other (all running when one fails)."""
    original = conn._call
    barrier = threading.Barrier(together)

    def call(key, method, args, kwargs):
        if key != "compute.create_server":
            return original(key, method, args, kwargs)
        barrier.wait(timeout=10)  # outside the fake's lock
        server = original(key, method, args, kwargs)
        if kwargs["name"] == name:
            conn.server(server.id).boot_fault = message
        return server
    monkeypatch.setattr(conn, "_call", call)


def test_parallel_deploy_creates_every_server_after_the_groups(conn, spec, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="ivc")
    boot_fault_for(conn, monkeypatch, None)  # the three boots under way together
    result = deploy(new_cloud(conn, parallel=3), spec)
    mutations = conn.mutations(locks=False)
    assert mutations[0] == "network.create_security_group"
    assert mutations.index("network.create_security_group_rules") < \
        mutations.index("compute.create_server")
    assert sorted(s.name for s in conn.servers) == NAMES
    assert all(s.status == "ACTIVE" for s in conn.servers)
    assert [(s.name, s.outcome, s.changed) for s in result.servers] == \
        [(n, "done", True) for n in NAMES]
    lines = result.lines()
    assert [line.split(":")[0] for line in lines[-3:]] == NAMES  # one summary per server
    assert result.to_dict()["servers"][0]["name"] == "web1"
    # every line a server's job logged names it
    job_lines = [r.getMessage() for r in caplog.records if "web" in r.getMessage()
                 and "phase" not in r.getMessage()]
    assert any(m.startswith("[web2] ") for m in job_lines)


def test_parallel_deploy_one_server_fails_the_others_finish(conn, spec, monkeypatch):
    boot_fault_for(conn, monkeypatch, "web2")
    with pytest.raises(DeployFailed) as info:
        deploy(new_cloud(conn, parallel=3), spec)
    exc = info.value
    assert exc.exit_code == 1
    by_name = {s.name: s for s in exc.result.servers}
    assert by_name["web1"].outcome == by_name["web3"].outcome == "done"
    assert by_name["web2"].outcome == "failed" and by_name["web2"].failed_step == "create-instance"
    assert by_name["web2"].changed  # a server in ERROR was made
    message = str(exc)
    assert "1 of 3 servers failed (web2)" in message
    for name in NAMES:
        assert f"\n  {name}: " in message  # the report names each server
    assert "No valid host was found" in message
    status = {s.name: s.status for s in conn.servers}
    assert status == {"web1": "ACTIVE", "web2": "ERROR", "web3": "ACTIVE"}


def test_the_first_failure_stops_new_work(conn, spec):
    conn.fail_next("compute.create_server", http_error(403, "Quota exceeded for instances"))
    with pytest.raises(DeployFailed) as info:
        deploy(new_cloud(conn, parallel=2), spec)
    outcomes = [(s.name, s.outcome) for s in info.value.result.servers]
    failed = [n for n, o in outcomes if o == "failed"]
    assert len(failed) == 1
    assert ("web3", "not started") in outcomes  # the queue stopped at the failure
    assert "web3" not in {s.name for s in conn.servers}
    assert info.value.exit_code == 1
    assert "web3: not started (an earlier server failed), unchanged" in str(info.value)


def test_parallel_from_the_setting_and_one_worker_is_the_sequential_path(conn, spec):
    result = deploy(new_cloud(conn, parallel=1), spec)
    assert result.servers == []  # sequential: no per-server summary, as before
    # the planning listing, then one look again under each new server's lock; GETs for the waits
    assert conn.count("compute.servers") == 1 + len(spec.servers)
    conn.calls.clear()
    again = deploy(new_cloud(conn, parallel=8), spec)  # nothing to do: unchanged each
    assert not again.changed and conn.mutations() == []
    assert [s.outcome for s in again.servers] == ["done"] * 3
