"""A server's guest: an isolated Linux container booted from the shared Debian root.

No import of nova or cinder here: the virt driver calls it, and so do ivc's own devcloud tasks
(``down``, ``devcloud.guest``), which load this file from the plugin folder.

Per server, under ``<devcloud dir>/data/guests/<instance uuid>/``:

* ``upper/``, ``work/``: the overlay's per-server layer (the server's disk; kept while it is
  stopped), ``root/``: where the overlay is mounted inside the guest's own mount namespace;
* ``console.log``: what the boot printed; ``macs``: the instance's MACs, one a line;
* ``disks``: attached volumes, ``<device> <major>:<minor> <by-id name> <loop device>`` a line;
* ``init.pid``: ``<pid> <start time>`` of the guest's init (PID 1 inside), while it runs.

Its network namespace is ``/run/netns/ivcg-<uuid>`` (``lo`` up, nothing else: the network
agent plugs the ports). The guest's processes are in a session of their own and carry no
devcloud mark, so that a restart of nova-compute leaves them running.
"""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

NETNS_PREFIX = "ivcg-"
ROOT_NAME = "bookworm"
CLOUD_CFG = """\
# Written by the ivc devcloud at each boot: the datasources a VM on this cloud has.
datasource_list: [ ConfigDrive, OpenStack ]
network: {config: disabled}
# Debian's cloud.cfg runs the locale module; the root has no `locales` package (a user's
# cloud-config may set another locale, and install it)
locale: C.UTF-8
datasource:
  OpenStack:
    max_wait: 10
    timeout: 2
    retries: 1
"""
CONSOLE_MAX = 100 * 1024  # what nova's libvirt driver keeps of a console log
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def devcloud_dir():
    root = os.environ.get("IVC_DEVCLOUD_DIR")
    return Path(root) if root else None


def root_dir(base=None):
    """The shared read-only Debian root (built by ``devcloud.up``)."""
    return Path(base or devcloud_dir()) / "guest-root" / ROOT_NAME


def guests_dir(base=None):
    return Path(base or devcloud_dir()) / "data" / "guests"


def state_dir(uuid, base=None):
    return guests_dir(base) / uuid


def netns_name(uuid):
    return f"{NETNS_PREFIX}{uuid}"


def available(base=None):
    """Why guests cannot run here, or None when they can (root, and the root filesystem built)."""
    if os.geteuid() != 0:
        return "not root: cannot make namespaces"
    if not (root_dir(base) / "usr/bin/cloud-init").exists():
        return f"no guest root filesystem at {root_dir(base)} (devcloud.up builds it)"
    return None


def _run(argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)


def _start_time(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def init_pid(uuid, base=None):
    """The host PID of the guest's init, or None when the guest is not running."""
    try:
        pid, start = (state_dir(uuid, base) / "init.pid").read_text().split()
    except (OSError, ValueError):
        return None
    if _start_time(int(pid)) != start:
        return None
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return None
    except OSError:
        return None
    return int(pid)


def running(uuid, base=None):
    return init_pid(uuid, base) is not None


def ensure_netns(uuid):
    name = netns_name(uuid)
    if not Path(f"/run/netns/{name}").exists():
        _run(["ip", "netns", "add", name])
    _run(["ip", "-n", name, "link", "set", "lo", "up"])


def delete_netns(uuid):
    if Path(f"/run/netns/{netns_name(uuid)}").exists():
        _run(["ip", "netns", "delete", netns_name(uuid)], check=False)


def prepare(uuid, *, hostname, macs=(), seed=None, base=None):
    """Make (or keep) the server's disk and write what this boot needs into its upper layer.

    :param seed: ``{relative path: bytes}``, the config drive's tree, written once (at the
        first boot) under /var/lib/cloud/seed/config_drive; None: no config drive.
    """
    folder = state_dir(uuid, base)
    for sub in ("upper", "work", "root"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "hostname").write_text(hostname)
    (folder / "macs").write_text("".join(f"{mac}\n" for mac in macs))
    upper = folder / "upper"
    if seed is not None and not (folder / "seeded").exists():
        drive = upper / "var/lib/cloud/seed/config_drive"
        for path, data in seed.items():
            target = drive / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data if isinstance(data, bytes) else str(data).encode())
        (folder / "seeded").write_text("config drive\n")
    cfg = upper / "etc/cloud/cloud.cfg.d/90-ivc-devcloud.cfg"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(CLOUD_CFG)
    # cloud-init 22.4 reads the datasource's network config (and fails on a NIC it cannot
    # find) before it looks at `network: {config: disabled}`, unless this marker exists: the
    # addresses are set from outside, so it has nothing to render anyway.
    marker = upper / "var/lib/cloud/data/upgraded-network"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    init = upper / "usr/local/sbin/ivc-init"
    init.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("guest_init.py"), init)
    init.chmod(0o755)
    return folder


