"""rotate, status and destroy against the local cloud, run as a user runs them (``invoke ...`` in
a subprocess), including crashes (SIGKILL at every phase), faults injected at the HTTP level
between ivc and the real services (``faultproxy``), and two runs racing for the same server.

One environment (a server with two volumes and a floating IP) serves the tests of this module in
order; each test starts by checking that the server is whole, and leaves it whole.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.integration.faultproxy import proxied_clouds_yaml, start_proxies
from tests.integration.rotateworld import CLOUDS_YAML, World, connection

pytestmark = pytest.mark.cloud

PHASES = ["preflight", "create", "ready-gate", "stop", "move-volumes", "move-floating-ip",
          "healthy-gate", "delete-old", "finish"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    unique = f"t-{uuid.uuid4().hex[:8]}"
    w = World(conn=connection(), root=tmp_path_factory.mktemp("rotate"), env=unique,
              secgroup=f"{unique}-sg")
    w.main = f"{unique}-web"
    w.servers[w.main] = {"volumes": [f"{unique}-data", f"{unique}-logs"], "floating_ip": True,
                         # a gate that lasts long enough to be killed in (ready and healthy)
                         "checks": 'command = ["sleep 0.4"]'}
    try:
        w.make_volumes(w.servers[w.main]["volumes"])
        w.write()
        made = w.run("rotate", "--name", w.main)  # no server yet: rotate makes it
        assert made.returncode == 0, made.stderr
        w.assert_serving(w.main, gen=1)
        yield w
    finally:
        w.cleanup()


def current(world):
    server = world.assert_serving(world.main)
    return server.id, int(server.metadata["ivc_gen"])


def kill_at(proc, phase: str, delay: float = 0.0) -> list[str]:
    """Read the run's stderr until ``phase: <phase>`` shows, wait ``delay``, then SIGKILL it."""
    import time

    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith(f"phase: {phase} ("):
            time.sleep(delay)
            proc.kill()
            break
    proc.wait(timeout=60)
    proc.stderr.close()
    proc.stdout.close()
    return lines


# -- the plain rotation -----------------------------------------------------------------------
def test_rotate_moves_both_volumes_and_the_floating_ip_to_a_new_server_twice(world):
    for _ in range(2):
        old_id, gen = current(world)
        run = world.run("rotate", "--name", world.main, "--json")
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        assert out["changed"] is True
        assert [p["phase"] for p in out["phases"]] == PHASES
        assert all(p["seconds"] >= 0 and p["ok"] for p in out["phases"])
        assert out["requests"] > 0 and out["rotations"][0]["outage_seconds"] > 0
        for phase in PHASES:
            assert f"phase: {phase} (server {world.main})" in run.stderr
        fip_moves = [a for a in out["actions"] if a["kind"] == "floating_ip"]
        assert len(fip_moves) == 1 and fip_moves[0]["action"] == "associate"
        new = world.assert_serving(world.main, gen=gen + 1, gone=(old_id,))
        assert new.id != old_id and out["rotations"][0]["new_id"] == new.id


