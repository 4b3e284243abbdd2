"""Many servers at real-cloud speed: deploy and rotate of 1 and 8 servers with simulated latency.

    python benchmarks/bench_scale.py [--servers 8] [--rotate-parallel 4] [--latency real]
                                     [--skip-sequential]

The local cloud's fake drivers are made to take a public cloud's wall time (boot ~30 s, stop
~5 s, delete ~3 s, attach/detach ~2 s; ``invoke devcloud.latency``), for THIS benchmark's
servers and volumes only (their names start with a prefix of its own), so that others testing
on the same cloud meanwhile are not slowed; the mode is switched off at the end (and expires by
itself after 25 minutes if the benchmark dies). No service restarts.

Two throwaway environments, each server on the private network with one volume (volumes made
here, beforehand, with plain openstacksdk): one of 1 server, one of N (default 8). Measured as
``python -m invoke ... --json`` processes (wall time outside, requests from the JSON):
  * deploy of 1 with --parallel 1 and with --parallel N (the same path: one server);
  * rotate of that 1 server;
  * deploy of N with --parallel N, then rotate of the N with --parallel P (default 4);
  * converge of the N after 3 of them drifted (a new flavor), --max-unavailable 3 (the line
    ``converge N (3 drifted) --max-unavailable 3 / rotate 1``: target <= 1.5x wall);
  * deploy of N with --parallel 1 (after deleting the N servers; --skip-sequential skips it).
The last two lines compare N to 1 (targets: deploy <= 1.3x wall and <= 2x requests; rotate
<= 2.3x wall). Everything made is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivc_tasks.devcloud import lifecycle
from tests.integration.rotateworld import World, connection

LATENCY_MINUTES = 25


def run(world: World, *args: str) -> dict:
    """One ivc process; its JSON with the wall time measured outside."""
    t0 = time.monotonic()
    proc = world.run(*args, "--json", timeout=1200)
    wall = time.monotonic() - t0
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        out = {}
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {proc.returncode}: "
                           f"{out.get('error') or proc.stderr[-2000:]}")
    out["wall"] = wall
    return out


def delete_servers(world: World) -> None:
    conn = world.conn
    servers = world.managed()
    for server in servers:
        conn.compute.delete_server(server, ignore_missing=True)
    for server in servers:
        conn.compute.wait_for_delete(server, interval=0.5, wait=300)
    world.wait_volumes_settled(120)


def make_world(conn, root: Path, env: str, prefix: str, count: int) -> World:
    world = World(conn=conn, root=root, env=env, secgroup=f"{prefix}sg")
    for i in range(1, count + 1):
        world.servers[f"{prefix}s{i}"] = {"volumes": [f"{prefix}v{i}"]}
    world.write()
    return world


def line(label: str, out: dict) -> str:
    text = (f"{label:<34} {out['wall']:6.1f} s wall  {out.get('requests', 0):4d} requests"
            f"  ({out.get('requests_by_method', {}).get('GET', 0)} GET)")
    servers = [s["seconds"] for s in out.get("servers", []) if s.get("seconds") is not None]
    if servers:
        text += f"; per server {min(servers):.1f}-{max(servers):.1f} s"
    phases: dict[str, list[float]] = {}
    for rotation in out.get("rotations", []):
        for phase in rotation.get("phases", []):
            phases.setdefault(phase["phase"], []).append(phase["seconds"])
    if phases:
        text += "\n    phases (max over servers): " + ", ".join(
            f"{k} {max(v):.1f}" for k, v in phases.items())
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=8)
    parser.add_argument("--rotate-parallel", type=int, default=4)
    parser.add_argument("--latency", default="real", help="real, or a factor such as 0.2")
    parser.add_argument("--skip-sequential", action="store_true",
                        help="skip deploy of N with --parallel 1 (N boots one after the other)")
    args = parser.parse_args()
    n, p = args.servers, args.rotate_parallel
    conn = connection()
    tag = uuid.uuid4().hex[:6]
    prefix1, prefix_n = f"sc{tag}a", f"sc{tag}b"
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp1, tempfile.TemporaryDirectory() as tmp_n:
        one = make_world(conn, Path(tmp1), f"scale{tag}a", prefix1, 1)
        many = make_world(conn, Path(tmp_n), f"scale{tag}b", prefix_n, n)
        try:
            one.make_volumes([v for s in one.servers.values() for v in s["volumes"]])
            many.make_volumes([v for s in many.servers.values() for v in s["volumes"]])
            mode = lifecycle.set_latency(args.latency, minutes=LATENCY_MINUTES,
                                         only=f"sc{tag}")
            state = lifecycle.latency()
            factor = f" x{mode['factor']}" if "factor" in mode else ""
            print(f"latency {mode['mode']}{factor}"
                  f" for names starting sc{tag} (honoured by "
                  f"{', '.join(k for k, v in state['honoured_by'].items() if v) or 'none'})",
                  flush=True)
            if not all(state["honoured_by"].values()):
                print("warning: the running drivers predate the latency setting: run "
                      "DEVCLOUD_LATENCY=off invoke devcloud.up (restarts nova-compute and "
                      "cinder-volume)", flush=True)
            [name1] = one.servers
            results["deploy 1 --parallel 1"] = run(one, "deploy", "--parallel", "1")
            print(line("deploy 1 --parallel 1", results["deploy 1 --parallel 1"]), flush=True)
            delete_servers(one)
            results[f"deploy 1 --parallel {n}"] = run(one, "deploy", "--parallel", str(n))
            print(line(f"deploy 1 --parallel {n}", results[f"deploy 1 --parallel {n}"]),
                  flush=True)
            results["rotate 1"] = run(one, "rotate", "--name", name1)
            print(line("rotate 1", results["rotate 1"]), flush=True)
            results[f"deploy {n} --parallel {n}"] = run(many, "deploy", "--parallel", str(n))
            print(line(f"deploy {n} --parallel {n}", results[f"deploy {n} --parallel {n}"]),
                  flush=True)
            names = [a for s in many.servers for a in ("--name", s)]
            results[f"rotate {n} --parallel {p}"] = run(many, "rotate", *names,
                                                        "--parallel", str(p))
            print(line(f"rotate {n} --parallel {p}", results[f"rotate {n} --parallel {p}"]),
                  flush=True)
            # three of the N drift (a new flavor): converge rotates those, three at a time
            drifted = list(many.servers)[:3]
            for name in drifted:
                many.servers[name]["flavor"] = "m1.small"
            many.write()
            label = f"converge {n} ({len(drifted)} drifted) --max-unavailable 3"
            results[label] = run(many, "converge", "--max-unavailable", "3")
            print(line(label, results[label]), flush=True)
            rotated = sorted(s["name"] for s in results[label]["servers"]
                             if s.get("outcome") == "rotated")
            if rotated != sorted(drifted):
                raise RuntimeError(f"converge rotated {rotated}, not {sorted(drifted)}")
            if not args.skip_sequential:
                delete_servers(many)
                results[f"deploy {n} --parallel 1"] = run(many, "deploy", "--parallel", "1")
                print(line(f"deploy {n} --parallel 1", results[f"deploy {n} --parallel 1"]),
                      flush=True)
        finally:
            lifecycle.set_latency("off")
            for world in (one, many):
                try:
                    world.cleanup()
                except Exception as exc:  # noqa: BLE001 - report, keep cleaning
                    print(f"cleanup of {world.env}: {type(exc).__name__}: {exc}", file=sys.stderr)
    d1, dn = results[f"deploy 1 --parallel {n}"], results[f"deploy {n} --parallel {n}"]
    r1, rn = results["rotate 1"], results[f"rotate {n} --parallel {p}"]
    wall_x, req_x, rot_x = dn["wall"] / d1["wall"], dn["requests"] / d1["requests"], \
        rn["wall"] / r1["wall"]
    print(f"targets: deploy {n} parallel <= 1.3x wall {'OK' if wall_x <= 1.3 else 'MISSED'}, "
          f"<= 2x requests {'OK' if req_x <= 2 else 'MISSED'}; rotate {n} parallel {p} <= 2.3x "
          f"wall {'OK' if rot_x <= 2.3 else 'MISSED'}")
    saved = Path(tempfile.gettempdir()) / f"bench_scale-{tag}.json"
    saved.write_text(json.dumps(results, indent=1))
    print(f"(every run's JSON: {saved})")
    print(f"deploy {n} parallel / deploy 1: {wall_x:.2f}x wall, {req_x:.2f}x requests")
    print(f"rotate {n} parallel {p} / rotate 1: {rot_x:.2f}x wall")
    cv = next(v for k, v in results.items() if k.startswith("converge"))
    cv_x = cv["wall"] / r1["wall"]
    print(f"converge {n} (3 drifted) --max-unavailable 3 / rotate 1: {cv_x:.2f}x wall "
          f"(target <= 1.5x: {'OK' if cv_x <= 1.5 else 'MISSED'})")


if __name__ == "__main__":
    main()
