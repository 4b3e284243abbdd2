"""The shared poller: one list request per interval serves every waiter; its schedule; a 503 on
its list request; a 429 that slows every worker of the run."""

import threading

import pytest
import tenacity
from fakecloud import FakeConnection, http_error

from ivc_tasks.cloud import Cloud, CloudCallError
from ivc_tasks.settings import make_settings
from ivc_tasks.cloud import LONG_WAIT_CAP
from ivc_tasks.resources.poller import next_interval, shared_poller
from ivc_tasks.resources.waits import wait_server
from ivc_tasks.steps.parallel import run_side_by_side


def new_cloud(conn, **kw):
    """Real time, short intervals: the waiters (threads) all register before the first look."""
    return Cloud(conn=conn, settings=make_settings("test", poll_interval=0.05, **kw),
                 retry_overrides={"wait": tenacity.wait_none()})


def building(conn, count, polls=4):
    conn.boot_polls = polls
    return [conn.add_server(f"s{i}", status="BUILD", task_state="spawning") for i in range(count)]


def wait_all(cloud, servers):
    return run_side_by_side({s.id: (lambda s=s: wait_server(cloud, s.id, f"server {s.name}",
                                                            "ACTIVE", timeout=60))
                             for s in servers})


def test_several_waiters_share_one_list_request_per_look():
    conn = FakeConnection()
    servers = building(conn, 4)
    cloud = new_cloud(conn)
    with shared_poller(cloud) as poller:
        seen = wait_all(cloud, servers)
    assert all(s.status == "ACTIVE" for s in seen.values())
    lists = conn.count("compute.servers")
    assert conn.count("compute.get_server") + lists == poller.requests
    # 4 servers that each need 4 looks: alone, 16 GETs; shared, a few list requests
    assert lists <= 6 and poller.requests < 16
    # once their names are known, the list asks Nova for the awaited servers only
    queries = [kw.get("name") for key, _, kw in conn.calls if key == "compute.servers"]
    assert queries[0] is None and queries[-1] == "^s"  # their common prefix


def test_a_single_waiter_keeps_its_own_get():
    conn = FakeConnection()
    (server,) = building(conn, 1)
    cloud = new_cloud(conn)
    with shared_poller(cloud):
        wait_server(cloud, server.id, "server s0", "ACTIVE", timeout=60)
    assert conn.count("compute.servers") == 0 and conn.count("compute.get_server") == 4


def test_the_list_request_answered_503_once_is_retried_and_serves_everyone():
    conn = FakeConnection()
    servers = building(conn, 3, polls=2)
    conn.fail_next("compute.servers", http_error(503, "Service Unavailable"))
    cloud = new_cloud(conn)
    with shared_poller(cloud):
        seen = wait_all(cloud, servers)
    assert {s.status for s in seen.values()} == {"ACTIVE"}
    assert conn.count("compute.servers") >= 2  # the 503, then the retry (and later looks)


def test_the_list_request_failing_for_good_fails_each_waiter_and_none_hangs():
    conn = FakeConnection()
    servers = building(conn, 3)
    for _ in range(50):
        conn.fail_next("compute.servers", http_error(503, "Service Unavailable"))
    cloud = new_cloud(conn, retry_attempts=2)
    errors = []

    def one(server):
        try:
            wait_server(cloud, server.id, f"server {server.name}", "ACTIVE", timeout=60)
        except CloudCallError as exc:
            errors.append(exc)

    with shared_poller(cloud):
        threads = [threading.Thread(target=one, args=(s,)) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
    assert not any(t.is_alive() for t in threads)
    assert len(errors) == 3 and all(e.status == 503 for e in errors)
    assert "list servers (awaited)" in str(errors[0]) and "503" in str(errors[0])


def test_volumes_are_awaited_through_one_volume_list():
    from ivc_tasks.resources.attachments import wait_attached

    conn = FakeConnection()
    server = conn.add_server("s0")
    volumes = [conn.add_volume(f"v{i}") for i in range(3)]
    for v in volumes:
        v.status = "attaching"
        v.steps.append((3, lambda v=v: (setattr(v, "status", "in-use"),
                                        setattr(v, "attachments", [{"server_id": server.id}]))))
    cloud = new_cloud(conn)
    with shared_poller(cloud):
        run_side_by_side({v.id: (lambda v=v: wait_attached(cloud, v.id, v.name, server.id, 60))
                          for v in volumes})
    assert conn.count("block_storage.get_volume") <= 1  # at most a look while alone
    assert 1 <= conn.count("block_storage.volumes") <= 5


def test_the_schedule_backs_off_for_long_waits_and_looks_soon_at_short_ones():
    def looks(seconds, eager):
        t, n = 0.0, 0
        while t < seconds:
            t += next_interval(t, poll_interval=0.5, eager=eager)
            n += 1
        return n
    # a 60 s boot: a few dozen looks (0.5 s fixed would be 120), shared by every server
    assert looks(60, eager=False) <= 50
    assert next_interval(0, poll_interval=0.5, eager=True) == pytest.approx(0.05)
    assert next_interval(0.3, poll_interval=0.5, eager=True) <= 0.1  # an attach: seen soon
    assert next_interval(1000, poll_interval=0.5, eager=False) == LONG_WAIT_CAP  # capped
    assert next_interval(5, poll_interval=0, eager=False) == 0  # tests: no waiting


def test_a_429_with_retry_after_slows_every_worker():
    conn = FakeConnection()
    slept = []
    cloud = Cloud(conn=conn, settings=make_settings("test", poll_interval=0), sleep=slept.append,
                  retry_overrides={"wait": tenacity.wait_none()})
    other = cloud.worker_view()  # another worker's view of the same run
    conn.fail_next("compute.servers", http_error(429, "Too Many Requests", **{"Retry-After": "3"}))
    cloud.call("list servers", lambda: list(conn.compute.servers(details=True)))
    other.call("list flavors", lambda: list(conn.compute.flavors()))
    assert slept and 2.0 < slept[-1] <= 3.0  # the other worker waited out the Retry-After


def test_a_server_missing_from_the_filtered_list_is_looked_for_in_all_before_it_is_gone():
    from ivc_tasks.resources.waits import delete_server_and_wait

    conn = FakeConnection()
    conn.delete_polls = 3
    servers = [conn.add_server(f"web{i}") for i in range(2)]
    cloud = new_cloud(conn)
    with shared_poller(cloud):
        gone = run_side_by_side({s.id: (lambda s=s: delete_server_and_wait(
            cloud, s.id, f"server {s.name}", timeout=60)) for s in servers})
    assert all(gone.values()) and conn.servers == []
    queries = [kw.get("name") for key, _, kw in conn.calls if key == "compute.servers"]
    assert "^web" in queries and queries[-1] is None  # "gone" only after the unfiltered list
