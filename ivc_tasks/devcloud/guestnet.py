"""The host side of the guests' network, as ``down`` (and ``up``, stopping another checkout's
cloud) removes it.

The network agent (plugin netagent.py) makes the cloud's namespace and the veth pair that joins
it to the host; everything else it makes lives inside that namespace (bridges, the guests'
veths, iptables rules, sysctls) or hangs off the host's end of the pair (the routes into the
cloud). Deleting the two removes it all. The names are the agent's (plugin netmodel.py), the
same for every cloud: only one cloud runs at a time (they share the ports), and the namespace
belongs to the one that runs (``other_clouds``).
"""

from __future__ import annotations

import json
import os
import subprocess

CLOUD_NS, HOST_DEV = "ivc-cloud", "ivc-host"
# The machine's own services: a cloud reuses them whoever started them, so their mark says
# nothing about which cloud runs.
MACHINE_SERVICES = ("mariadb", "epmd", "rabbitmq")


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


def other_clouds(root: str, marked: dict[int, tuple[str, str]]) -> list[str]:
    """The cache folders, other than ``root``, of the clouds with a process running, from
    ``procs.marked_processes()`` ({pid: (cache folder, service)}). When there is one, the
    cloud namespace and the host's veth are that cloud's, and ``down`` of ``root`` keeps them."""
    return sorted({folder for folder, name in marked.values()
                   if folder != root and name not in MACHINE_SERVICES})


def routes_via(host_dev: str = HOST_DEV) -> list[str]:
    """The host's routes through ``host_dev`` to a gateway (the routes into the cloud)."""
    done = _ip("-j", "-4", "route", "show", "dev", host_dev)
    if done.returncode != 0:
        return []
    return [r["dst"] for r in json.loads(done.stdout or "[]") if r.get("gateway")]


def teardown(ns: str = CLOUD_NS, host_dev: str = HOST_DEV) -> list[str]:
    """Remove the cloud namespace and the host's veth; return what was there, one line per
    kind. (Names are parameters so that a test can remove a namespace of its own.)"""
    gone = []
    if os.geteuid() != 0:
        return gone
    # The host's end first: deleting the namespace deletes it too, but a moment later.
    if _ip("link", "show", host_dev).returncode == 0:
        routes = routes_via(host_dev)
        if _ip("link", "del", host_dev).returncode == 0:
            gone.append(f"veth {host_dev}")
            if routes:
                gone.append(f"host routes through {host_dev}: {', '.join(routes)}")
    if os.path.exists(f"/run/netns/{ns}") and _ip("netns", "del", ns).returncode == 0:
        gone.append(f"namespace {ns}")
    return gone
