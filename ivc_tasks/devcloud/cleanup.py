"""What a cloud's guests leave on the host, whose it is, and its removal (``down``, and ``up``
when it stops a cloud started from another checkout).

A guest of the cloud whose cache folder is ``R`` holds, on the host:

* processes: its init and everything under it (their root directory, as the host sees it, is
  ``R/data/guests/<uuid>/root``), and the launcher (``nsenter``/``unshare``) that started it;
* its overlay mount (upper layer ``R/data/guests/<uuid>/upper``), in the guest's own mount
  namespace, so it goes with the last process that sees it;
* its network namespace ``ivcg-<uuid>``, where ``<uuid>`` is a folder of ``R/data/guests``
  (instance uuids are random: no two clouds share one);
* loop devices over its volumes, whose backing files are ``R/data/volumes/<id>.img`` (or
  another file, as the guest's ``disks`` file records it).

``plan`` decides from a listing of the host (``HostView``, which ``host_view`` reads) which of
these are ``R``'s, and nothing else: everything is recognised by a path under ``R`` or by a
uuid of ``R``'s guests, never by a name alone, so another cloud's guests are never touched.
``apply`` removes them and returns one line per kind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import procs
from .layout import plugin_module

NETNS_DIR = Path("/run/netns")
GUEST_NS_PREFIX = "ivcg-"           # the plugin's guest.NETNS_PREFIX


@dataclass(frozen=True)
class HostProc:
    """One process as the clean-up sees it."""

    pid: int
    start: str                      # the kernel's start time: a reused PID is not the same process
    root: str = "/"                 # its root directory, as the host sees it
    netns: str | None = None        # the named network namespace (/run/netns) it is in
    upperdirs: tuple[str, ...] = ()  # upper layers of the overlays its mount namespace holds


@dataclass(frozen=True)
class HostView:
    """A listing of the host: processes, named network namespaces, loop devices, mounts."""

    procs: tuple[HostProc, ...] = ()
    namespaces: frozenset[str] = frozenset()
    loops: dict[str, str] = field(default_factory=dict)    # /dev/loopN -> backing file
    mounts: tuple[str, ...] = ()    # mount points in the host's own mount namespace


@dataclass
class Leftovers:
    """What one cloud's guests hold on the host."""

    root: Path
    procs: list[HostProc] = field(default_factory=list)
    overlays: list[str] = field(default_factory=list)      # guest uuids with a mounted overlay
    mounts: list[str] = field(default_factory=list)
    loops: list[tuple[str, str]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.procs or self.overlays or self.mounts or self.loops or self.namespaces)


