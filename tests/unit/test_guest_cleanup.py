"""Whose guests are whose on a shared host: what ``down`` and ``up`` (stopping another
checkout's cloud) remove, decided from fake listings of the host (``cleanup.plan``), and when
the cloud network is kept (``guestnet.other_clouds``, ``lifecycle``)."""

import subprocess
from contextlib import nullcontext
from pathlib import Path

import pytest

from ivc_tasks.devcloud import cleanup, guestnet, guests, lifecycle, procs
from ivc_tasks.devcloud.cleanup import HostProc, HostView
from ivc_tasks.devcloud.layout import Layout

A, B = Path("/srv/a/.devcloud"), Path("/srv/a/.devcloud2")   # B's path starts with A's
ME = 999


def _guest(root: Path, uuid: str) -> dict:
    return {"root": f"{root}/data/guests/{uuid}/root", "netns": f"ivcg-{uuid}",
            "upperdirs": (f"{root}/data/guests/{uuid}/upper",)}


VIEW = HostView(
    procs=(
        HostProc(10, "1", **_guest(A, "a1")),                       # A's guest init
        HostProc(11, "1", "/", "ivcg-a1", (f"{A}/data/guests/a1/upper",)),  # its launcher
        HostProc(12, "1", "/", "ivcg-a1"),                          # a process that joined it
        HostProc(20, "1", **_guest(B, "b1")),                       # B's guest
        HostProc(21, "1", "/", "ivcg-b1", (f"{B}/data/guests/b1/upper",)),
        HostProc(30, "1", **_guest(A, "a-gone")),   # A's guest whose folder went meanwhile
        HostProc(40, "1", "/", "ivc-cloud"),        # the cloud namespace: no guest's
        HostProc(41, "1", "/srv/a/.devcloud/data/guestsX/x/root"),   # not under data/guests
        HostProc(ME, "1", "/", "ivcg-a1"),          # the caller itself
        HostProc(50, "1"),                          # the host's own
    ),
    namespaces=frozenset({"ivc-cloud", "ivcg-a1", "ivcg-a2", "ivcg-a-gone", "ivcg-b1",
                          "ivcg-orphan", "a1"}),
    loops={"/dev/loop0": f"{A}/data/volumes/v1.img",
           "/dev/loop1": f"{B}/data/volumes/v2.img",
           "/dev/loop2": f"{A}/data/volumes/v3.img (deleted)",
           "/dev/loop3": "/tmp/t/vol.img",          # recorded in A's disks file
           "/dev/loop4": "/tmp/t/other.img",        # A recorded loop4 over another file
           "/dev/loop5": f"{A}/guest-root/x.img"},  # under A, but no volume
    mounts=("/", f"{A}/data/guests/a1/root", f"{A}/data/guests/a1/root/proc",
            f"{B}/data/guests/b1/root", f"{A}/data"),
)
RECORDED_A = {"/dev/loop3": "/tmp/t/vol.img", "/dev/loop4": "/tmp/t/old.img"}


def test_a_cloud_owns_only_what_is_under_its_folder_or_named_after_its_guests():
    left = cleanup.plan(A, {"a1", "a2"}, VIEW, me=ME, recorded=RECORDED_A)
    assert [p.pid for p in left.procs] == [10, 11, 12, 30]
    assert left.overlays == ["a-gone", "a1"]
    assert left.namespaces == ["ivcg-a-gone", "ivcg-a1", "ivcg-a2"]
    assert left.mounts == [f"{A}/data/guests/a1/root/proc", f"{A}/data/guests/a1/root"]
    assert left.loops == [("/dev/loop0", f"{A}/data/volumes/v1.img"),
                          ("/dev/loop2", f"{A}/data/volumes/v3.img (deleted)"),
                          ("/dev/loop3", "/tmp/t/vol.img")]


