"""The guest's init (PID 1 of its PID namespace), run by the guest's own python3.

Copied into each guest as /usr/local/sbin/ivc-init at every boot. It does what a VM's systemd
does for cloud-init, no more:

* relays /dev/console (a FIFO in the guest's own /dev) to the console log (fd 3, opened by the
  boot script before the chroot), since cloud-init writes the SSH host keys block there;
* runs cloud-init's four stages in order, each whatever the previous one's exit status, as
  systemd runs its units: ``init --local``; a wait (20 s at most) for the instance's NICs to
  have their MAC and IPv4 address (the network is plugged from outside); ``init``; sshd (its
  host keys exist by then); ``modules --mode config``; ``modules --mode final``;
* serves /dev/log into /var/log/syslog;
* reaps every orphan, and stays, so that what cloud-init started keeps running until the
  server stops (stopping kills this process, and the kernel kills the rest of the namespace).

Standalone on purpose: no import of the plugin, which lives outside the guest.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

CONSOLE_FD = 3
MACS_FILE = "/run/ivc/macs"
NET_WAIT = 20.0
STAGES = (["cloud-init", "init", "--local"], ["cloud-init", "init"],
          ["cloud-init", "modules", "--mode", "config"],
          ["cloud-init", "modules", "--mode", "final"])


def say(text):
    os.write(CONSOLE_FD, f"[ivc-init] {text}\n".encode())


def relay_console():
    """Copy what is written to /dev/console into the console log, for as long as we live."""
    try:
        fd = os.open("/dev/console", os.O_RDWR)  # RDWR: never EOF when writers come and go
    except OSError as exc:
        say(f"no /dev/console relay: {exc}")
        return
    while True:
        data = os.read(fd, 65536)
        if data:
            os.write(CONSOLE_FD, data)


def syslog():
    """/dev/log for the guest's programs (logger, sshd): appended to /var/log/syslog, as a
    VM's syslog daemon would (none of it goes to the console)."""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind("/dev/log")
    except OSError as exc:
        say(f"no /dev/log: {exc}")
        return
    with open("/var/log/syslog", "ab", buffering=0) as log:
        while True:
            data = sock.recv(65536)
            log.write(time.strftime("%b %d %H:%M:%S ").encode() + data.rstrip(b"\n\0") + b"\n")


def addresses():
    """{mac: has an IPv4 address} for the interfaces of this network namespace."""
    try:
        links = json.loads(subprocess.run(["ip", "-j", "addr", "show"], capture_output=True,
                                          text=True, timeout=5).stdout or "[]")
    except (OSError, ValueError, subprocess.SubprocessError):
        return {}
    return {link.get("address", "").lower(): any(a.get("family") == "inet"
                                                  for a in link.get("addr_info", []))
            for link in links}


def wait_network(deadline=NET_WAIT):
    try:
        with open(MACS_FILE) as handle:
            wanted = [line.strip().lower() for line in handle if line.strip()]
    except OSError:
        wanted = []
    if not wanted:
        return
    say(f"waiting up to {deadline:.0f}s for the interfaces {', '.join(wanted)} and their "
        "IPv4 addresses")
    t0 = time.monotonic()
    while True:
        found = addresses()
        missing = [mac for mac in wanted if not found.get(mac)]
        if not missing:
            say(f"network ready ({time.monotonic() - t0:.1f}s)")
            return
        if time.monotonic() - t0 > deadline:
            say(f"network not ready after {deadline:.0f}s (missing: {', '.join(missing)}); "
                "booting on")
            return
        time.sleep(0.2)


class Reaper:
    """Reap every child (orphans included); remember the exit status of the ones we wait for."""

    def __init__(self):
        self.status = {}
        self.lock = threading.Condition()

    def run(self):
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                time.sleep(0.5)
                continue
            with self.lock:
                self.status[pid] = os.waitstatus_to_exitcode(status)
                self.lock.notify_all()

    def wait(self, pid):
        with self.lock:
            while pid not in self.status:
                self.lock.wait()
            return self.status.pop(pid)


def run(reaper, argv):
    out = os.dup(CONSOLE_FD)
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    except OSError as exc:
        say(f"{' '.join(argv)}: {exc}")
        return 127
    finally:
        os.close(out)
    child.returncode = 0  # the reaper owns the wait; keep Popen from waiting too
    return reaper.wait(child.pid)


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    reaper = Reaper()
    threading.Thread(target=relay_console, daemon=True).start()
    threading.Thread(target=syslog, daemon=True).start()
    say(f"booting {os.uname().nodename}")
    t0 = time.monotonic()
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    reaper_thread = threading.Thread(target=reaper.run, daemon=True)
    reaper_thread.start()
    for index, stage in enumerate(STAGES):
        if index == 1:
            wait_network()
        code = run(reaper, stage)
        say(f"{' '.join(stage)}: exit {code} ({time.monotonic() - t0:.1f}s)")
        if index == 1:
            code = run(reaper, ["/usr/sbin/sshd"])
            say(f"sshd: {'started' if code == 0 else f'exit {code}'}")
    say(f"boot done ({time.monotonic() - t0:.1f}s)")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
