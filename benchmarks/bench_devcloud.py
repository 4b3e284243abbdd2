"""Benchmark the local cloud: start times, memory (PSS), boot and attach latency. Prints figures.

    python benchmarks/bench_devcloud.py            # warm start, second up, PSS, boot, attach
    python benchmarks/bench_devcloud.py --cold     # also a cold install + start (wipes .devcloud)
    python benchmarks/bench_devcloud.py --guests-only  # only the guests' figures (no down/up:
                                                       # fine on a cloud others are using)

Targets (issue 2): cold install + start <= 6 min; warm start (installed, stopped) <= 60 s;
a second `up` while running <= 5 s; all services <= 2.5 GiB PSS; one boot to ACTIVE <= 6 s;
one volume attach to in-use <= 4 s. Guests (issue 16): ACTIVE -> cloud-init's final line on the
console, median <= 10 s; 8 guests booted at once all finish; an idle guest <= 60 MB PSS; the
cloud with 8 idle guests <= 3 GiB PSS.
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivc_tasks.devcloud import guests as guests_mod
from ivc_tasks.devcloud import layout as layout_mod
from ivc_tasks.devcloud import procs
from ivc_tasks.devcloud.services import all_services


def timed_up() -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "invoke", "devcloud.up"], cwd=ROOT, check=True,
                   stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def cloud_pids(layout) -> set[int]:
    pids = {pid for pid, (root, _) in procs.marked_processes().items() if root == str(layout.root)}
    for service in all_services(layout):  # infra may run with other cwd/env: add by port
        if service.port and (pid := procs.listener_pid(service.port)) and pid > 0:
            pids.add(pid)
    # children of those (gunicorn workers, rabbit's helpers, ...)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid in pids:
                pids.add(int(entry.name))
    return pids


def pss_gib(pids) -> tuple[float, float]:
    pss = rss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1])
        except OSError:
            pass
    return pss / 2**20, rss / 2**20


def boot_and_attach(runs: int = 3) -> tuple[list[float], list[float]]:
    import openstack
    conn = openstack.connect(cloud="ivc-local")
    (image,) = list(conn.image.images(name="ivc-tiny"))  # not find_image: deprecated inside
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    net = conn.network.find_network("private", ignore_missing=False)
    boots, attaches = [], []
    for _ in range(runs):
        name = f"bench-{uuid.uuid4().hex[:6]}"
        vol = conn.block_storage.create_volume(name=name, size=1)
        conn.block_storage.wait_for_status(vol, "available", interval=0.2, wait=60)
        t0 = time.monotonic()
        server = conn.compute.create_server(name=name, image_id=image.id, flavor_id=flavor.id,
                                            networks=[{"uuid": net.id}])
        conn.compute.wait_for_server(server, interval=0.2, wait=120)
        boots.append(time.monotonic() - t0)
        t0 = time.monotonic()
        conn.compute.create_volume_attachment(server, volume=vol)
        conn.block_storage.wait_for_status(vol, "in-use", interval=0.2, wait=60)
        attaches.append(time.monotonic() - t0)
        conn.compute.delete_server(server)
        conn.compute.wait_for_delete(server, interval=0.2, wait=120)
        conn.block_storage.wait_for_status(vol, "available", interval=0.2, wait=60)
        conn.block_storage.delete_volume(vol)
    return boots, attaches


FINAL = " finished at "


def _finished(conn, server) -> bool:
    try:
        text = conn.compute.get_server_console_output(server, length=40)["output"]
    except Exception:  # noqa: BLE001 - a busy API: try again
        return False
    return any(line.startswith("Cloud-init v. ") and FINAL in line for line in text.splitlines())


def _boot_servers(conn, names, config_drive=True):
    image = next(iter(conn.image.images(name="ivc-tiny")))  # not find_image (deprecated)
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    net = conn.network.find_network("private", ignore_missing=False)
    return [conn.compute.create_server(name=name, image_id=image.id, flavor_id=flavor.id,
                                       networks=[{"uuid": net.id}], config_drive=config_drive,
                                       key_name="ivc-demo") for name in names]


def _wait_final(conn, servers, timeout=180.0):
    """{server id: seconds from ACTIVE to cloud-init's final line} (None: not within timeout)."""
    active, done = {}, {}
    deadline = time.monotonic() + timeout
    while len(done) < len(servers) and time.monotonic() < deadline:
        for server in servers:
            if server.id in done:
                continue
            if server.id not in active:
                if conn.compute.get_server(server).status == "ACTIVE":
                    active[server.id] = time.monotonic()
                continue
            if _finished(conn, server):
                done[server.id] = time.monotonic() - active[server.id]
        time.sleep(0.25)
    return {s.id: done.get(s.id) for s in servers}


def _ns_pss_mib(init_pid: int) -> float:
    """PSS (MiB) of every process in the PID namespace of ``init_pid``."""
    try:
        target = str(Path(f"/proc/{init_pid}/ns/pid").readlink())
    except OSError:
        return 0.0
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str((entry / "ns/pid").readlink()) == target:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pss_gib(pids)[0] * 1024


def guest_figures(layout, runs: int = 3) -> list[tuple]:
    """Boot time (ACTIVE -> final line), 8 at once, idle guest PSS, cloud + 8 guests PSS."""
    import openstack
    conn = openstack.connect(cloud="ivc-local")
    prefix = f"g-bench-{uuid.uuid4().hex[:4]}"
    switch = guests_mod.plugin_module("guest_mode")
    added = not switch.enabled(guests_mod.mode(layout), prefix)
    if added:  # guests are off for this name on this cloud: on for the benchmark's servers only
        guests_mod.set_mode("on", prefix, layout)
    guest = guests_mod.plugin_module("guest")
    rows, made = [], []
    try:
        singles = []
        for i in range(runs):
            server = _boot_servers(conn, [f"{prefix}-one{i}"])[0]
            made.append(server)
            singles.append(_wait_final(conn, [server])[server.id])
        ok = [t for t in singles if t is not None]
        rows.append((f"guest boot ACTIVE -> final line (median of {runs})",
                     statistics.median(ok) if ok else float("inf"), 10, "s"))
        for server in made:
            conn.compute.delete_server(server)
        for server in made:
            conn.compute.wait_for_delete(server, interval=0.5, wait=120)
        made = _boot_servers(conn, [f"{prefix}-m{i}" for i in range(8)])
        t0 = time.monotonic()
        times = _wait_final(conn, made, timeout=300)
        finished = [t for t in times.values() if t is not None]
        rows.append(("8 guests at once: finished", len(finished), 8, "of 8"))
        rows.append(("8 guests at once: wall time to the last", time.monotonic() - t0, 60, "s"))
        time.sleep(10)  # idle
        per_guest = [_ns_pss_mib(guest.init_pid(s.id, layout.root) or 0) for s in made]
        rows.append(("idle guest PSS (median of 8)", statistics.median(per_guest), 60, "MiB"))
        cloud, _ = pss_gib(cloud_pids(layout))
        rows.append(("cloud + 8 idle guests PSS", cloud + sum(per_guest) / 1024, 3, "GiB"))
        print(f"(guest boots {[f'{t:.1f}' if t else 'none' for t in singles]}; 8 at once "
              f"{sorted(round(t, 1) for t in finished)}; guests' PSS "
              f"{[f'{p:.0f}' for p in per_guest]} MiB)")
    finally:
        for server in made:
            conn.compute.delete_server(server, ignore_missing=True)
        if added:
            config = guests_mod.mode(layout)
            switch.write({**config, "rules": [r for r in config.get("rules", [])
                                              if r.get("prefix") != prefix]}, layout.root)
    return rows


def print_rows(rows) -> None:
    print(f"{'measure':45} {'value':>9} {'target':>8}")
    for name, value, target, unit in rows:
        mark = "ok" if (value >= target if unit == "of 8" else value <= target) else "OVER"
        shown = f"{value:8.2f}{unit[0] if unit == 's' else ''}"
        print(f"{name:45} {shown:>9} {'<= ' + str(target) if unit != 'of 8' else '= 8':>8}"
              f"{'' if unit in ('s', 'of 8') else ' ' + unit}  {mark}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="also time a cold install + start")
    parser.add_argument("--runs", type=int, default=3, help="boots/attaches to time")
    parser.add_argument("--guests-only", action="store_true",
                        help="only the guests' figures, on the cloud as it runs (no down/up)")
    args = parser.parse_args()
    layout = layout_mod.default_layout()
    if args.guests_only:
        print_rows(guest_figures(layout, args.runs))
        return
    rows = []
    if args.cold:
        subprocess.run([sys.executable, "-m", "invoke", "devcloud.down"], cwd=ROOT,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(layout.root, ignore_errors=True)
        rows.append(("cold install + start (pip cache as found)", timed_up(), 360, "s"))
    else:
        timed_up()
    subprocess.run([sys.executable, "-m", "invoke", "devcloud.down"], cwd=ROOT, check=True,
                   stderr=subprocess.DEVNULL)
    rows.append(("warm start (installed, stopped)", timed_up(), 60, "s"))
    rows.append(("second up while running", timed_up(), 5, "s"))
    time.sleep(5)
    pss, rss = pss_gib(cloud_pids(layout))
    rows.append(("PSS of all services", pss, 2.5, "GiB"))
    boots, attaches = boot_and_attach(args.runs)
    rows.append((f"boot to ACTIVE (median of {len(boots)})", statistics.median(boots), 6, "s"))
    rows.append((f"attach to in-use (median of {len(attaches)})", statistics.median(attaches), 4,
                 "s"))
    rows += guest_figures(layout, args.runs)
    print_rows(rows)
    print(f"(RSS summed, for comparison: {rss:.2f} GiB; boots {[f'{b:.2f}' for b in boots]}, "
          f"attaches {[f'{a:.2f}' for a in attaches]})")


if __name__ == "__main__":
    main()
