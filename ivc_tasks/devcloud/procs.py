"""Background processes: start with a PID file, recognise, probe, stop. Linux /proc only.

A PID file holds ``<pid> <start time>``: the start time (field 22 of /proc/<pid>/stat) guards
against a reused PID, so that ``down`` stops exactly the processes it started and nothing else.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .layout import MARK


@dataclass(frozen=True)
class Proc:
    pid: int
    start: str


def start_time(pid: int) -> str | None:
    """Return the kernel's start time of a process, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def alive(proc: Proc | None) -> bool:
    return proc is not None and start_time(proc.pid) == proc.start and not is_zombie(proc.pid)


def read_pidfile(path: Path) -> Proc | None:
    try:
        pid, start = path.read_text().split()
        return Proc(int(pid), start)
    except (OSError, ValueError):
        return None


def spawn(argv: list[str], *, env: dict[str, str], log: Path, pidfile: Path, cwd: Path,
          user: str | None = None) -> Proc:
    """Start a detached process (own session) logging to ``log``; record it in ``pidfile``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        child = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 user=user, group=user)
    proc = Proc(child.pid, start_time(child.pid) or "0")
    pidfile.write_text(f"{proc.pid} {proc.start}\n")
    return proc


def _signal(proc: Proc, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass


def stop(*targets: Proc, timeout: float = 10.0) -> None:
    """Stop processes with their process groups, all at once: SIGTERM, SIGKILL after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        left = [proc for proc in targets if alive(proc)]
        if not left:
            return
        for proc in left:
            _signal(proc, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(alive(proc) for proc in left):
            time.sleep(0.1)


def pids() -> list[int]:
    """Every process id in /proc."""
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


MARKER_FILE = ".ivc-devcloud"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def marked_processes() -> dict[int, tuple[str, str]]:
    """Return {pid: (cache folder, service)} for every process a devcloud started.

    A process is recognised by the mark in its environment or, since gunicorn and the oslo
    services overwrite that memory when they set their process titles, by its working
    directory: a devcloud starts its services in its cache folder, which holds a marker file.
    """
    found = {}
    for pid in pids():
        env = environ_of(pid)
        if MARK in env:
            found[pid] = (env[MARK], env.get("IVC_DEVCLOUD_SERVICE", "?"))
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if os.path.exists(os.path.join(cwd, MARKER_FILE)):
            found[pid] = (cwd, _cmdline(pid)[:40] or "?")
    return found


def listener_pid(port: int) -> int | None:
    """Return a PID listening on TCP ``port`` (any address), None if no one listens.

    Returns -1 when something listens but its process cannot be found.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in targets:
                    return int(entry.name)
        except OSError:
            continue
    return -1


def tcp_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_answers(url: str, timeout: float = 2.0) -> bool:
    """True when the URL answers with any status below 500."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])
