"""The host side of the guests' network, as ``down`` removes it.

The network agent (plugin netagent.py) makes the cloud's namespace and the veth pair that joins
it to the host; everything else it makes lives inside that namespace (bridges, the guests'
veths, iptables rules, sysctls) or hangs off the host's end of the pair (the routes into the
cloud). Deleting the two removes it all. The names are the agent's (plugin netmodel.py).
"""

from __future__ import annotations

import os
import subprocess

CLOUD_NS, HOST_DEV = "ivc-cloud", "ivc-host"


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


def teardown(ns: str = CLOUD_NS, host_dev: str = HOST_DEV) -> list[str]:
    """Remove the cloud namespace and the host's veth; return what was there. (Names are
    parameters so that a test can remove a namespace of its own.)"""
    gone = []
    if os.geteuid() != 0:
        return gone
    if os.path.exists(f"/run/netns/{ns}") and _ip("netns", "del", ns).returncode == 0:
        gone.append(f"namespace {ns}")
    if _ip("link", "show", host_dev).returncode == 0 and \
            _ip("link", "del", host_dev).returncode == 0:
        gone.append(f"veth {host_dev} and the host routes through it")
    return gone
