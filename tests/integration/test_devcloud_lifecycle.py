"""The local cloud's own tasks: down stops it, a warm `up` returns only when the cloud is ready
for a boot, a second `up` changes nothing.

A warm `up` used to return on the heartbeat that the previous nova-compute had written before
`down` (a service stays "up" for a minute after its last one): a server booted right then was
set to ERROR by the new nova-compute's start-up ("unclaimed instances stuck in BUILDING").
"""

import json
import subprocess
import sys

import pytest

from .conftest import ROOT, _connect
from .rotateworld import image_named

pytestmark = pytest.mark.cloud


def invoke(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_a_server_booted_right_after_a_warm_restart_goes_active(unique):
    down = invoke("devcloud.down")
    assert down.returncode == 0, down.stderr
    status = invoke("devcloud.status", "--json")
    assert status.returncode == 3, status.stderr  # 3: something is not answering
    stopped = {s["service"] for s in json.loads(status.stdout) if not s["running"]}
    assert {"keystone", "nova-api", "nova-compute", "cinder-volume"} <= stopped

    up = invoke("devcloud.up", "--json")
    assert up.returncode == 0, up.stderr
    assert "nova-compute" in json.loads(up.stdout)["started"]

    conn = _connect("ivc-local")  # a new connection: the old one's sockets died with the APIs
    image = image_named(conn, "ivc-tiny")
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    network = conn.network.find_network("private", ignore_missing=False)
    server = conn.compute.create_server(name=unique, image_id=image.id, flavor_id=flavor.id,
                                        networks=[{"uuid": network.id}])
    try:
        server = conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"],
                                              interval=0.5, wait=120)
        assert server.status == "ACTIVE"
    finally:
        conn.compute.delete_server(server, ignore_missing=True)
        conn.compute.wait_for_delete(server, interval=0.5, wait=120)

    again = invoke("devcloud.up", "--json")
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["started"] == [] and result["databases"] == "reused", result
