"""Benchmark the local cloud: start times, memory (PSS), boot and attach latency. Prints figures.

    python benchmarks/bench_devcloud.py            # warm start, second up, PSS, boot, attach
    python benchmarks/bench_devcloud.py --cold     # also a cold install + start (wipes .devcloud)

Targets (issue 2): cold install + start <= 6 min; warm start (installed, stopped) <= 60 s;
a second `up` while running <= 5 s; all services <= 2.5 GiB PSS; one boot to ACTIVE <= 6 s;
one volume attach to in-use <= 4 s.
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

from ivc_tasks.devcloud import layout as layout_mod, procs  # noqa: E402
from ivc_tasks.devcloud.services import all_services  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="also time a cold install + start")
    parser.add_argument("--runs", type=int, default=3, help="boots/attaches to time")
    args = parser.parse_args()
    layout = layout_mod.default_layout()
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
    print(f"{'measure':45} {'value':>9} {'target':>8}")
    for name, value, target, unit in rows:
        mark = "ok" if value <= target else "OVER"
        print(f"{name:45} {value:8.2f}{unit[0] if unit == 's' else ''} {'<= ' + str(target):>8}"
              f"{'' if unit == 's' else ' ' + unit}  {mark}")
    print(f"(RSS summed, for comparison: {rss:.2f} GiB; boots {['%.2f' % b for b in boots]}, "
          f"attaches {['%.2f' % a for a in attaches]})")


if __name__ == "__main__":
    main()