def test_dry_run_lists_the_phases_and_changes_nothing(world):
    old_id, gen = current(world)
    run = world.run("rotate", "--name", world.main, "--dry-run", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["changed"] is False and out["dry_run"] is True
    notes = {p["phase"]: p["note"] for p in out["phases"]}
    assert list(notes) == PHASES
    assert old_id in notes["stop"] and old_id in notes["delete-old"]
    assert f"{world.env}-data" in notes["move-volumes"] and f"{world.env}-logs" in \
        notes["move-volumes"]
    assert "1 update" in notes["move-floating-ip"] or "one update" in notes["move-floating-ip"]
    world.assert_serving(world.main, gen=gen, same_id=old_id)


def test_status_shows_the_server_and_when_a_rotate_is_due(world):
    old_id, gen = current(world)
    out = json.loads(world.run("status", "--json").stdout)
    [entry] = [s for s in out["servers"] if s["name"] == world.main]
    assert entry["id"] == old_id and entry["generation"] == gen and entry["rotate_due"] is False
    assert sorted(v["name"] for v in entry["volumes"]) == sorted(world.servers[world.main]
                                                                ["volumes"])
    assert len(entry["floating_ips"]) == 1 and entry["image"]["name"] == "ivc-tiny"
    assert entry["flavor"] == "m1.tiny" and entry["drift"] == []
    cheap = out["requests"]
    assert cheap <= 14, out["requests_by_method"]  # a constant: lists, auth, discovery

    world.greeting = "v2"
    world.write()
    out = json.loads(world.run("status", "--json").stdout)
    [entry] = [s for s in out["servers"] if s["name"] == world.main]
    assert entry["rotate_due"] is True and [d["field"] for d in entry["drift"]] == ["userdata"]
    assert out["rotate_due"] == [world.main]

    assert world.run("rotate", "--name", world.main).returncode == 0
    out = json.loads(world.run("status", "--json").stdout)
    [entry] = [s for s in out["servers"] if s["name"] == world.main]
    assert entry["rotate_due"] is False and entry["generation"] == gen + 1


# -- crashes ----------------------------------------------------------------------------------
KILL_POINTS = [("preflight", 0.0), ("create", 0.0), ("create", 0.6), ("ready-gate", 0.2),
               ("stop", 0.0), ("move-volumes", 0.0), ("move-volumes", 0.25),
               ("move-floating-ip", 0.0), ("healthy-gate", 0.2), ("delete-old", 0.0),
               ("finish", 0.0)]


@pytest.mark.parametrize("phase,delay", KILL_POINTS,
                         ids=[f"{p}+{d:g}s" for p, d in KILL_POINTS])
def test_killed_at_any_phase_a_rerun_ends_with_one_whole_server(world, phase, delay):
    old_id, gen = current(world)
    lines = kill_at(world.popen("rotate", "--name", world.main), phase, delay)
    assert any(line.startswith(f"phase: {phase} (") for line in lines), "".join(lines)
    rerun = world.run("rotate", "--name", world.main)
    assert rerun.returncode == 0, rerun.stderr
    resumed = "resuming rotation" in rerun.stderr
    if phase == "finish" and not resumed:
        # finish is one PUT (~40 ms) that clears the markers: the kill came after it, so the
        # rotation was complete and the rerun rotated once more
        world.assert_serving(world.main, gen=gen + 2, gone=(old_id,))
        return
    if phase not in ("preflight", "create"):  # the new server carries the markers: resumed
        assert resumed, rerun.stderr
    world.assert_serving(world.main, gen=gen + 1, gone=(old_id,))


# -- faults between ivc and the services ------------------------------------------------------
@pytest.fixture
def proxied(tmp_path):
    proxies = start_proxies("compute", "block_storage", "network")
    path = proxied_clouds_yaml(CLOUDS_YAML, tmp_path / "clouds.yaml", proxies)
    try:
        yield proxies, {"OS_CLOUD": "ivc-proxied", "OS_CLIENT_CONFIG_FILE": str(path)}
    finally:
        for proxy in proxies.values():
            proxy.close()


FAULTS_500 = [  # service, method, path, the phase it breaks
    ("compute", "POST", r"/v2.1/servers$", "create"),
    ("compute", "POST", r"/os-volume_attachments$", "move-volumes"),
    ("network", "PUT", r"/floatingips/", "move-floating-ip"),
]


@pytest.mark.parametrize("service,method,path,phase", FAULTS_500,
                         ids=[f[3] for f in FAULTS_500])
def test_a_500_rolls_back_to_the_old_server(world, proxied, service, method, path, phase):
    proxies, env = proxied
    old_id, gen = current(world)
    fault = proxies[service].add(method, path, 500)
    run = world.run("rotate", "--name", world.main, **env)
    assert run.returncode == 3, run.stderr
    assert fault.hits == 1  # a 500 is not retried
    assert f"failed in phase {phase}" in run.stderr and "HTTP 500" in run.stderr, run.stderr
    actions = [p for m, p, _ in proxies["compute"].seen if m == "POST" and p.endswith("/action")]
    if phase == "create":
        assert actions == [], "the old server was stopped or started"
    else:  # stopped for the move, started again by the rollback
        assert len(actions) == 2 and set(actions) == {f"/v2.1/servers/{old_id}/action"}, actions
    world.assert_serving(world.main, gen=gen, same_id=old_id)


def test_a_failed_create_leaves_a_server_the_user_had_stopped_stopped(world, proxied):
    proxies, env = proxied
    old_id, gen = current(world)
    conn = world.conn
    conn.compute.stop_server(old_id)
    conn.compute.wait_for_server(conn.compute.get_server(old_id), status="SHUTOFF",
                                 interval=0.2, wait=60)
    try:
        proxies["compute"].add("POST", r"/v2.1/servers$", 500)
        run = world.run("rotate", "--name", world.main, **env)
        assert run.returncode == 3, run.stderr
        [server] = world.managed(world.main)
        assert (server.id, server.status) == (old_id, "SHUTOFF"), run.stderr
        actions = [p for m, p, _ in proxies["compute"].seen if p.endswith("/action")]
        assert actions == [], "the old server was started"
    finally:
        conn.compute.start_server(old_id)
        conn.compute.wait_for_server(conn.compute.get_server(old_id), status="ACTIVE",
                                     interval=0.2, wait=60)
    world.assert_serving(world.main, gen=gen, same_id=old_id)


def test_a_floating_ip_moved_despite_a_500_is_put_back_by_the_rollback(world, proxied):
    # Neutron moved it, a gateway answered 500: the rollback must look, not trust its listing
    proxies, env = proxied
    old_id, gen = current(world)
    fault = proxies["network"].add("PUT", r"/floatingips/", "after:500")
    run = world.run("rotate", "--name", world.main, **env)
    assert run.returncode == 3, run.stderr
    assert fault.hits == 1 and "failed in phase move-floating-ip" in run.stderr, run.stderr
    puts = [o for m, p, o in proxies["network"].seen if m == "PUT" and "/floatingips/" in p]
    assert puts == ["forwarded (200), then answered 500", "200"], puts  # moved, moved back
    world.assert_serving(world.main, gen=gen, same_id=old_id)


def test_a_lost_create_response_finds_the_server_instead_of_making_a_second(world, proxied):
    proxies, env = proxied
    old_id, gen = current(world)
    proxies["compute"].add("POST", r"/v2.1/servers$", "reset_after")
    run = world.run("rotate", "--name", world.main, **env)
    assert run.returncode == 0, run.stderr
    creates = [o for m, p, o in proxies["compute"].seen if m == "POST" and p == "/v2.1/servers"]
    assert creates == ["forwarded (202), then reset"], creates
    world.assert_serving(world.main, gen=gen + 1, gone=(old_id,))


LOST_RESPONSES = [("POST", r"/os-volume_attachments$"), ("DELETE", r"/os-volume_attachments/"),
                  ("POST", r"/action$")]  # the first action: the old server's stop


@pytest.mark.parametrize("method,path", LOST_RESPONSES, ids=["attach", "detach", "stop"])
def test_a_lost_response_is_not_acted_on_twice(world, proxied, method, path):
    """Re-sent while the first is under way, each gets Nova's 400 or 409: ivc looks first."""
    proxies, env = proxied
    old_id, gen = current(world)
    fault = proxies["compute"].add(method, path, "reset_after")
    run = world.run("rotate", "--name", world.main, **env)
    assert run.returncode == 0, run.stderr
    assert fault.hits == 1
    world.assert_serving(world.main, gen=gen + 1, gone=(old_id,))


def test_a_reset_connection_on_the_delete_is_retried(world, proxied):
    proxies, env = proxied
    old_id, gen = current(world)
    delete = proxies["compute"].add("DELETE", rf"/servers/{old_id}$", "reset_after")
    poll = proxies["block_storage"].add("GET", r"/volumes/", "reset")  # a poll, too
    run = world.run("rotate", "--name", world.main, **env)
    assert run.returncode == 0, run.stderr
    # both faults happened: the delete was done but its answer lost, one volume poll reset
    assert (delete.hits, poll.hits) == (1, 1)
    deletes = [o for m, p, o in proxies["compute"].seen
               if m == "DELETE" and p.endswith(f"/servers/{old_id}")]
    assert deletes[0] == "forwarded (204), then reset", deletes
    polls = [o for m, p, o in proxies["block_storage"].seen if m == "GET" and "/volumes/" in p]
    assert "reset before forwarding" in polls, polls
    world.assert_serving(world.main, gen=gen + 1, gone=(old_id,))


def test_killed_during_a_rollback_a_rerun_finishes(world, proxied):
    proxies, env = proxied
    old_id, gen = current(world)
    proxies["compute"].add("POST", r"/os-volume_attachments$", 500)
    lines = kill_at(world.popen("rotate", "--name", world.main, **env), "rollback", 0.3)
    assert any(line.startswith("phase: rollback (") for line in lines), "".join(lines)
    rerun = world.run("rotate", "--name", world.main)
    assert rerun.returncode == 0, rerun.stderr
    world.assert_serving(world.main, gen=gen + 1, gone=(old_id,))


# -- two runs, one server ---------------------------------------------------------------------
def test_two_rotations_started_together_one_runs_the_other_exits_4(world):
    old_id, gen = current(world)
    procs = [world.popen("rotate", "--name", world.main) for _ in range(2)]
    outputs = [p.communicate(timeout=240) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 4], outputs
    loser = next(err for p, (_, err) in zip(procs, outputs, strict=False) if p.returncode == 4)
    assert "holds the lock" in loser and "pid" in loser and "run" in loser
    world.assert_serving(world.main, gen=gen + 1, gone=(old_id,))


# -- a broken server --------------------------------------------------------------------------
def test_a_server_in_error_is_replaced_and_its_volumes_move(world):
    old_id, gen = current(world)
    connection("ivc-local-admin").compute.reset_server_state(old_id, "error")
    run = world.run("rotate", "--name", world.main, "--json")
    assert run.returncode == 0, run.stderr
    phases = [p["phase"] for p in json.loads(run.stdout)["phases"]]
    assert phases == ["preflight", "create", "ready-gate", "delete-old", "move-volumes",
                      "move-floating-ip", "healthy-gate", "finish"]
    world.assert_serving(world.main, gen=gen + 1, gone=(old_id,))


# -- what Heat's rollback did not survive -----------------------------------------------------
def test_a_new_server_still_building_at_the_timeout_is_deleted_unmarked(world):
    """Nova refuses metadata on a server in BUILD (409): the rollback must not need it."""
    old_id, gen = current(world)
    run = world.run("rotate", "--name", world.main, IVC_BOOT_TIMEOUT="0.01")
    assert run.returncode == 3, run.stderr
    assert "failed in phase create" in run.stderr and "still BUILD" in run.stderr, run.stderr
    world.assert_serving(world.main, gen=gen, same_id=old_id)


def test_a_new_server_that_cannot_be_scheduled_rolls_back(world):
    """Heat left an orphan and split volumes here; ivc deletes the new server, the old one
    stands untouched (never stopped: the failure comes before any volume moves)."""
    old_id, gen = current(world)
    admin = connection("ivc-local-admin")
    flavor = admin.compute.create_flavor(name=f"{world.env}-huge", ram=64, vcpus=1,
                                        disk=10_000_000)  # no host has that disk: ERROR
    try:
        world.servers[world.main]["flavor"] = flavor.name
        world.write()
        run = world.run("rotate", "--name", world.main)
        assert run.returncode == 3, run.stderr
        assert "failed in phase create" in run.stderr and "ERROR" in run.stderr, run.stderr
        assert "phase: stop" not in run.stderr
        world.assert_serving(world.main, gen=gen, same_id=old_id)
    finally:
        world.servers[world.main].pop("flavor", None)
        world.write()
        admin.compute.delete_flavor(flavor, ignore_missing=True)


def test_a_volume_in_error_is_refused_before_anything_changes(world):
    """Heat's rollback left a volume in error split from its server; ivc checks first, exit 2."""
    old_id, gen = current(world)
    admin = connection("ivc-local-admin")
    vol_name = world.servers[world.main]["volumes"][1]
    volume = admin.block_storage.get_volume(world.volumes[vol_name])
    admin.block_storage.reset_volume_status(volume, status="error", attach_status=None,
                                            migration_status=None)
    try:
        run = world.run("rotate", "--name", world.main, "--json")
        assert run.returncode == 2, run.stderr
        assert vol_name in run.stderr and "'error'" in run.stderr
        out = json.loads(run.stdout)
        assert out["mutating_requests"] == 0, out["requests_by_method"]  # not even the lock
    finally:
        admin.block_storage.reset_volume_status(volume, status="in-use", attach_status=None,
                                                migration_status=None)
    world.assert_serving(world.main, gen=gen, same_id=old_id)


# -- destroy (last: it removes the server) ----------------------------------------------------
def test_destroy_needs_yes_keeps_the_volumes_and_releases_ivcs_floating_ip(world):
    old_id, _ = current(world)
    refused = world.run("destroy", "--name", world.main)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    world.assert_serving(world.main, same_id=old_id)

    run = world.run("destroy", "--name", world.main, "--yes", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert {(a["action"], a["kind"]) for a in out["actions"]} == {
        ("delete", "floating_ip"), ("detach", "volume"), ("delete", "server")}
    assert world.managed(world.main) == [] and world.fips(world.main) == []
    for vol_name in world.servers[world.main]["volumes"]:
        volume = world.conn.block_storage.get_volume(world.volumes[vol_name])
        assert volume.status == "available" and not volume.attachments
        assert volume.metadata["marker"] == f"data-of-{vol_name}"
    status = json.loads(world.run("status", "--json").stdout)
    [entry] = [s for s in status["servers"] if s["name"] == world.main]
    assert entry["id"] is None and entry["rotate_due"] is True

    again = world.run("rotate", "--name", world.main)  # "make it so"
    assert again.returncode == 0, again.stderr
    world.assert_serving(world.main, gen=1)


# -- several servers --------------------------------------------------------------------------
def test_parallel_rotation_of_two_servers(tmp_path):
    unique = f"t-{uuid.uuid4().hex[:8]}"
    w = World(conn=connection(), root=tmp_path, env=unique)
    names = [f"{unique}-a", f"{unique}-b"]
    for name in names:
        w.servers[name] = {}
    try:
        w.write()
        args = [arg for name in names for arg in ("--name", name)]
        made = w.run("rotate", *args, "--parallel", "2")
        assert made.returncode == 0, made.stderr
        before = {name: w.assert_serving(name, gen=1).id for name in names}
        run = w.run("rotate", *args, "--parallel", "2", "--json")
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        assert {r["name"] for r in out["rotations"]} == set(names)
        for name in names:
            w.assert_serving(name, gen=2, gone=(before[name],))
    finally:
        w.cleanup()
