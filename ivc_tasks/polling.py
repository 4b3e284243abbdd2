"""How ivc waits: the one polling schedule (``next_interval``), for a lone waiter
(``Cloud.poll``) and the shared poller (``resources.poller``) alike, and what every wait says
of each look (``PollVerdict``). Pure: no request is made here."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ivc_tasks.errors import CloudError

log = logging.getLogger("ivc")

# The one polling schedule (``next_interval``), for a lone waiter (``Cloud.poll``) and the shared
# poller (``resources.poller``) alike:
EAGER_FIRST_POLL = 0.05  # seconds: the first look of an eager wait
EAGER_FLOOR = 0.2  # seconds: the shortest wait between two eager looks after the first
EAGER_GROWTH = 0.1  # eager: each wait is this share of the time waited so far (<= poll_interval)
LAZY_GROWTH = 0.25  # lazy: each wait is this share of the time waited (>= poll_interval) ...
LONG_WAIT_CAP = 2.5  # ... and at most this many seconds (or poll_interval if that is longer)


def next_interval(waited: float, *, poll_interval: float, eager: bool) -> float:
    """Seconds until the next look at something awaited for ``waited`` seconds.

    *Eager* waits are inside an outage (the old server stopping, volumes and the address
    moving, a rollback): first look after 50 ms, then every 0.2 s or 10% of the time waited,
    at most ``poll_interval``: what polling adds to the outage stays under ~10% of each wait
    (a real cloud's 2 s attach or 5 s stop is seen as soon as with looks every 50 ms, at half
    the requests).
    *Lazy* waits cost no outage (a server booting before the old one stops, the old one
    deleting after the address moved, the steps' boots and attaches): every ``poll_interval``,
    then 25% of the time waited, at most ``LONG_WAIT_CAP`` (2.5 s): a 31 s boot costs 20 looks
    instead of ~60, seen ~1 s after it is ACTIVE on average.
    ``poll_interval`` 0 (tests): no waiting at all.
    """
    if poll_interval <= 0:
        return 0.0
    if eager:
        if waited < EAGER_FIRST_POLL:
            return min(poll_interval, EAGER_FIRST_POLL)
        return min(poll_interval, max(EAGER_FLOOR, EAGER_GROWTH * waited))
    return min(max(poll_interval, LONG_WAIT_CAP), max(poll_interval, LAZY_GROWTH * waited))


def is_eager(pace: Any, item: Any) -> bool:
    """Whether the next look is eager: ``pace`` is a bool, or a function of the last item seen
    (None before the first look)."""
    return bool(pace(item)) if callable(pace) else bool(pace)


@dataclass
class PollVerdict:
    """What every wait says of each look (``Cloud.poll`` and the shared poller): a progress
    line when the state changes (and every 5 s), then done, failed or timed out."""

    what: str
    state: Callable[[Any], str]
    is_done: Callable[[Any], bool]
    failed: Callable[[Any], str | None]
    timeout: float
    start: float
    last_state: str | None = None
    last_log: float | None = None

    def done(self, item: Any, now: float) -> bool:
        """True when done; False to look again.

        :raises CloudError: it failed, or was not done within ``timeout`` seconds.
        """
        current = self.state(item)
        if current != self.last_state or now - (self.last_log or self.start) >= 5:
            log.info("  %s: %s (%.1f s)", self.what, current, now - self.start)
            self.last_state, self.last_log = current, now
        if self.is_done(item):
            return True
        reason = self.failed(item)
        if reason is not None:
            raise CloudError(f"{self.what}: {reason}")
        if now - self.start >= self.timeout:
            raise CloudError(f"{self.what}: still {current} after {self.timeout:g} s; raise the "
                             "timeout (settings) or look at the cloud's side")
        return False