def within(path: str, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or under it, component by component (``/a/dev`` is not
    under ``/a/devcloud``). A deleted backing file reads ``<path> (deleted)``."""
    path = path.removesuffix(" (deleted)")
    return os.path.isabs(path) and Path(os.path.normpath(path)).is_relative_to(folder)


def _guest_of(path: str, guests: Path) -> str | None:
    """The guest uuid of a path under ``<root>/data/guests/<uuid>/``, else None."""
    if not within(path, guests):
        return None
    parts = Path(os.path.normpath(path)).relative_to(guests).parts
    return parts[0] if parts else None


def plan(root: Path, uuids: set[str], view: HostView, me: int = -1,
         recorded: dict[str, str] | None = None) -> Leftovers:
    """What of ``view`` belongs to the guests of the cloud whose cache folder is ``root``.

    :param uuids: the guest folders under ``root/data/guests`` (``guest_uuids``).
    :param me: a PID never to stop (the caller's own).
    :param recorded: loop device -> backing file, as the guests' ``disks`` files record them
        (``recorded_loops``); such a device is the guest's only while it is over that file.
    """
    guests, volumes = root / "data" / "guests", root / "data" / "volumes"
    recorded = recorded or {}
    known = set(uuids)
    for proc in view.procs:          # a running guest whose folder went still holds its uuid
        for path in (proc.root, *proc.upperdirs):
            if (uuid := _guest_of(path, guests)) is not None:
                known.add(uuid)
    namespaces = sorted(n for n in view.namespaces
                        if n.startswith(GUEST_NS_PREFIX) and n[len(GUEST_NS_PREFIX):] in known)
    held = [p for p in view.procs if p.pid != me and (
        within(p.root, guests) or p.netns in namespaces
        or any(within(u, guests) for u in p.upperdirs))]
    overlays = sorted({uuid for p in held for u in p.upperdirs
                       if (uuid := _guest_of(u, guests)) is not None})
    mounts = sorted((m for m in view.mounts if within(m, guests)),
                    key=lambda m: (-m.count("/"), m))            # the deepest first
    loops = sorted((dev, f) for dev, f in view.loops.items()
                   if within(f, volumes) or recorded.get(dev) == f)
    return Leftovers(Path(root), sorted(held, key=lambda p: p.pid), overlays, mounts, loops,
                     namespaces)


def describe(left: Leftovers, label: str) -> list[str]:
    """One line per kind of thing removed (none when there was nothing)."""
    lines = []
    if left.procs:
        lines.append(f"{label}: ended {len(left.procs)} processes "
                     f"(pids {', '.join(str(p.pid) for p in left.procs)})")
    if left.overlays:
        lines.append(f"{label}: {len(left.overlays)} overlay mounts went with their processes "
                     f"({', '.join(left.overlays)})")
    if left.mounts:
        lines.append(f"{label}: unmounted {', '.join(left.mounts)}")
    if left.loops:
        lines.append(f"{label}: freed loop devices "
                     + ", ".join(f"{dev} ({Path(f.removesuffix(' (deleted)')).name})"
                                 for dev, f in left.loops))
    if left.namespaces:
        lines.append(f"{label}: removed network namespaces {', '.join(left.namespaces)}")
    return lines


def describe_left(left: Leftovers, label: str) -> str | None:
    """One line for what a removal could not remove (None when nothing is left)."""
    if not left:
        return None
    kinds = [f"{len(left.procs)} processes" if left.procs else "",
             f"mounts {', '.join(left.mounts)}" if left.mounts else "",
             f"loop devices {', '.join(d for d, _ in left.loops)}" if left.loops else "",
             f"namespaces {', '.join(left.namespaces)}" if left.namespaces else ""]
    return f"{label}: NOT removed: {'; '.join(k for k in kinds if k)}"


# -- the host: read and act --------------------------------------------------------------------

def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _unescape(field_: str) -> str:
    """A mountinfo path: space, tab, newline and backslash are octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field_ = field_.replace(code, char)
    return field_


def overlay_upperdirs(mountinfo: str) -> tuple[str, ...]:
    """The upper layers of the overlay mounts in a /proc/<pid>/mountinfo text."""
    found = []
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        words = tail.split()
        if not sep or len(words) < 3 or words[0] != "overlay":
            continue
        for option in words[2].split(","):
            if option.startswith("upperdir="):
                found.append(_unescape(option[len("upperdir="):]))
    return tuple(found)


def mount_points(mountinfo: str) -> tuple[str, ...]:
    return tuple(_unescape(line.split()[4]) for line in mountinfo.splitlines()
                 if len(line.split()) > 4)


def host_view() -> HostView:
    """Read the host (Linux /proc, /sys, /run/netns)."""
    try:
        names = [p.name for p in NETNS_DIR.iterdir()]
    except OSError:
        names = []
    by_inode = {}
    for name in names:
        try:
            by_inode[os.stat(NETNS_DIR / name).st_ino] = name
        except OSError:
            continue
    own_mnt = _readlink("/proc/self/ns/mnt")
    upper_by_mnt: dict[str, tuple[str, ...]] = {own_mnt: ()}
    found = []
    for pid in procs.pids():
        start = procs.start_time(pid)
        if start is None:
            continue
        net = _readlink(f"/proc/{pid}/ns/net") or ""
        netns = by_inode.get(int(net[5:-1])) if net.startswith("net:[") else None
        mnt = _readlink(f"/proc/{pid}/ns/mnt")
        if mnt is not None and mnt not in upper_by_mnt:
            try:
                upper_by_mnt[mnt] = overlay_upperdirs(Path(f"/proc/{pid}/mountinfo").read_text())
            except OSError:
                upper_by_mnt[mnt] = ()
        found.append(HostProc(pid, start, _readlink(f"/proc/{pid}/root") or "/", netns,
                              upper_by_mnt.get(mnt, ())))
    loops = {}
    for block in Path("/sys/block").glob("loop*"):
        try:
            backing = (block / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        loops[f"/dev/{block.name}"] = backing
    try:
        mounts = mount_points(Path("/proc/self/mountinfo").read_text())
    except OSError:
        mounts = ()
    return HostView(tuple(found), frozenset(names), loops, mounts)


def guest_uuids(root: Path) -> set[str]:
    folder = root / "data" / "guests"
    try:
        return {p.name for p in folder.iterdir() if p.is_dir()}
    except OSError:
        return set()


def recorded_loops(root: Path) -> dict[str, str]:
    """Loop device -> backing file, from the ``disks`` file of each guest of ``root``."""
    guest = plugin_module("guest")
    return {d["loop"]: d["file"] for uuid in sorted(guest_uuids(root))
            for d in guest.disks(uuid, root)}


def _run(*argv: str) -> bool:
    return subprocess.run(argv, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL).returncode == 0


def _kill(targets: list[HostProc], timeout: float = 5.0) -> None:
    """SIGKILL (a guest's power-off), each only while it is still the process listed."""
    for proc in targets:
        if procs.start_time(proc.pid) == proc.start:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):  # gone, or not ours to stop: said after
                pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and \
            any(procs.alive(procs.Proc(p.pid, p.start)) for p in targets):
        time.sleep(0.05)


def apply(left: Leftovers) -> Leftovers:
    """Remove what ``plan`` found: processes first (their overlays go with them), then host
    mounts, loop devices (each only while its backing file is still the one listed), network
    namespaces. Return what is still there afterwards (empty when all went)."""
    _kill(left.procs)
    for mount in left.mounts:
        _run("umount", "-l", mount)
    for dev, backing in left.loops:
        try:
            current = Path(f"/sys/block/{Path(dev).name}/loop/backing_file").read_text().strip()
        except OSError:
            continue
        if current == backing:
            _run("losetup", "-d", dev)
    for name in left.namespaces:
        _run("ip", "netns", "delete", name)
    return plan(left.root, guest_uuids(left.root), host_view(), os.getpid(),
                recorded_loops(left.root))


def remove_guests(root: Path, say, label: str = "guests") -> list[str]:
    """Stop the guests of the cloud whose cache folder is ``root`` and remove everything they
    hold on the host (their disks stay); say what, one line per kind. Return the uuids of the
    guests that were running."""
    guest = plugin_module("guest")
    left = plan(root, guest_uuids(root), host_view(), os.getpid(), recorded_loops(root))
    running = sorted(u for u in guest_uuids(root) if guest.running(u, root))
    for uuid in running:      # a power-off as Nova's stop makes it (a console line, no init.pid)
        guest.stop(uuid, root)
    if running:
        say(f"{label}: stopped {len(running)} ({', '.join(running)})")
    if left:
        still = apply(left)
        for line in describe(left, label):
            say(line)
        if (line := describe_left(still, label)) is not None:
            say(line)
    return running
