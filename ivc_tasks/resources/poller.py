"""One poller for all the waits of a run: one list request per kind serves every waiter.

A run that waits for several things at once (``deploy --parallel``, ``rotate --parallel``)
installs a ``Poller`` on its Cloud (``shared_poller``). Each wait then registers with it
instead of polling on its own; whenever the earliest waiter of a kind is due, ONE request
fetches that kind for all of them: Nova ``GET /servers/detail``, Cinder ``GET /volumes/detail``
(neither filters by id for a project member). The server list is filtered by name once the
poller has seen the awaited servers' names: Nova's ``name`` regex, the names' common prefix
(``^web``; Nova here matches no alternation), so that its cost follows the awaited servers, not
the project's; an awaited server missing from a filtered list is looked for in the unfiltered
one before it counts as gone. The volume list is the project's, read for the awaited ids. While
a single waiter of a kind is registered, its own GET is used.

The poller never takes more than a third of an API's time: a list is sent at the soonest
``LIST_SPACING`` times its own last duration after the previous one ended (on an idle cloud a
list takes ~30 ms, so an attach is still seen within ~0.1 s; on a loaded one, looks space out
instead of queueing in front of the creates, stops and attaches of the run).

When a waiter is due follows ``cloud.next_interval``, the schedule ``Cloud.poll`` follows for a
lone waiter (stated there once): eager inside an outage, lazy where a wait costs none. A 60 s
boot costs a few dozen list requests whatever the number of servers, and an attach started
while boots are awaited is still seen soon (its own schedule makes the next list due). Time
is the cloud's: ``cloud.clock`` and ``cloud.sleep`` (a test injects both; nothing here waits
in real time but for another thread's request to end).

A list that fails (after ``Cloud.call``'s retries) fails the waits it was made for, each with
the cloud's message; the next waiter to be due makes a fresh request.
Without a poller installed, ``poll`` is ``Cloud.poll`` (one GET per wait, as before).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ivc_tasks.cloud import Cloud
from ivc_tasks.polling import PollVerdict, is_eager, next_interval
from ivc_tasks.resources.servers import GONE_STATUSES as GONE_SERVER_STATUSES

T = TypeVar("T")
SERVERS, VOLUMES = "servers", "volumes"
LIST_SPACING = 2.0  # a list waits this many times its last duration after the previous one
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")  # safe inside Nova's name regex
_NOTHING = object()


@dataclass(eq=False)
class _Waiter:
    item_id: str
    fetch_one: Callable[[], Any]
    due: float
    fresh: Any = _NOTHING  # what the latest fetch made for this waiter saw
    error: BaseException | None = None


@dataclass
class _Kind:
    waiters: list[_Waiter] = field(default_factory=list)
    fetching: bool = False
    not_before: float = 0.0  # the next list no sooner than this (LIST_SPACING)


class Poller:
    """The run's shared poller (thread-safe). ``requests`` counts the fetches it made."""

    def __init__(self, cloud: Cloud):
        self.cloud = cloud
        self._cond = threading.Condition()
        self._kinds: dict[str, _Kind] = {}
        self._names: dict[str, str] = {}  # server id -> name, as seen
        self.requests = 0
        self.list_requests = 0

    # -- what a fetch asks --------------------------------------------------------------------
    def _list(self, kind: str, ids: list[str]) -> dict[str, Any]:
        conn = self.cloud.conn
        if kind == SERVERS:
            names = [self._names.get(i, "") for i in ids]
            prefix = os.path.commonprefix(names)
            query = {"name": f"^{prefix}"} if prefix and all(
                _PLAIN_NAME.match(n) for n in names) else {}
            items = self.cloud.call("list servers (awaited)",
                                    lambda: list(conn.compute.servers(**query)))
            if query and not set(ids) <= {s.id for s in items}:  # gone, or renamed: look at all
                items = self.cloud.call("list servers (awaited)",
                                        lambda: list(conn.compute.servers()))
            return {s.id: s for s in items
                    if str(s.status).upper() not in GONE_SERVER_STATUSES}
        if kind == VOLUMES:
            items = self.cloud.call("list volumes (awaited)",
                                    lambda: list(conn.block_storage.volumes()))
            return {v.id: v for v in items}
        raise ValueError(f"unknown kind {kind!r}")

    def _fetch(self, kind: str, batch: list[_Waiter]) -> None:
        """Fetch for ``batch`` (called without the lock held); store what each one sees."""
        try:
            if len(batch) == 1:
                found = {batch[0].item_id: batch[0].fetch_one()}
            else:
                found = self._list(kind, [w.item_id for w in batch])
                self.list_requests += 1
            self.requests += 1
            for waiter in batch:
                waiter.fresh = found.get(waiter.item_id)
            if kind == SERVERS:
                self._names.update((i, str(getattr(s, "name", "") or ""))
                                   for i, s in found.items() if s is not None)
        except Exception as exc:  # noqa: BLE001 (handed to each waiter, raised in its thread)
            for waiter in batch:
                waiter.error = exc

    def _next(self, kind: str, waiter: _Waiter) -> Any:
        """Block until a fetch made for ``waiter`` (started after it became due) has ended."""
        state = self._kinds[kind]
        clock = self.cloud.clock
        with self._cond:
            while waiter.fresh is _NOTHING and waiter.error is None:
                now = clock()
                due = min(w.due for w in state.waiters)
                if len(state.waiters) > 1:
                    due = max(due, state.not_before)
                if state.fetching:
                    self._cond.wait(timeout=1.0)
                    continue
                if now < due:  # sleep on the cloud's time; a fetch made meanwhile is kept
                    self._cond.release()
                    try:
                        self.cloud.sleep(due - now)
                    finally:
                        self._cond.acquire()
                    continue
                batch = list(state.waiters)
                for w in batch:
                    w.fresh, w.error = _NOTHING, None
                state.fetching = True
                self._cond.release()
                started = clock()
                try:
                    self._fetch(kind, batch)
                finally:
                    self._cond.acquire()
                    ended = clock()
                    state.not_before = ended + LIST_SPACING * (ended - started)
                    state.fetching = False
                    self._cond.notify_all()
            item, error = waiter.fresh, waiter.error
            waiter.fresh, waiter.error = _NOTHING, None
        if error is not None:
            raise error
        return item

    def wait(self, kind: str, item_id: str, what: str, fetch_one: Callable[[], T],
             state: Callable[[T], str], *, done: Callable[[T], bool],
             failed: Callable[[T], str | None], timeout: float,
             eager: bool | Callable[[Any], bool] = False) -> T:
        """``Cloud.poll``'s contract, served by the shared fetches (``fetch_one``: the waiter's
        own GET, used while it waits alone). The item is None when the list does not hold it
        (gone)."""
        clock, interval = self.cloud.clock, self.cloud.poll_interval
        start = clock()
        waiter = _Waiter(item_id, fetch_one, due=start + next_interval(
            0.0, poll_interval=interval, eager=is_eager(eager, None)))
        with self._cond:
            self._kinds.setdefault(kind, _Kind()).waiters.append(waiter)
            self._cond.notify_all()
        verdict = PollVerdict(what, state, done, failed, timeout, start)
        try:
            while True:
                item = self._next(kind, waiter)
                now = clock()
                if verdict.done(item, now):
                    return item
                with self._cond:
                    waiter.due = clock() + next_interval(now - start, poll_interval=interval,
                                                         eager=is_eager(eager, item))
        finally:
            with self._cond:
                self._kinds[kind].waiters.remove(waiter)
                self._cond.notify_all()


