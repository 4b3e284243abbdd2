"""What a rotate does to a server's public address, and the outage it costs, on each shape of
the local cloud (issue 10):

    python benchmarks/bench_addresses.py [--rounds 3]

Shapes (each server: one volume, made here with plain openstacksdk):
  demo      project ivc (entry ivc-local): networks = ["private"], floating_ip = true; the
            public address is the floating IP, moved to the new server's port.
  ovh-new   project ivc-ovh (entry ivc-local-ovh): networks = ["ext-net"] (shared, external);
            the new server gets a NEW address on ext-net (rotate says so).
  ovh-kept  the same with keep_address = ["ext-net"]: the old server is stopped, its port
            detached and the new server booted with it (same IP and MAC).

Each round is one ``python -m invoke rotate --name S --json`` per shape; reported: the outage
(``outage_seconds``: from the old server's stop until the new server serves its address and
volumes), the rotate's wall time, and what happened to the address. Everything made here is
deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.rotateworld import CLOUDS_YAML, connection

SHAPES = {  # name: (clouds.yaml entry, server declaration)
    "demo": ("ivc-local", 'networks = ["private"]\nfloating_ip = true'),
    "ovh-new": ("ivc-local-ovh", 'networks = ["ext-net"]'),
    "ovh-kept": ("ivc-local-ovh", 'networks = ["ext-net"]\nkeep_address = ["ext-net"]'),
}


def run(root: Path, env: str, *args: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("IVC_", "OS_"))}
    environ.update(IVC_ROOT=str(root), IVC_ENV=env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    unique = f"b-{uuid.uuid4().hex[:6]}"
    made: list[tuple] = []  # (conn, kind, id)
    results: dict[str, list[tuple[float, float, str]]] = {s: [] for s in SHAPES}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for shape, (cloud, declaration) in SHAPES.items():
                conn = connection(cloud)
                root = Path(tmp) / shape
                (root / "env").mkdir(parents=True)
                env = f"{unique}-{shape}"
                volume = conn.block_storage.create_volume(name=f"{env}-data", size=1)
                made.append((conn, "volume", volume.id))
                conn.block_storage.wait_for_status(volume, "available", interval=0.5, wait=120)
                (root / "env" / f"{env}.env").write_text(
                    f"OS_CLOUD={cloud}\nOS_CLIENT_CONFIG_FILE={CLOUDS_YAML}\n")
                (root / "env" / f"{env}.toml").write_text(
                    '[defaults]\nimage = "ivc-tiny"\nflavor = "m1.tiny"\nkeypair = "ivc-demo"\n\n'
                    f'[servers.s]\n{declaration}\nvolumes = ["{env}-data"]\n')
                made.append((conn, "env", env))
                first = run(root, env, "create-instance", "--name", "s")
                if first.returncode:
                    raise SystemExit(f"{shape}: create-instance failed: {first.stderr[-800:]}")
                for _ in range(args.rounds):
                    out = run(root, env, "rotate", "--name", "s", "--json")
                    if out.returncode:
                        raise SystemExit(f"{shape}: rotate failed: {out.stderr[-800:]}")
                    data = json.loads(out.stdout)
                    rotation = data["rotations"][0]
                    fate = "; ".join(
                        f"{a['network']} {','.join(a['old'])} "
                        + ("kept" if a["kept"] else f"-> {','.join(a['new'])}")
                        for a in rotation["addresses"]) or "floating IP moved"
                    results[shape].append((rotation["outage_seconds"], data["elapsed_seconds"],
                                           fate))
        finally:
            cleanup(made)
    print(f"rotate of one server with one volume, {args.rounds} rounds per shape (median):")
    for shape, rows in results.items():
        if not rows:
            continue
        outage = statistics.median(r[0] for r in rows)
        wall = statistics.median(r[1] for r in rows)
        print(f"  {shape:9} outage {outage:5.1f} s (min {min(r[0] for r in rows):.1f}, max "
              f"{max(r[0] for r in rows):.1f}), rotate {wall:5.1f} s; address: {rows[-1][2]}")


def cleanup(made: list[tuple]) -> None:
    for conn, kind, ident in reversed(made):
        try:
            if kind == "env":
                servers = [s for s in conn.compute.servers(details=True)
                           if (s.metadata or {}).get("ivc_env") == ident]
                for server in servers:
                    conn.compute.delete_server(server)
                for server in servers:
                    conn.compute.wait_for_delete(server, interval=0.5, wait=120)
                for fip in conn.network.ips():
                    if (fip.description or "").startswith(f"ivc:{ident}:"):
                        conn.network.delete_ip(fip)
                for port in conn.network.ports():
                    if (port.name or "").startswith(f"ivc-{ident}-"):
                        conn.network.delete_port(port)
            else:
                volume = conn.block_storage.get_volume(ident)
                conn.block_storage.wait_for_status(volume, "available", interval=0.5, wait=120)
                conn.block_storage.delete_volume(ident)
        except Exception as exc:  # noqa: BLE001 (clean up the rest)
            print(f"cleanup: {kind} {ident}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    main()