def start(uuid, base=None, timeout=10.0):
    """Boot the guest (its disk prepared); return the host PID of its init.

    :raises RuntimeError: the boot script failed before the init started.
    """
    if running(uuid, base):
        return init_pid(uuid, base)
    folder = state_dir(uuid, base)
    ensure_netns(uuid)
    refresh_disks(uuid, base)
    with open(folder / "console.log", "ab") as log:
        log.write(f"[ivc] power on {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        log.flush()
        launcher = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{netns_name(uuid)}", "unshare", "--mount", "--pid",
             "--uts", "--ipc", "--fork", "--kill-child", "sh",
             str(Path(__file__).with_name("boot.sh")), str(folder), str(root_dir(base)),
             (folder / "hostname").read_text()],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/", start_new_session=True,
            env={"PATH": GUEST_PATH})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = _children(launcher.pid)
        if children:
            pid = children[0]
            (folder / "init.pid").write_text(f"{pid} {_start_time(pid)}\n")
            # The launcher waits for its child; reap it in the background when it ends.
            _reap_later(launcher)
            return pid
        if launcher.poll() is not None:
            raise RuntimeError(f"guest {uuid} failed to boot (exit {launcher.returncode}): "
                               + console(uuid, base)[-600:].decode(errors="replace"))
        time.sleep(0.02)
    launcher.kill()
    raise RuntimeError(f"guest {uuid}: no init after {timeout:.0f}s")


def _reap_later(proc):
    import threading
    threading.Thread(target=proc.wait, daemon=True).start()


def _children(pid):
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def stop(uuid, base=None, timeout=5.0):
    """Power off: kill the init, so that the kernel kills every process of the guest.

    The disk (upper layer), the network namespace and the loop devices stay.
    """
    pid = init_pid(uuid, base)
    folder = state_dir(uuid, base)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _start_time(pid) is not None \
                and not _zombie(pid):
            time.sleep(0.02)
        with open(folder / "console.log", "ab") as log:
            log.write(f"[ivc] power off {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    (folder / "init.pid").unlink(missing_ok=True)


def _zombie(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def destroy(uuid, base=None):
    """Delete the guest: stop it, free its loop devices, remove its disk and network namespace."""
    stop(uuid, base)
    folder = state_dir(uuid, base)
    for disk in disks(uuid, base):
        free_loop(disk)
    delete_netns(uuid)
    shutil.rmtree(folder, ignore_errors=True)


def console(uuid, base=None, limit=CONSOLE_MAX):
    """The last ``limit`` bytes of the console log (b"" when there is none)."""
    path = state_dir(uuid, base) / "console.log"
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - limit))
            data = handle.read()
    except OSError:
        return b""
    if size > limit and b"\n" in data:
        data = data.split(b"\n", 1)[1]  # no half line at the top
    return data


# -- volumes as disks ------------------------------------------------------------------------

def volume_file(volume_id, base=None):
    """The sparse file that backs a volume (made by the volume driver at create)."""
    return Path(base or devcloud_dir()) / "data" / "volumes" / f"{volume_id}.img"


def next_device(used):
    """The next free virtio disk name (/dev/vdb first: vda is the root)."""
    taken = {guest_device(name) for name in used if name}
    for letter in "bcdefghijklmnopqrstuvwxyz":
        if f"vd{letter}" not in taken:
            return f"/dev/vd{letter}"
    raise RuntimeError("no free disk name (vdb..vdz all used)")