def poll(cloud: Cloud, kind: str, item_id: str, what: str, fetch: Callable[[], T],
         state: Callable[[T], str], *, done: Callable[[T], bool],
         failed: Callable[[T], str | None], timeout: float,
         eager: bool | Callable[[Any], bool] = False) -> T:
    """Wait for one server or volume: through the run's shared poller when one is installed
    (``shared_poller``), else ``Cloud.poll`` with ``fetch`` (one GET per look)."""
    poller = cloud.shared.poller
    if poller is None:
        return cloud.poll(what, fetch, state, done=done, failed=failed, timeout=timeout,
                          eager=eager)
    return poller.wait(kind, item_id, what, fetch, state, done=done, failed=failed,
                       timeout=timeout, eager=eager)


@contextlib.contextmanager
def shared_poller(cloud: Cloud, *, active: bool = True) -> Iterator[Poller | None]:
    """Install a Poller on ``cloud`` (and every view of it: ``Cloud.worker_view`` shares
    ``cloud.shared``) for the block; ``active=False`` (one worker) installs none."""
    if not active or cloud.shared.poller is not None:
        yield cloud.shared.poller
        return
    poller = Poller(cloud)
    cloud.shared.poller = poller
    try:
        yield poller
    finally:
        cloud.shared.poller = None
