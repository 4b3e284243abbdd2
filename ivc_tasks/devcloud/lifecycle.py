"""devcloud up / down / status / reset: the local cloud's life cycle.

``up`` is idempotent and knows what it found: processes of a cloud started from ANOTHER checkout
are stopped first (they would fight over the ports, the queues and the fake compute host);
MariaDB and RabbitMQ, being the machine's, are reused when they already run; the databases are
reused only when MariaDB says this cache folder built them, and rebuilt otherwise (a fresh clone
on a machine that kept an earlier cloud's data). It says which, and it checks every port before
starting anything, so it never half-starts a second cloud.
"""

from __future__ import annotations

import fcntl
import os
import secrets as pysecrets
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import bootstrap, configs, guestnet, guests, procs, readiness, seed
from .bootstrap import DevcloudError
from .latency import LATENCY_ENV, LATENCY_SERVICES, latency, set_latency
from .layout import Layout, default_layout, load_secrets
from .readiness import START_TIMEOUT
from .services import Service, all_services, process_env

LOCK_FILE = Path("/tmp/ivc-devcloud.lock")


class Progress:
    """Progress lines on stderr, each with the seconds since the start."""

    def __init__(self, stream=sys.stderr):
        self.t0 = time.monotonic()
        self.stream = stream

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def __call__(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {message}", file=self.stream, flush=True)


@dataclass
class UpResult:
    installed: bool = False
    databases: str = ""            # "reused" | "rebuilt: <why>"
    started: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    stopped_foreign: list[str] = field(default_factory=list)
    seeded: bool = False
    seconds: float = 0.0


@contextmanager
def machine_lock(say):
    """One ``up``/``down``/``reset`` at a time on this machine, whatever the checkout."""
    with open(LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("waiting for another devcloud command on this machine to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _recorded(layout: Layout, service: Service) -> procs.Proc | None:
    proc = procs.read_pidfile(layout.pidfile(service.name))
    return proc if procs.alive(proc) else None


def _answers(service: Service) -> bool:
    if service.probe:
        return procs.http_answers(service.probe)
    return procs.tcp_open(service.port) if service.port else True


def _stop_foreign(layout: Layout, say) -> list[str]:
    """Stop OpenStack processes marked by another cache folder, or by ours but not recorded;
    then the guests of those other clouds and, unless this cloud's network agent runs, the
    cloud network they left (``_remove_foreign_guests``).

    Recorded means in any PID file of this cache folder, not only those of this checkout's
    services: a checkout that predates a service (netagent, say) must not stop it."""
    ours = {p.pid for f in layout.run.glob("*.pid")
            if (p := procs.read_pidfile(f)) and procs.alive(p)}
    groups: dict[int, tuple[str, str]] = {}
    for pid, (root, name) in procs.marked_processes().items():
        if name in guestnet.MACHINE_SERVICES or pid == os.getpid():
            continue
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:
            continue
        if root == str(layout.root) and pgid in ours:
            continue
        groups[pgid] = (root, name)
    stopped = []
    for pgid, (root, name) in sorted(groups.items()):
        whose = "an unrecorded process of this checkout" if root == str(layout.root) else \
            f"the devcloud of {root}"
        say(f"stopping {name} (pid {pgid}): {whose} holds the cloud's ports and queues")
        stopped.append(f"{name}@{root}")
    procs.stop(*(procs.Proc(pgid, procs.start_time(pgid) or "0") for pgid in groups))
    foreign = sorted({root for root, _ in groups.values() if root != str(layout.root)})
    return stopped + _remove_foreign_guests(layout, foreign, say)


def _remove_foreign_guests(layout: Layout, roots: list[str], say) -> list[str]:
    """The guests of the clouds at ``roots`` (whose processes were just stopped), and the
    cloud network their network agent made, unless this cloud's own agent runs (then it is
    this cloud's). Returns ``guest <uuid>@<root>`` for each guest that was running."""
    stopped = []
    for root in roots:
        stopped += [f"guest {uuid}@{root}" for uuid in
                    guests.stop_all(Layout(Path(root)), say, label=f"guests of {root}")]
    agent = next((s for s in all_services(layout) if s.name == "netagent"), None)
    if roots and not (agent and _recorded(layout, agent)):
        for what in guestnet.teardown():
            say(f"network of {', '.join(roots)}: removed {what}")
    return stopped


def _check_ports(layout: Layout, services: list[Service]) -> None:
    """Fail, starting nothing, if an API port is held by a process that is not this cloud's."""
    for service in services:
        if service.role == "infra" or not service.port:
            continue
        holder = procs.listener_pid(service.port)
        if holder is None:
            continue
        mine = _recorded(layout, service)
        if mine and holder > 0 and os.getpgid(holder) == mine.pid:
            continue
        what = Path(f"/proc/{holder}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120] \
            if holder > 0 else "an unknown process"
        raise DevcloudError(f"port {service.port} ({service.name}) is held by pid {holder}: "
                            f"{what}; stop it, then run `invoke devcloud.up` again "
                            "(nothing was started)")


def _start(layout: Layout, service: Service, say) -> procs.Proc:
    proc = procs.spawn(service.argv, env=process_env(layout, service),
                       log=layout.log(service.name), pidfile=layout.pidfile(service.name),
                       cwd=Path(service.cwd) if service.cwd else layout.root, user=service.user)
    say(f"{service.name}: started (pid {proc.pid})")
    return proc


def _log_size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


def _worker_crashed(log: Path, offset: int) -> bool:
    """gunicorn keeps restarting a worker whose app fails to load: notice it in the log."""
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            return b"exited with code" in handle.read()
    except OSError:
        return False


def _wait_answering(layout: Layout, pending: dict[str, tuple[Service, procs.Proc, float]],
                    say, timeout: float = START_TIMEOUT) -> None:
    """Wait until every started service answers; name the first that dies or times out."""
    deadline = time.monotonic() + timeout
    offsets = {name: _log_size(layout.log(name)) for name in pending}
    while pending:
        for name, (service, proc, t0) in list(pending.items()):
            if not procs.alive(proc) or _worker_crashed(layout.log(name), offsets[name]):
                raise DevcloudError(f"{name} failed during start-up; last lines of "
                                    f"{layout.log(name)}:\n{procs.tail(layout.log(name))}")
            if _answers(service):
                say(f"{name}: answering ({time.monotonic() - t0:.1f}s)")
                del pending[name]
        if pending and time.monotonic() > deadline:
            name = next(iter(pending))
            raise DevcloudError(f"{name} did not answer within {timeout:.0f}s; last lines of "
                                f"{layout.log(name)}:\n{procs.tail(layout.log(name))}")
        time.sleep(0.2)


def _ensure_running(layout: Layout, services: list[Service], say, result: UpResult) -> None:
    pending = {}
    for service in services:
        if _recorded(layout, service):
            result.reused.append(service.name)
            continue
        if service.role == "infra" and service.port and procs.tcp_open(service.port):
            say(f"{service.name}: already running on port {service.port} (the machine's); reusing")
            result.reused.append(service.name)
            continue
        if service.name == "mariadb":
            bootstrap.prepare_mariadb_datadir(say)
        pending[service.name] = (service, _start(layout, service, say), time.monotonic())
        result.started.append(service.name)
    _wait_answering(layout, pending, say)


def _databases_ours(layout: Layout) -> tuple[bool, str]:
    stamp_file = layout.stamp("databases")
    ours = stamp_file.read_text().strip() if stamp_file.exists() else None
    owner = bootstrap.db_owner(layout)
    if owner is None:
        return False, "MariaDB holds no devcloud databases yet"
    owner_stamp, owner_dir = owner.split(" ", 1)
    if ours is None:
        return False, f"this cache folder is new; the databases were built by {owner_dir}"
    if owner_stamp != ours:
        return False, f"the databases were rebuilt since by {owner_dir}"
    return True, ""


def ready(layout: Layout | None = None, services: list[Service] | None = None) -> bool:
    """Whether the cloud is up as ``up`` would leave it: every service this checkout started
    runs and answers, and the demo is seeded. The check a second ``up`` makes (well under a
    second); it changes nothing and takes no lock."""
    layout = layout or default_layout()
    services = services if services is not None else all_services(layout)
    return all(_recorded(layout, s) for s in services) and all(_answers(s) for s in services) \
        and _seeded(layout)


def _seeded(layout: Layout) -> bool:
    """Whether the seed holds everything this checkout's seed makes (``seed.SEED_VERSION``):
    a cloud seeded by an older checkout is seeded again, which adds only what is missing."""
    stamp = layout.stamp("seeded")
    return stamp.exists() and stamp.read_text().strip() == seed.SEED_VERSION


def up(layout: Layout | None = None, say=None) -> UpResult:
    """Install (first use), start and seed the local cloud; change nothing when it all runs.

    Longer than most functions here: it is the start-up sequence, step after step in the order
    they must run, each step a call of its own.

    :raises DevcloudError: a step failed; the message names the service and its log.
    """
    layout = layout or default_layout()
    say = say or Progress()
    t0 = time.monotonic()
    result = UpResult()
    layout.make_dirs()
    services = all_services(layout)
    infra = [s for s in services if s.role == "infra"]
    keystone = [s for s in services if s.name == "keystone"]
    rest = [s for s in services if s.role != "infra" and s.name != "keystone"]
    with machine_lock(say):
        _apply_latency_env(layout, say)
        if ready(layout, services):
            secrets = load_secrets(layout)
            seed.write_clouds_yaml(layout, secrets)
            result.reused = [s.name for s in services]
            result.databases = "reused"
            guests.ensure_root_or_say(layout, say)  # once, on a cloud predating guests
            say(f"all {len(services)} services already running and answering; nothing to do")
            result.seconds = time.monotonic() - t0
            return result
        bootstrap.ensure_debian_packages(say)
        with ThreadPoolExecutor(1) as pool:  # the guests' root builds while pip installs
            root = pool.submit(guests.ensure_root_or_say, layout, say)
            result.installed = bootstrap.ensure_venv(layout, say)
            root.result()
        secrets = load_secrets(layout)
        configs.write_all(layout, secrets)
        result.stopped_foreign = _stop_foreign(layout, say)
        _check_ports(layout, services)
        _ensure_running(layout, infra, say, result)
        ours, why = _databases_ours(layout)
        if ours:
            say("databases: reusing this checkout's (MariaDB records this cache folder as owner)")
            result.databases = "reused"
        else:
            say(f"databases: rebuilding, since {why}")
            result.databases = f"rebuilt: {why}"
            procs.stop(*(p for s in services if s.role != "infra" and (p := _recorded(layout, s))))
            layout.stamp("seeded").unlink(missing_ok=True)
            stamp = pysecrets.token_hex(8)
            bootstrap.rebuild_databases(layout, secrets, stamp, say)
            bootstrap.rebuild_queue(secrets, say)
            bootstrap.sync_databases(layout, secrets, say)
            bootstrap.record_db_owner(layout, stamp)
        _ensure_running(layout, keystone, say, result)
        if not _seeded(layout):
            seed.seed_identity(secrets, say)
        bootstrap.ensure_compute_id(layout)
        _ensure_running(layout, rest, say, result)
        if result.started:
            readiness.wait_cloud_ready(secrets, say, not ours, layout)
        if not _seeded(layout):
            try:
                seed.seed_demo(layout, secrets, say)
            except Exception as exc:  # noqa: BLE001 (seen once: a 403 from a service just started; idempotent)
                say(f"seeding failed ({type(exc).__name__}: {str(exc)[:160]}); trying once more")
                time.sleep(3)
                seed.seed_demo(layout, secrets, say)
            layout.stamp("seeded").write_text(seed.SEED_VERSION)
            result.seeded = True
        for path in seed.write_clouds_yaml(layout, secrets):
            say(f"wrote clouds.yaml entries {seed.CLOUD_NAME}, {seed.OVH_CLOUD_NAME}, "
                f"{seed.ADMIN_CLOUD_NAME} in {path}")
        result.seconds = time.monotonic() - t0
        say(f"devcloud up: {len(result.started)} started, {len(result.reused)} already running, "
            f"databases {result.databases.split(':')[0]} ({result.seconds:.1f}s)")
    return result


def down(layout: Layout | None = None, say=None) -> list[str]:
    """Stop exactly the processes this checkout's ``up`` started (its PID files), last first;
    then its guests, and what they hold on the host (``cleanup.py``), and the cloud network
    unless another cloud runs. Says what it removed, one line per kind."""
    layout = layout or default_layout()
    say = say or Progress()
    stopped = []
    with machine_lock(say):
        running = [(s, p) for s in reversed(all_services(layout)) if (p := _recorded(layout, s))]
        # OpenStack services first (they talk to the queue and database on the way out).
        for group in ([x for x in running if x[0].role != "infra"],
                      [x for x in running if x[0].role == "infra"]):
            procs.stop(*(proc for _, proc in group))
            for service, proc in group:
                say(f"{service.name}: stopped (pid {proc.pid})")
                stopped.append(service.name)
        for service in all_services(layout):
            layout.pidfile(service.name).unlink(missing_ok=True)
        # Anything still marked with this cache folder escaped its process group: stop it too.
        strays = {pid: name for pid, (root, name) in procs.marked_processes().items()
                  if root == str(layout.root) and pid != os.getpid()}
        procs.stop(*(procs.Proc(pid, procs.start_time(pid) or "0") for pid in strays))
        for pid, name in strays.items():
            say(f"{name}: stopped a stray process (pid {pid})")
        # The guests once the agent and nova-compute have stopped (neither plugs nor boots one
        # again), then the network: only when no other cloud runs, whose network it would be.
        stopped += [f"guest {uuid}" for uuid in guests.stop_all(layout, say)]
        others = guestnet.other_clouds(str(layout.root), procs.marked_processes())
        if others:
            say(f"network: kept namespace {guestnet.CLOUD_NS} and veth {guestnet.HOST_DEV}: "
                f"they are the running cloud's of {', '.join(others)}")
        else:
            for what in guestnet.teardown():
                say(f"network: removed {what}")
    if not stopped:
        say("nothing of this checkout's devcloud was running")
    return stopped


def _apply_latency_env(layout: Layout, say) -> None:
    """``DEVCLOUD_LATENCY`` set: write that mode; stop the driver services that predate it (the
    rest of ``up`` starts them again, on the current plugin, and waits until they report)."""
    value = os.environ.get(LATENCY_ENV)
    if value is None:
        return
    config = set_latency(value, layout=layout)
    say(f"latency: {config['mode']}{' x' + str(config['factor']) if 'factor' in config else ''}"
        f" (from {LATENCY_ENV}; no restart needed to change it later)")
    stale = [name for name, ok in latency(layout)["honoured_by"].items() if not ok]
    for service in all_services(layout):
        if service.name in stale and (proc := _recorded(layout, service)):
            say(f"{service.name}: restarting, its running driver predates the latency setting "
                "(or the plugin's current code)")
            procs.stop(proc)
            layout.pidfile(service.name).unlink(missing_ok=True)


def status(layout: Layout | None = None) -> list[dict]:
    """Each service: its role, port, PID (ours or the machine's) and whether it answers; the
    fake driver services also say the latency mode (``latency``) and whether they honour it."""
    layout = layout or default_layout()
    lat = latency(layout)
    rows = []
    for service in all_services(layout):
        proc = _recorded(layout, service)
        pid, owner = (proc.pid, "devcloud") if proc else (None, None)
        if not proc and service.port:
            holder = procs.listener_pid(service.port)
            if holder:
                pid, owner = holder, "other"
        running = pid is not None
        rows.append({"service": service.name, "role": service.role, "port": service.port,
                     "pid": pid, "owner": owner, "running": running,
                     "answering": running and _answers(service)})
        if service.name in LATENCY_SERVICES:
            rows[-1]["latency"] = lat["mode"] if lat["honoured_by"][service.name] else \
                f"{lat['mode']} (not honoured: DEVCLOUD_LATENCY=<mode> devcloud.up restarts it)"
    return rows


def reset(layout: Layout | None = None, say=None) -> UpResult:
    """Wipe the cloud's data (databases, images, volumes' state) but keep the install; then up.

    The next ``up`` rebuilds the databases because the ownership stamp is gone.
    """
    layout = layout or default_layout()
    say = say or Progress()
    with machine_lock(say):
        running = [p for s in all_services(layout) if s.role != "infra" and (p := _recorded(layout, s))]
        procs.stop(*running)
        say(f"stopped {len(running)} OpenStack processes")
        for name in ("databases", "seeded"):
            layout.stamp(name).unlink(missing_ok=True)
        guests.remove_disks(layout, say)
        shutil.rmtree(layout.data, ignore_errors=True)
        say("wiped the cloud's data; the install and configs are kept")
    return up(layout, say)
