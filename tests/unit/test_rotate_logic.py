"""rotate's pure pieces: the forward/rollback decision from an observed state, the markers, the
lock's naming, holder and expiry rules, the poll schedule, and the tasks' argument checks."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakecloud import http_error, ticking_cloud
from invoking import load_namespace, run

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import CloudError, Locked
from ivc_tasks.resources import lock as lockmod
from ivc_tasks.resources.floating_ips import pick_port
from ivc_tasks.resources.lock import (
    Holder,
    ServerLock,
    expiry_reason,
    lock_name,
    parse_created_at,
    parse_holder,
    pid_alive,
)
from ivc_tasks.resources.markers import fip_markers, is_marker
from ivc_tasks.settings import make_settings
from ivc_tasks.steps.rotate.decide import (
    CONFLICT,
    CREATE,
    FINISH,
    FORWARD,
    ROLLBACK,
    ROTATE,
    Seen,
    decide,
)


def wait_until(cloud, what, fetch, state, **kw):
    return cloud.poll(what, fetch, state, eager=True, **kw)

ROOT = Path(__file__).resolve().parents[2]


def old(status="ACTIVE", rotation="r1", **kw):
    return Seen(id="old", status=status, rotation=rotation, role="old" if rotation else None,
                **kw)


def new(status="ACTIVE", rotation="r1", replaces="old", **kw):
    return Seen(id="new", status=status, rotation=rotation, role="new", replaces=replaces, **kw)


# -- decide --------------------------------------------------------------------------------
@pytest.mark.parametrize("servers,kind,wait", [
    # nothing there: make it
    ([], CREATE, False),
    # one server, nothing under way: rotate (ERROR and SHUTOFF included)
    ([old(rotation=None)], ROTATE, False),
    ([old("ERROR", rotation=None)], ROTATE, False),
    ([old("SHUTOFF", rotation=None)], ROTATE, False),
    # killed after marking the old server, before (or while) creating: nothing to finish
    ([old()], ROLLBACK, False),
    # the new server is up: finish the job
    ([old(), new()], FORWARD, False),
    ([old("SHUTOFF"), new()], FORWARD, False),
    # still booting: wait, then forward (or roll back if it fails)
    ([old(), new("BUILD")], FORWARD, True),
    # the new server will not serve: roll back
    ([old(), new("ERROR")], ROLLBACK, False),
    ([old(), new("SHUTOFF")], ROLLBACK, False),
    # a rollback had started: continue it, even though the new server is ACTIVE
    ([old(), new(rollback=True)], ROLLBACK, False),
    # the old server is gone: only finishing is possible
    ([new()], FINISH, False),
    ([new("BUILD")], FINISH, True),
    # an old server in ERROR carries no marker (Nova refuses metadata changes then)
    ([old("ERROR", rotation=None), new()], FORWARD, False),
    ([old("ERROR", rotation=None), new("ERROR")], ROLLBACK, False),
    # servers ivc cannot account for
    ([old(rotation=None), Seen(id="x", status="ACTIVE")], CONFLICT, False),
    ([old(), new(), Seen(id="x", status="ACTIVE")], CONFLICT, False),
    ([old(), Seen(id="n2", status="ACTIVE", rotation="r2", role="new", replaces="old")],
     CONFLICT, False),
    ([old(), new(), Seen(id="n2", status="ACTIVE", rotation="r1", role="new",
                         replaces="old")], CONFLICT, False),
    ([old(), new(replaces="someone-else")], CONFLICT, False),
])
def test_decide(servers, kind, wait):
    decision = decide(servers)
    assert (decision.kind, decision.wait_for_new) == (kind, wait), decision.reason
    assert decision.reason


def test_decide_names_the_servers_it_works_on():
    decision = decide([new(), old()])
    assert decision.old.id == "old" and decision.new.id == "new"


def test_seen_reads_the_markers_from_metadata():
    server = SimpleNamespace(id="s", status="active", task_state=None, metadata={
        "ivc_rotation": "abc", "ivc_role": "new", "ivc_replaces": "o", "ivc_rollback": "1",
        "ivc_gen": "7"})
    assert Seen.of(server) == Seen(id="s", status="ACTIVE", rotation="abc", role="new",
                                   replaces="o", rollback=True, gen=7)


def test_markers():
    meta = {"ivc_fip:f1": "p1 n1", "ivc_fip:f2": "p2 n2", "ivc_gen": "2", "role": "web"}
    assert fip_markers(meta) == {"f1": ("p1", "n1"), "f2": ("p2", "n2")}
    assert [k for k in meta if is_marker(k)] == ["ivc_fip:f1", "ivc_fip:f2"]
    assert all(is_marker(k) for k in ("ivc_rotation", "ivc_role", "ivc_replaces", "ivc_was",
                                      "ivc_rollback"))
    assert not any(is_marker(k) for k in ("ivc_gen", "ivc_vol:data", "ivc_managed"))


def test_pick_port_prefers_the_same_network_then_the_declared_order():
    ports = [SimpleNamespace(id="a", network_id="n1", fixed_ips=[{}]),
             SimpleNamespace(id="b", network_id="n2", fixed_ips=[{}]),
             SimpleNamespace(id="c", network_id="n3", fixed_ips=[])]
    assert pick_port(ports, "n2").id == "b"
    assert pick_port(ports, "gone", ["n2", "n1"]).id == "b"
    assert pick_port(ports, "n3") is None


# -- the poll schedule ---------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_eager_poll_polls_soon_then_less_often_up_to_the_poll_interval():
    clock = Clock()
    cloud = Cloud(conn=None, settings=make_settings("e", poll_interval=0.5), sleep=clock.sleep,
                  clock=lambda: clock.now)
    wait_until(cloud, "thing", lambda: clock.now, str, done=lambda t: t >= 10,
               failed=lambda t: None, timeout=60)
    assert clock.sleeps[0] == pytest.approx(0.05)
    assert clock.sleeps == sorted(clock.sleeps) and max(clock.sleeps) == 0.5
    early = [s for s in clock.sleeps if s < 0.5]
    assert all(s <= max(0.2, 0.15 * t) + 1e-9 or s == 0.05 for s, t in  # EAGER_FLOOR 0.2
               zip(early, [sum(clock.sleeps[:i]) for i in range(len(early))], strict=False))
    assert clock.now - 10 < 0.5  # seen within one poll interval


def test_eager_poll_reports_failure_and_timeout():
    clock = Clock()
    cloud = Cloud(conn=None, settings=make_settings("e", poll_interval=0.5), sleep=clock.sleep,
                  clock=lambda: clock.now)
    with pytest.raises(CloudError, match="thing: broke"):
        wait_until(cloud, "thing", lambda: 1, str, done=lambda t: False,
                   failed=lambda t: "broke", timeout=60)
    with pytest.raises(CloudError, match="still 1 after 3 s"):
        wait_until(cloud, "thing", lambda: 1, str, done=lambda t: False,
                   failed=lambda t: None, timeout=3)


# -- the lock ------------------------------------------------------------------------------
def test_lock_names_are_valid_keypair_names_and_distinct():
    assert lock_name("prod", "web1") == "ivc-lock-prod-web1"
    odd = lock_name("prod.eu", "web1")
    assert odd.startswith("ivc-lock-prod_eu-web1-") and odd != lock_name("prod_eu", "web1")
    assert all(c.isalnum() or c in "-_" for c in odd)


def test_the_holder_survives_the_public_key_comment():
    holder = Holder(run="abc123", host="ci-7", pid=4242, start=1700000000, op="rotate", ttl=900)
    key = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA {holder.comment()}"
    assert parse_holder(key) == holder
    assert parse_holder("ssh-ed25519 AAAA someone@laptop") is None
    assert "run abc123 on host ci-7, pid 4242" in holder.describe(1700000060)


def test_created_at_is_read_as_utc():
    assert parse_created_at("2023-11-14T22:13:20.000000") == 1700000000
    assert parse_created_at("2023-11-14T22:13:20Z") == 1700000000
    assert parse_created_at(None) is None and parse_created_at("soon") is None


HERE = Holder(run="r", host="me", pid=10, start=1000)
THERE = Holder(run="r", host="elsewhere", pid=10, start=1000)


@pytest.mark.parametrize("holder,created,now,alive,expired", [
    (HERE, 1000, 1001, True, False),         # alive on this host: held, whatever its age
    (HERE, 1000, 99999, True, False),
    (HERE, 1000, 1001, False, True),         # its process is gone: expired at once
    (THERE, 1000, 1000 + 3599, False, False),  # another host: only the TTL counts
    (THERE, 1000, 1000 + 3601, True, True),
    (THERE, None, 1000 + 3601, True, True),  # no created_at: the holder's own start time
    (None, 1000, 1500, True, False),         # unreadable holder: TTL from created_at
    (None, None, 1500, True, True),
    (dataclasses.replace(THERE, ttl=7200), 1000, 1000 + 3601, True, False),  # the holder's TTL
    (dataclasses.replace(THERE, ttl=60), 1000, 1000 + 61, True, True),
])
def test_lock_expiry(holder, created, now, alive, expired):
    reason = expiry_reason(holder, created, now=now, ttl=3600, host="me",
                           alive=lambda pid: alive)
    assert (reason is not None) == expired


def test_pid_alive():
    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)
    assert not pid_alive(0)


class FakeKeypairs:
    """Nova keypairs: names unique per user, 409 on a second create."""

    def __init__(self):
        self.keys = {}
        self.compute = self

    def create_keypair(self, name, public_key):
        if name in self.keys:
            raise http_error(409, f"Key pair '{name}' already exists.")
        self.keys[name] = SimpleNamespace(name=name, public_key=public_key,
                                          created_at="2099-01-01T00:00:00")
        return self.keys[name]

    def get_keypair(self, name):
        if name not in self.keys:
            raise http_error(404, "not found")
        return self.keys[name]

    def delete_keypair(self, name, ignore_missing=True):
        self.keys.pop(name, None)


def cloud_of(fake, run_id):
    return ticking_cloud(fake, "e", run_id=run_id)


def test_the_second_run_is_refused_naming_the_holder_and_the_first_releases():
    fake = FakeKeypairs()
    first = ServerLock(cloud_of(fake, "run-a"), "web1")
    first.acquire()
    with pytest.raises(Locked, match="another run holds the lock .*run run-a on host"):
        ServerLock(cloud_of(fake, "run-b"), "web1").acquire()
    first.verify()
    first.release()
    assert fake.keys == {}
    ServerLock(cloud_of(fake, "run-b"), "web1").acquire()


def test_a_dead_holders_lock_is_taken_over_and_the_holder_learns_it_lost_it():
    fake = FakeKeypairs()
    dead = ServerLock(cloud_of(fake, "run-a"), "web1", pid=999999)  # no such process
    dead.acquire()
    taker = ServerLock(cloud_of(fake, "run-b"), "web1")
    taker.acquire()
    assert "run=run-b" in fake.keys[lock_name("e", "web1")].public_key
    with pytest.raises(lockmod.LockLost, match="lost its lock"):
        dead.verify()
    dead.release()  # not its lock any more: left alone
    assert lock_name("e", "web1") in fake.keys


# -- the tasks' arguments ------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ("rotate",),                                   # no --name
    ("rotate-instance", "--name", "a", "--parallel", "0"),
    ("rotate", "--name", "a", "--parallel", "many"),
    ("rotate", "--name", "a", "--timeout", "-1"),
    ("destroy", "--name", "a"),                    # no --yes
    ("destroy",),
])
def test_invalid_arguments_exit_2_before_any_cloud_call(argv, monkeypatch, capsys):
    monkeypatch.setattr("ivc_tasks.cloud.connect", lambda *a, **k: pytest.fail("connected"))
    assert run(*argv) == 2
    assert capsys.readouterr().err


def test_rotate_alias_and_tasks_are_registered():
    ns = load_namespace()
    assert {"rotate-instance", "status", "destroy"} <= set(ns.task_names)
    assert "rotate" in ns.task_names["rotate-instance"]


# -- the phase list: one for the executor and the dry run -----------------------------------
def test_every_phase_plan_phases_returns_has_a_runner_and_a_dry_run_note():
    """What ``plan_phases`` returns, for every decision and every state of the old server, is
    what the executor runs and the dry run describes: a phase added to one and not the others
    fails here."""
    import itertools

    from ivc_tasks.steps.rotate.decide import FINISH, FORWARD
    from ivc_tasks.steps.rotate.describe import NOTES
    from ivc_tasks.steps.rotate.executor import RUNNERS
    from ivc_tasks.steps.rotate.phases import PHASES, plan_phases

    returned = set()
    for kind, old, wait, keep in itertools.product(
            [CREATE, ROTATE, ROLLBACK, FORWARD, FINISH], [None, "ACTIVE", "SHUTOFF", "ERROR"],
            [False, True], [False, True]):
        names = plan_phases(kind, old_status=old, wait_for_new=wait, keep_port=keep)
        assert len(names) == len(set(names)), (kind, old, wait, keep, names)
        returned |= set(names)
    assert returned == set(RUNNERS)  # every phase planned runs, every runner is planned
    assert returned | {"preflight"} == set(NOTES)  # and the dry run describes each
    assert set(PHASES) == set(NOTES)  # the documented list (phases.py's docstring) too


@pytest.mark.parametrize("kind, old_status, wait, expected", [
    (CREATE, None, False, ["create", "healthy-gate"]),
    # the ready gate before the old server is touched, the healthy gate before delete-old
    (ROTATE, "ACTIVE", False, ["create", "ready-gate", "stop", "move-volumes",
                               "move-floating-ip", "healthy-gate", "delete-old", "finish"]),
    (ROTATE, "ERROR", False, ["create", "ready-gate", "delete-old", "move-volumes",
                              "move-floating-ip", "healthy-gate", "finish"]),
    (ROLLBACK, "SHUTOFF", False, ["rollback", "create", "ready-gate", "stop", "move-volumes",
                                  "move-floating-ip", "healthy-gate", "delete-old", "finish"]),
    # resumed after a crash (during a gate too): the gates run again
    (FORWARD, "SHUTOFF", True, ["create", "ready-gate", "stop", "move-volumes",
                                "move-floating-ip", "healthy-gate", "delete-old", "finish"]),
    (FORWARD, "SHUTOFF", False, ["ready-gate", "stop", "move-volumes", "move-floating-ip",
                                 "healthy-gate", "delete-old", "finish"]),
    (FINISH, None, False, ["move-volumes", "move-floating-ip", "healthy-gate", "finish"]),
])
def test_plan_phases(kind, old_status, wait, expected):
    from ivc_tasks.steps.rotate.phases import plan_phases

    assert plan_phases(kind, old_status=old_status, wait_for_new=wait) == expected
    with pytest.raises(ValueError):
        plan_phases(CONFLICT, old_status=None)


# -- where rotate's state is written, and what imports what --------------------------------------
def _sources():
    from pathlib import Path

    import ivc_tasks

    root = Path(ivc_tasks.__file__).parent
    return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*.py")
            if "devcloud" not in p.parts}


def test_server_metadata_and_port_tags_are_written_in_one_module_each():
    writers = {path for path, text in _sources().items()
               for call in ("set_server_metadata(", ".set_metadata(", "set_tags(")
               if call in text}
    assert writers == {"resources/servers.py", "resources/markers.py"}, writers
    markers = {path for path, text in _sources().items()
               if '"ivc_rotation"' in text or '"ivc-rotation:"' in text or '"ivc_was"' in text}
    assert markers == {"resources/markers.py"}, markers


def test_rotate_modules_import_no_circle_and_status_destroy_nothing_of_rotate():
    """Every import counts: module level, under TYPE_CHECKING, inside functions."""
    import ast

    graph = {}
    for path, text in _sources().items():
        name = "ivc_tasks." + path[:-3].replace("/", ".").removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ivc_tasks"):
                deps |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("ivc_tasks")}
        graph[name] = deps
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}

    def reaches(start):
        seen, todo = set(), [start]
        while todo:
            for dep in graph[todo.pop()] - seen:
                seen.add(dep)
                todo.append(dep)
        return seen

    rotate = [m for m in graph if m.startswith("ivc_tasks.steps.rotate")]
    assert [m for m in rotate if m in reaches(m)] == []
    for step in ("ivc_tasks.steps.status", "ivc_tasks.steps.destroy"):
        assert not [m for m in reaches(step) if m.startswith("ivc_tasks.steps.rotate")], step
