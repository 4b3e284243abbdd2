"""The shared poller: one list request per interval serves every waiter; its schedule; a 503 on
its list request; a 429 that slows every worker of the run. Time is injected (``FakeTime``):
nothing here waits in real time or asserts a wall-clock bound."""

import threading
import time

import pytest
import tenacity
from fakecloud import FakeConnection, http_error

from ivc_tasks.cloud import Cloud, CloudCallError
from ivc_tasks.polling import LONG_WAIT_CAP, next_interval
from ivc_tasks.resources.poller import shared_poller
from ivc_tasks.resources.waits import wait_server
from ivc_tasks.settings import make_settings
from ivc_tasks.steps.parallel import run_side_by_side


class FakeTime:
    """The cloud's clock and sleep: a sleep moves the clock on at once (and lets the other
    threads run), so that a 31 s boot is awaited in no real time."""

    def __init__(self, parties: int = 1):
        self.now = 0.0
        self.slept: list[float] = []
        self._lock = threading.Lock()
        # the first sleep of each of ``parties`` waiters waits for the others to register
        self._start = threading.Barrier(parties, timeout=10)
        self._started: set[int] = set()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        me = threading.get_ident()
        if me not in self._started:
            self._started.add(me)
            self._start.wait()
        with self._lock:
            self.slept.append(seconds)
            self.now += max(seconds, 0.0)
        time.sleep(0)


def new_cloud(conn, fake=None, parties=1, **kw):
    fake = fake or FakeTime(parties)
    return Cloud(conn=conn, settings=make_settings("test", poll_interval=0.5, **kw),
                 clock=fake.clock, sleep=fake.sleep, retry_overrides={"wait": tenacity.wait_none()})


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
    cloud = new_cloud(conn, parties=4)
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
    cloud = new_cloud(conn, parties=3)
    with shared_poller(cloud):
        seen = wait_all(cloud, servers)
    assert {s.status for s in seen.values()} == {"ACTIVE"}
    assert conn.count("compute.servers") >= 2  # the 503, then the retry (and later looks)


def test_the_list_request_failing_for_good_fails_each_waiter_and_none_hangs():
    conn = FakeConnection()
    servers = building(conn, 3)
    for _ in range(50):
        conn.fail_next("compute.servers", http_error(503, "Service Unavailable"))
    cloud = new_cloud(conn, parties=3, retry_attempts=2)
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
    cloud = new_cloud(conn, parties=3)
    with shared_poller(cloud):
        run_side_by_side({v.id: (lambda v=v: wait_attached(cloud, v.id, v.name, server.id, 60))
                          for v in volumes})
    assert conn.count("block_storage.get_volume") <= 1  # at most a look while alone
    assert 1 <= conn.count("block_storage.volumes") <= 5


def looks(seconds, eager, poll_interval=0.5):
    """The times of the looks at something done after ``seconds``, on the schedule."""
    t, out = 0.0, []
    while not out or out[-1] < seconds:
        t += next_interval(t, poll_interval=poll_interval, eager=eager)
        out.append(t)
    return out


def test_the_schedule_is_lazy_where_no_outage_waits_and_eager_inside_one():
    boot = looks(31, eager=False)  # rotate's new server booting before the old one stops
    assert len(boot) <= 20 and boot[-1] - 31 <= LONG_WAIT_CAP  # 0.5 s fixed: 62 looks
    assert next_interval(0, poll_interval=0.5, eager=False) == 0.5
    assert next_interval(1000, poll_interval=0.5, eager=False) == LONG_WAIT_CAP  # capped
    assert next_interval(1000, poll_interval=5, eager=False) == 5  # never under poll_interval
    stop = looks(5, eager=True)  # the old server stopping: the outage
    assert stop[-1] - 5 <= 0.5 and stop[0] == pytest.approx(0.05)
    assert next_interval(0.3, poll_interval=0.5, eager=True) == 0.2  # an attach: seen soon
    assert len(looks(5, eager=True)) <= 21  # a 5 s stop (with 50 ms looks first: 34)
    assert next_interval(1000, poll_interval=0.5, eager=True) == 0.5
    assert next_interval(5, poll_interval=0, eager=False) == 0  # tests: no waiting


class Timed:
    """A thing that is done at ``done_at`` on the fake clock; records when it was looked at."""

    def __init__(self, fake, done_at, status="BUILD"):
        self.fake, self.done_at, self.status, self.seen = fake, done_at, status, []

    def fetch(self):
        self.seen.append(self.fake.now)
        return "ACTIVE" if self.fake.now >= self.done_at else self.status


@pytest.mark.parametrize("eager", [True, False])
def test_a_lone_waiter_follows_the_shared_pollers_schedule(eager):
    from ivc_tasks.resources.poller import poll

    alone, shared = Timed(FakeTime(), 31), Timed(FakeTime(), 31)
    for timed, install in ((alone, False), (shared, True)):
        cloud = new_cloud(FakeConnection(), fake=timed.fake)
        with shared_poller(cloud, active=install) as poller:
            poll(cloud, "servers", "x", "server x", timed.fetch, str,
                 done=lambda s: s == "ACTIVE", failed=lambda s: None, timeout=100, eager=eager)
        assert (poller is not None) == install
    assert alone.seen == pytest.approx(shared.seen)
    assert alone.seen == pytest.approx(looks(31, eager=eager))


def test_a_server_wait_is_lazy_while_it_boots_and_eager_once_it_does_not():
    fake = FakeTime()
    conn = FakeConnection()
    conn.boot_polls = 12
    server = conn.add_server("s0", status="BUILD", task_state="spawning")
    cloud = new_cloud(conn, fake=fake)
    wait_server(cloud, server.id, "server s0", "ACTIVE", timeout=600)
    first, *rest = fake.slept
    assert first == pytest.approx(0.05)  # before the first look: not known to be booting
    assert rest[0] == 0.5 and all(s >= 0.5 for s in rest)  # booting: lazy
    fake.slept.clear()
    conn.compute.stop_server(server.id)
    wait_server(cloud, server.id, "server s0", "SHUTOFF", timeout=600)
    assert fake.slept[0] == pytest.approx(0.05)  # a stop: eager


def test_a_delete_is_awaited_lazily():
    from ivc_tasks.resources.waits import delete_server_and_wait

    fake = FakeTime()
    conn = FakeConnection()
    conn.delete_polls = 3
    server = conn.add_server("s0")
    delete_server_and_wait(new_cloud(conn, fake=fake), server.id, "old server s0", 60)
    assert fake.slept and all(s >= 0.5 for s in fake.slept)


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
    cloud = new_cloud(conn, parties=2)
    with shared_poller(cloud):
        gone = run_side_by_side({s.id: (lambda s=s: delete_server_and_wait(
            cloud, s.id, f"server {s.name}", timeout=60)) for s in servers})
    assert all(gone.values()) and conn.servers == []
    queries = [kw.get("name") for key, _, kw in conn.calls if key == "compute.servers"]
    assert "^web" in queries and queries[-1] is None  # "gone" only after the unfiltered list