def test_the_other_cloud_owns_the_rest_and_nothing_of_the_first():
    left = cleanup.plan(B, {"b1"}, VIEW, me=ME)
    assert [p.pid for p in left.procs] == [20, 21]
    assert left.overlays == ["b1"]
    assert left.namespaces == ["ivcg-b1"]
    assert left.mounts == [f"{B}/data/guests/b1/root"]
    assert left.loops == [("/dev/loop1", f"{B}/data/volumes/v2.img")]


def test_a_cloud_with_no_guests_owns_nothing():
    left = cleanup.plan(Path("/srv/c"), set(), VIEW, me=ME)
    assert not left
    assert cleanup.describe(left, "guests") == []


@pytest.mark.parametrize("path, folder, expected", [
    ("/srv/a/.devcloud/data/volumes/v.img", "/srv/a/.devcloud", True),
    ("/srv/a/.devcloud", "/srv/a/.devcloud", True),
    ("/srv/a/.devcloud2/data/volumes/v.img", "/srv/a/.devcloud", False),
    ("/srv/a/.devcloud/../b/data/v.img", "/srv/a/.devcloud", False),
    ("/srv/a/.devcloud/data/v.img (deleted)", "/srv/a/.devcloud", True),
    ("relative/data/v.img", "relative", False),
    ("", "/srv", False),
])
def test_within_compares_whole_components(path, folder, expected):
    assert cleanup.within(path, Path(folder)) is expected


def test_overlay_upper_layers_and_mount_points_from_mountinfo():
    text = (
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "72 48 0:40 / / rw,relatime - overlay overlay rw,lowerdir=/r/guest-root/bookworm,"
        "upperdir=/r/data/guests/u1/upper,workdir=/r/data/guests/u1/work,uuid=on\n"
        "80 72 0:41 / /proc rw - proc proc rw\n"
        "90 22 0:42 / /my\\040dir rw - overlay overlay rw,lowerdir=/l,upperdir=/my\\040up,"
        "workdir=/w\n")
    assert cleanup.overlay_upperdirs(text) == ("/r/data/guests/u1/upper", "/my up")
    assert cleanup.mount_points(text) == ("/", "/", "/proc", "/my dir")


def test_what_was_removed_is_said_one_line_per_kind():
    left = cleanup.plan(B, {"b1"}, VIEW, me=ME)
    assert cleanup.describe(left, f"guests of {B}") == [
        f"guests of {B}: ended 2 processes (pids 20, 21)",
        f"guests of {B}: 1 overlay mounts went with their processes (b1)",
        f"guests of {B}: unmounted {B}/data/guests/b1/root",
        f"guests of {B}: freed loop devices /dev/loop1 (v2.img)",
        f"guests of {B}: removed network namespaces ivcg-b1",
    ]
    assert cleanup.describe_left(cleanup.Leftovers(B), "guests") is None
    assert cleanup.describe_left(cleanup.Leftovers(B, namespaces=["ivcg-b1"]), "guests") == \
        "guests: NOT removed: namespaces ivcg-b1"


def test_recorded_loops_and_guest_folders_come_from_the_cloud_folder(tmp_path):
    for uuid, lines in (("u1", "vdb 7:0 virtio-x /dev/loop7 /v/x.img\n"), ("u2", "")):
        folder = tmp_path / "data" / "guests" / uuid
        folder.mkdir(parents=True)
        (folder / "disks").write_text(lines)
    (tmp_path / "data" / "guests" / "stray-file").write_text("")
    assert cleanup.guest_uuids(tmp_path) == {"u1", "u2"}
    assert cleanup.recorded_loops(tmp_path) == {"/dev/loop7": "/v/x.img"}
    assert cleanup.guest_uuids(tmp_path / "none") == set()


@pytest.mark.parametrize("marked, expected", [
    ({}, []),
    ({1: ("/a", "nova-compute"), 2: ("/a", "netagent")}, []),                 # only ours
    ({1: ("/b", "mariadb"), 2: ("/b", "rabbitmq"), 3: ("/b", "epmd")}, []),   # the machine's
    ({1: ("/a", "netagent"), 2: ("/b", "gunicorn: master [devcloud-keystone]")}, ["/b"]),
    ({1: ("/c", "x"), 2: ("/b", "y"), 3: ("/c", "z")}, ["/b", "/c"]),
])
def test_other_clouds_own_the_cloud_network(marked, expected):
    assert guestnet.other_clouds("/a", marked) == expected


