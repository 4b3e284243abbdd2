"""When the local cloud counts as up: nova-compute and cinder-volume have reported since their
own start (not a predecessor's heartbeat), the compute host is mapped, and cinder-scheduler knows
the volume backend."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from . import bootstrap, procs, seed
from .bootstrap import DevcloudError
from .layout import Layout

START_TIMEOUT = float(os.environ.get("DEVCLOUD_START_TIMEOUT", "240"))


def reported_since(records: list, started: float) -> bool:
    """Whether a service record is up and was written after ``started`` (epoch seconds).

    A service that was just restarted still looks "up" for a minute from its predecessor's
    last heartbeat; only a record written since the start shows that this process got through
    its own start-up (nova-compute sets to ERROR any instance scheduled to it before that).
    The database keeps whole seconds, hence the floor.
    """
    for record in records:
        stamp = record.updated_at
        if record.state != "up" or not stamp:
            continue
        written = datetime.fromisoformat(str(stamp).rstrip("Z")).replace(tzinfo=UTC)
        if written.timestamp() >= int(started):
            return True
    return False


def _reported_since_start(records: list, layout: Layout, name: str) -> bool:
    pidfile = layout.pidfile(name)
    if not procs.alive(procs.read_pidfile(pidfile)):
        return False
    return reported_since(records, pidfile.stat().st_mtime)


def wait_cloud_ready(secrets: dict, say, rebuilt: bool, layout: Layout) -> None:
    """Wait for nova-compute and cinder-volume to report up (and the volume backend to be known
    to cinder-scheduler); map the compute host on rebuild."""
    conn = seed.admin_connection(secrets)
    deadline = time.monotonic() + START_TIMEOUT
    t0 = time.monotonic()
    mapped = not rebuilt
    while True:
        compute = [s for s in conn.compute.services() if s.binary == "nova-compute"]
        volume = [s for s in conn.block_storage.services() if s.binary == "cinder-volume"]
        compute_up = _reported_since_start(compute, layout, "nova-compute")
        # and cinder-scheduler has its capabilities (sent a moment after the heartbeat): a
        # volume made before would go to error, "no weighed backend"
        volume_up = _reported_since_start(volume, layout, "cinder-volume") and \
            bool(list(conn.block_storage.backend_pools()))
        if compute_up and not mapped:
            bootstrap.run([layout.bin("nova-manage"), "--config-file",
                           str(layout.etc / "nova/nova.conf"), "cell_v2", "discover_hosts"],
                          log=layout.log("db-sync"))
            mapped = True
        if compute_up and volume_up and mapped:
            say(f"nova-compute and cinder-volume report up ({time.monotonic() - t0:.1f}s)")
            return
        if time.monotonic() > deadline:
            name = "nova-compute" if not compute_up else "cinder-volume"
            raise DevcloudError(f"{name} did not report up within {START_TIMEOUT:.0f}s; last "
                                f"lines of {layout.log(name)}:\n{procs.tail(layout.log(name))}")
        time.sleep(0.5)
