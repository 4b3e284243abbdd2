"""Real guests in the local cloud: what a server's cloud-init does with what Nova gives it.

Each server here gets a guest (a container booting Debian's cloud-init; see docs/guests.md):
the session turns guests off for the other tests' names (conftest), and these tests use names
of their own (``g-...``), for which guests stay on. Everything is read from inside the guest
with ``invoke devcloud.guest NAME -- CMD`` and from Nova's console log.
"""

import base64
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from .conftest import ROOT, Ivc

pytestmark = pytest.mark.cloud

FINAL = "Cloud-init v. "
GUEST_PREFIX = "g-"
DEVCLOUD = Path(os.environ.get("DEVCLOUD_DIR", ROOT / ".devcloud"))

TEMPLATE = """#cloud-config
hostname: {{ server }}
bootcmd:
  - echo boot >> /var/tmp/bootcmd.log
write_files:
  - path: /etc/ivc-greeting
    owner: nobody:nogroup
    permissions: "0640"
    content: {{ (greeting ~ " " ~ server ~ "\\n") | tojson }}
runcmd:
  - echo run >> /var/tmp/runcmd.log
  - install -o debian -g debian -m 0600 /dev/null /home/debian/from-runcmd
"""

SPEC = """
[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
keypair = "ivc-demo"
userdata = "templates/g.j2"
userdata_vars = { greeting = "hello" }

[servers.PREFIX-s1]
networks = ["private"]
files = [ { path = "/opt/tree", source = "tree", permissions = "0600", owner = "nobody:nogroup" } ]
"""


@pytest.fixture
def gvc(tmp_path, conn):
    """ivc's tasks, as the ``ivc`` fixture runs them, under a name whose servers get guests."""
    helper = Ivc(tmp_path, f"{GUEST_PREFIX}{uuid.uuid4().hex[:8]}", conn)
    (tmp_path / "env" / "templates" / "g.j2").write_text(TEMPLATE)
    tree = tmp_path / "env" / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("file a\n")
    (tree / "sub" / "b.txt").write_text("file b\n")
    yield helper
    helper.cleanup()


def guest(name, *argv, timeout=60):
    """``invoke devcloud.guest NAME -- ARGV``: its exit status and stdout."""
    proc = subprocess.run([sys.executable, "-m", "invoke", "devcloud.guest", name, "--", *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "DEVCLOUD_DIR": str(DEVCLOUD)})
    return proc.returncode, proc.stdout


def console(conn, server, length=None):
    return conn.compute.get_server_console_output(server, length=length)["output"]


def wait_booted(conn, server, boots=1, timeout=120):
    """Wait until the console shows the end of the boot ``boots`` times (cloud-init's final
    line, then the init's own); return the log."""
    deadline = time.monotonic() + timeout
    while True:
        text = console(conn, server)
        lines = text.splitlines()
        if sum(1 for line in lines if line.startswith(FINAL) and " finished at " in line) \
                >= boots and text.count("[ivc-init] boot done") >= boots:
            return text
        if time.monotonic() > deadline:
            pytest.fail(f"no cloud-init final line #{boots} after {timeout}s:\n{text[-3000:]}")
        time.sleep(1)


def leftovers(server_id, *extra_dirs):
    """What the guest of ``server_id`` would leave on the host if not cleaned."""
    dirs = (DEVCLOUD, *extra_dirs)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    overlays = subprocess.run(["findmnt", "-t", "overlay", "-n", "-o", "TARGET"],
                              capture_output=True, text=True).stdout
    return {"netns": f"ivcg-{server_id}" in netns,
            "state": any((d / "data" / "guests" / server_id).exists() for d in dirs),
            "loop": any(server_id in line for line in loops.splitlines()),
            "overlay": server_id in overlays}