@pytest.fixture
def sleepers():
    started = []

    def start():
        proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
        started.append(proc)
        return proc
    yield start
    for proc in started:
        proc.kill()
        proc.wait()


@pytest.fixture
def recorder(monkeypatch):
    """guests.stop_all, guestnet.teardown and procs.stop replaced by recorders."""
    calls = {"guests": [], "teardown": 0, "stopped": []}

    def stop_all(layout, say, label="guests"):
        calls["guests"].append((layout.root, label))
        return [f"u-{layout.root.name}"]

    def teardown():
        calls["teardown"] += 1
        return ["veth ivc-host"]
    monkeypatch.setattr(guests, "stop_all", stop_all)
    monkeypatch.setattr(guestnet, "teardown", teardown)
    monkeypatch.setattr(procs, "stop", lambda *p, **k: calls["stopped"].extend(x.pid for x in p))
    return calls


@pytest.mark.parametrize("our_agent_runs", [False, True])
def test_up_stopping_another_cloud_removes_its_guests_and_its_network(
        tmp_path, monkeypatch, sleepers, recorder, our_agent_runs):
    layout = Layout(tmp_path / "ours")
    layout.make_dirs()
    theirs, agent = sleepers(), sleepers()
    if our_agent_runs:
        (layout.run / "netagent.pid").write_text(f"{agent.pid} {procs.start_time(agent.pid)}\n")
    other = str(tmp_path / "theirs")
    monkeypatch.setattr(procs, "marked_processes", lambda: {
        theirs.pid: (other, "nova-compute"), agent.pid: (str(layout.root), "netagent")}
        if our_agent_runs else {theirs.pid: (other, "nova-compute")})
    said = []
    stopped = lifecycle._stop_foreign(layout, said.append)
    assert recorder["stopped"] == [theirs.pid]
    assert recorder["guests"] == [(Path(other), f"guests of {other}")]   # never ours
    assert stopped == [f"nova-compute@{other}", f"guest u-theirs@{other}"]
    assert recorder["teardown"] == (0 if our_agent_runs else 1)
    assert (f"network of {other}: removed veth ivc-host" in said) is not our_agent_runs


def test_up_stopping_only_unrecorded_processes_of_its_own_folder_leaves_guests_and_network(
        tmp_path, monkeypatch, sleepers, recorder):
    layout = Layout(tmp_path / "ours")
    layout.make_dirs()
    stray = sleepers()
    monkeypatch.setattr(procs, "marked_processes", lambda: {stray.pid: (str(layout.root), "x")})
    assert lifecycle._stop_foreign(layout, [].append) == [f"x@{layout.root}"]
    assert (recorder["guests"], recorder["teardown"]) == ([], 0)


@pytest.mark.parametrize("marked, torn_down", [
    ({}, True),                                          # no cloud runs: the network goes
    ({1: ("/elsewhere", "mariadb")}, True),              # the machine's MariaDB is no cloud
    ({1: ("/elsewhere", "nova-compute")}, False),        # another cloud runs: it is theirs
])
def test_down_removes_its_guests_and_the_network_unless_another_cloud_runs(
        tmp_path, monkeypatch, recorder, marked, torn_down):
    layout = Layout(tmp_path / "ours")
    layout.make_dirs()
    monkeypatch.setattr(lifecycle, "machine_lock", lambda say: nullcontext())
    monkeypatch.setattr(procs, "marked_processes", lambda: marked)
    said = []
    assert lifecycle.down(layout, said.append) == ["guest u-ours"]
    assert recorder["guests"] == [(layout.root, "guests")]
    assert recorder["teardown"] == int(torn_down)
    kept = "network: kept namespace ivc-cloud and veth ivc-host: they are the running " \
        "cloud's of /elsewhere"
    assert (kept in said) is not torn_down
