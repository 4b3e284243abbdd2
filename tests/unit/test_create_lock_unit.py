"""create-instance under the server's lock (issue 18): a second run waits for the first's lock,
then looks again and finds the server: one server, both done."""

import pytest
import tenacity
from fakecloud import WALL_NOW, FakeConnection
from test_ops import SPEC  # noqa: F401 (conftest's spec_of reads SPEC)

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import Locked
from ivc_tasks.resources.lock import acquire_waiting, lock_name
from ivc_tasks.settings import make_settings
from ivc_tasks.steps.instances import create_instance

HOLDER = ("ssh-ed25519 AAAAx ivc-lock op=create-instance run=other1 host=ci-runner-9 pid=4242 "
          "start={start} ttl=3600")


def cloud_on(conn, on_sleep=lambda: None):
    ticks = [0.0]

    def sleep(seconds):
        ticks[0] += max(seconds, 0.2)
        on_sleep()

    return Cloud(conn=conn, settings=make_settings("test", poll_interval=0), sleep=sleep,
                 clock=lambda: ticks[0], wall_clock=conn.wall_clock,
                 retry_overrides={"wait": tenacity.wait_none()})


def test_a_create_waits_for_another_runs_lock_then_finds_its_server(spec_of):
    conn = FakeConnection()
    spec = spec_of()
    conn.add_lock(lock_name("test", "edge"), HOLDER.format(start=int(WALL_NOW)))
    made = []

    def the_other_run_ends():  # while we wait: its server made, its lock released
        if not made:
            conn.keys = [k for k in conn.keys if k.name != lock_name("test", "edge")]
            made.append(create_instance(cloud_on(conn), spec, "edge"))

    result = create_instance(cloud_on(conn, the_other_run_ends), spec, "edge")
    assert len([s for s in conn.servers if s.name == "edge"]) == 1
    assert made and made[0].changed and not result.changed  # found it, changed nothing


def test_a_lock_held_past_the_wait_is_locked_exit_4():
    conn = FakeConnection()
    conn.add_lock(lock_name("test", "edge"), HOLDER.format(start=int(WALL_NOW)))
    with pytest.raises(Locked) as info:
        acquire_waiting(cloud_on(conn), "edge", op="create-instance", timeout=5)
    assert info.value.exit_code == 4