def test_user_data_runs_from_the_config_drive_and_per_boot_modules_rerun(gvc, conn):
    gvc.write_spec(SPEC)
    run = gvc.run("deploy", "--json")
    assert run.code == 0, run
    name = f"{gvc.prefix}-s1"
    server = conn.compute.find_server(name, ignore_missing=False)
    assert str(conn.compute.get_server(server).has_config_drive) in ("True", "true")
    log = wait_booted(conn, server)
    assert "Datasource DataSourceConfigDrive" in log
    assert "-----BEGIN SSH HOST KEY KEYS-----" in log and "-----END SSH HOST KEY KEYS-----" in log
    tail = console(conn, server, length=3).splitlines()
    assert tail == log.splitlines()[-3:] and tail[-1].startswith("[ivc-init] boot done")

    code, out = guest(name, "stat", "-c", "%n %U:%G %a", "/etc/ivc-greeting",
                      "/opt/tree/a.txt", "/opt/tree/sub/b.txt", "/home/debian/from-runcmd")
    assert code == 0
    assert out.splitlines() == ["/etc/ivc-greeting nobody:nogroup 640",
                                "/opt/tree/a.txt nobody:nogroup 600",
                                "/opt/tree/sub/b.txt nobody:nogroup 600",
                                "/home/debian/from-runcmd debian:debian 600"]
    code, out = guest(name, "cat", "/etc/ivc-greeting", "/opt/tree/a.txt", "/opt/tree/sub/b.txt")
    assert (code, out) == (0, f"hello {name}\nfile a\nfile b\n")
    pub = (DEVCLOUD / "ivc-demo.pub").read_text().split()[1]
    code, out = guest(name, "cat", "/home/debian/.ssh/authorized_keys")
    assert code == 0 and pub in out
    assert guest(name, "sh", "-c", "exit 3")[0] == 3
    assert guest(name, "false")[0] == 1

    # stop/start: the disk is kept, bootcmd (per boot) runs again, runcmd (per instance) not
    conn.compute.stop_server(server)
    conn.compute.wait_for_server(server, status="SHUTOFF", interval=0.5, wait=60)
    assert guest(name, "true")[0] == 2  # no running guest: devcloud.guest says so, exit 2
    conn.compute.start_server(server)
    conn.compute.wait_for_server(server, status="ACTIVE", interval=0.5, wait=60)
    wait_booted(conn, server, boots=2)
    code, out = guest(name, "cat", "/var/tmp/bootcmd.log", "/var/tmp/runcmd.log")
    assert (code, out) == (0, "boot\nboot\nrun\n")

    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, interval=0.5, wait=60)
    assert leftovers(server.id) == {"netns": False, "state": False, "loop": False,
                                    "overlay": False}


def test_a_file_on_a_volume_survives_a_rotate(gvc, conn):
    volume = gvc.volume("data")
    gvc.write_spec(SPEC.replace('networks = ["private"]',
                                f'networks = ["private"]\nvolumes = ["{volume.name}"]'))
    assert gvc.run("deploy", "--json").code == 0
    name = f"{gvc.prefix}-s1"
    old = conn.compute.find_server(name, ignore_missing=False)
    wait_booted(conn, old)
    disk = f"/dev/disk/by-id/virtio-{volume.id[:20]}"
    code, out = guest(name, "sh", "-c", f"test -b {disk} && readlink -f {disk} && "
                      f"mkfs.ext4 -q {disk} && mount {disk} /mnt && echo kept > /mnt/f && "
                      "umount /mnt")
    assert (code, out) == (0, "/dev/vdb\n")
    backing = DEVCLOUD / "data" / "volumes" / f"{volume.id}.img"
    assert backing.stat().st_size == 1024 ** 3  # sparse: its size, not its blocks
    assert backing.stat().st_blocks * 512 < 100 * 1024 ** 2

    run = gvc.run("rotate", "--name", name, "--json")
    assert run.code == 0, run
    new = conn.compute.find_server(name, ignore_missing=False)
    assert new.id != old.id
    wait_booted(conn, new)
    code, out = guest(name, "sh", "-c", f"mount {disk} /mnt && cat /mnt/f && umount /mnt")
    assert (code, out) == (0, "kept\n")
    assert leftovers(old.id) == {"netns": False, "state": False, "loop": False,
                                 "overlay": False}


def test_no_config_drive_and_no_network_finds_no_datasource(conn):
    name = f"{GUEST_PREFIX}{uuid.uuid4().hex[:8]}-bare"
    image = next(iter(conn.image.images(name="ivc-tiny")))  # not find_image (deprecated)
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    user_data = base64.b64encode(b"#cloud-config\nruncmd:\n  - touch /var/tmp/ran\n").decode()
    server = conn.compute.create_server(name=name, image_id=image.id, flavor_id=flavor.id,
                                        networks="none", user_data=user_data)
    try:
        conn.compute.wait_for_server(server, status="ACTIVE", interval=0.5, wait=60)
        deadline = time.monotonic() + 120
        while "boot done" not in (log := console(conn, server)):
            assert time.monotonic() < deadline, log[-3000:]
            time.sleep(1)
        assert "No instance datasource found" in log
        assert guest(name, "test", "-e", "/var/tmp/ran")[0] == 1
    finally:
        conn.compute.delete_server(server, ignore_missing=True)
        conn.compute.wait_for_delete(server, interval=0.5, wait=60)