def guest_device(mountpoint):
    """The name in the guest's /dev: always virtio's (a server made before the driver named
    its disks vdX may have been given /dev/sdb)."""
    name = os.path.basename(mountpoint)
    for prefix in ("xvd", "sd", "hd"):
        if name.startswith(prefix):
            return "vd" + name[len(prefix):]
    return name


def by_id_name(volume_id):
    """The name KVM's virtio gives a volume under /dev/disk/by-id/."""
    return f"virtio-{volume_id[:20]}"


def disks(uuid, base=None):
    try:
        lines = (state_dir(uuid, base) / "disks").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) == 5:
            out.append(dict(zip(("device", "majmin", "by_id", "loop", "file"), parts, strict=False)))
    return out


def _write_disks(uuid, entries, base=None):
    text = "".join(f"{d['device']} {d['majmin']} {d['by_id']} {d['loop']} {d['file']}\n"
                   for d in entries)
    (state_dir(uuid, base) / "disks").write_text(text)


def attach_disk(uuid, volume_id, backing_file, device, base=None):
    """Make a loop device over the volume's file; show it in the guest as /dev/<device> and
    /dev/disk/by-id/virtio-<id[:20]> (now if it runs, at its next boot otherwise)."""
    device = guest_device(device)
    current = [d for d in disks(uuid, base) if d["device"] != device]
    entry = _loop({"device": device, "by_id": by_id_name(volume_id), "loop": "-",
                   "file": str(backing_file)})
    _write_disks(uuid, current + [entry], base)
    pid = init_pid(uuid, base)
    if pid is not None:
        major, minor = entry["majmin"].split(":")
        guest_exec(pid, ["sh", "-c", f"rm -f /dev/{device}; mknod -m 660 /dev/{device} b "
                         f"{major} {minor} && mkdir -p /dev/disk/by-id && ln -sf ../../{device} "
                         f"/dev/disk/by-id/{entry['by_id']}"], check=True)
    return entry


def _loop_holds(entry):
    """Whether the entry's loop device is still over the entry's file (``down`` frees loop
    devices; the kernel may give the number to another file since, of another cloud even)."""
    try:
        name = os.path.basename(entry["loop"])
        return Path(f"/sys/block/{name}/loop/backing_file").read_text().strip() == entry["file"]
    except OSError:
        return False


def free_loop(entry):
    """Detach the entry's loop device, only while it is still over the entry's file."""
    if _loop_holds(entry):
        _run(["losetup", "-d", entry["loop"]], check=False)


def _loop(entry):
    """The entry with a loop device over its file (a new one unless its own still is)."""
    if _loop_holds(entry):
        return entry
    loop = _run(["losetup", "--find", "--show", entry["file"]]).stdout.strip()
    rdev = os.stat(loop).st_rdev
    return {**entry, "loop": loop, "majmin": f"{os.major(rdev)}:{os.minor(rdev)}"}


def refresh_disks(uuid, base=None):
    """Loop devices again for the disks that lost theirs (``devcloud.down`` frees them)."""
    entries = disks(uuid, base)
    if entries:
        _write_disks(uuid, [_loop(d) for d in entries], base)


def detach_disk(uuid, device, base=None):
    device = guest_device(device)
    entries = disks(uuid, base)
    gone = [d for d in entries if guest_device(d["device"]) == device]
    _write_disks(uuid, [d for d in entries if d not in gone], base)
    pid = init_pid(uuid, base)
    for entry in gone:
        if pid is not None:
            guest_exec(pid, ["sh", "-c", f"rm -f /dev/{entry['device']} "
                             f"/dev/disk/by-id/{entry['by_id']}"])
        free_loop(entry)
    return gone


# -- exec --------------------------------------------------------------------------------------

def exec_argv(pid, argv):
    """The command line that runs ``argv`` inside the guest whose init is ``pid``."""
    return ["nsenter", f"--target={pid}", "--mount", "--uts", "--ipc", "--net", "--pid",
            "--root", "--wd", "--", "env", "-i", f"PATH={GUEST_PATH}", "HOME=/root",
            "LANG=C.UTF-8", *argv]


def guest_exec(pid, argv, check=False, **kwargs):
    return subprocess.run(exec_argv(pid, argv), check=check, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, **kwargs)