def test_down_stops_every_guest_and_frees_its_namespace_and_loop_devices(tmp_path):
    """What ``devcloud.down`` does for guests (``guests.stop_all``), on a guest of a folder of
    this test's own (the shared cloud's guests are left alone)."""
    from ivc_tasks.devcloud import guests
    from ivc_tasks.devcloud.layout import Layout

    guest = guests.plugin_module("guest")
    base = tmp_path / "devcloud"
    (base / "guest-root").mkdir(parents=True)
    (base / "guest-root" / "bookworm").symlink_to(DEVCLOUD / "guest-root" / "bookworm")
    uid = f"{GUEST_PREFIX}down-{uuid.uuid4().hex[:8]}"
    guest.prepare(uid, hostname="g-down", seed={}, base=base)
    volume = tmp_path / "vol.img"
    volume.write_bytes(b"")
    volume.chmod(0o600)
    with open(volume, "r+b") as handle:
        handle.truncate(64 * 1024 ** 2)
    pid = guest.start(uid, base)
    try:
        guest.attach_disk(uid, "0123456789abcdef0123456789", volume, "/dev/vdb", base)
        assert subprocess.run(guest.exec_argv(pid, ["test", "-b", "/dev/disk/by-id/virtio-"
                                                    "0123456789abcdef0123"])).returncode == 0
        loop = guest.disks(uid, base)[0]["loop"]
        said = []
        assert guests.stop_all(Layout(base), said.append) == [uid]
        assert said[0] == f"guests: stopped 1 ({uid})"       # then one line per kind
        assert said[1].startswith("guests: ended ") and f"{pid}" in said[1]
        assert said[2:] == [f"guests: 1 overlay mounts went with their processes ({uid})",
                            f"guests: freed loop devices {loop} (vol.img)",
                            f"guests: removed network namespaces ivcg-{uid}"]
        assert not Path(f"/proc/{pid}").exists() or guest._zombie(pid)
        assert subprocess.run(["losetup", "-j", str(volume)], capture_output=True,
                              text=True).stdout == ""
        assert leftovers(uid, base) == {"netns": False, "state": True, "loop": False,
                                  "overlay": False}  # the disk stays for the next up
    finally:
        guest.destroy(uid, base)
    assert leftovers(uid, base)["state"] is False


def test_removing_one_folders_guests_leaves_another_folders_running(tmp_path):
    """What ``up`` does to the guests of a cloud started from another checkout (and ``down``
    to its own), on two folders of this test's own: only that folder's guest, loop device and
    namespace go; the other's guest runs on with its disk."""
    from ivc_tasks.devcloud import guests
    from ivc_tasks.devcloud.layout import Layout

    guest = guests.plugin_module("guest")
    started = {}
    for side in ("a", "b"):
        base = tmp_path / ("devcloud" if side == "a" else "devcloud2")   # b's starts with a's
        (base / "guest-root").mkdir(parents=True)
        (base / "guest-root" / "bookworm").symlink_to(DEVCLOUD / "guest-root" / "bookworm")
        uid = f"{GUEST_PREFIX}two-{side}-{uuid.uuid4().hex[:8]}"
        guest.prepare(uid, hostname=f"g-two-{side}", seed={}, base=base)
        volume = base / "data" / "volumes" / f"{side}.img"
        volume.parent.mkdir(parents=True)
        with open(volume, "wb") as handle:
            handle.truncate(64 * 1024 ** 2)
        started[side] = (base, uid, guest.start(uid, base), volume)
    try:
        for base, uid, _, volume in started.values():
            guest.attach_disk(uid, "0123456789abcdef0123456789", volume, "/dev/vdb", base)
        base_a, uid_a, pid_a, vol_a = started["a"]
        base_b, uid_b, pid_b, vol_b = started["b"]
        said = []
        assert guests.stop_all(Layout(base_a), said.append, label="guests of A") == [uid_a]
        assert said[0] == f"guests of A: stopped 1 ({uid_a})"
        assert not guest.running(uid_a, base_a)
        assert leftovers(uid_a, base_a) == {"netns": False, "state": True, "loop": False,
                                            "overlay": False}
        assert subprocess.run(["losetup", "-j", str(vol_a)], capture_output=True,
                              text=True).stdout == ""
        # the other folder's guest: running, its namespace and its loop device still there
        assert guest.init_pid(uid_b, base_b) == pid_b
        assert Path(f"/run/netns/ivcg-{uid_b}").exists()
        assert str(vol_b) in subprocess.run(["losetup", "-j", str(vol_b)], capture_output=True,
                                            text=True).stdout
        assert all(uid_b not in line and str(base_b) not in line for line in said), said
    finally:
        for base, uid, _, _ in started.values():
            guest.destroy(uid, base)
