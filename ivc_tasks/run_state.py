"""A run's state, beside its connection and Settings (``cloud.Cloud`` holds all three).

``Listings``: what one view of the run has listed (each worker has its own copy, see
``Cloud.worker_view``); ``RunShared``: what every view of the run shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ivc_tasks.retry import Throttle


class Listings:
    """What one view of a run has listed, by kind: ``"servers"``, ``"volumes"``,
    ``"images:<ref>"``, ``"server:<name>"``... (``resources.resolve`` fills and reads them).

    Each worker of a run has its own (``Cloud.worker_view``), so that one worker's listing,
    stale after its own change, never hides another's.
    """

    def __init__(self, items: Mapping[str, Any] | None = None):
        self._items: dict[str, Any] = dict(items or {})

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> Any | None:
        return self._items.get(key)

    def put(self, key: str, value: Any) -> Any:
        """Keep ``value`` for ``key``; return it."""
        self._items[key] = value
        return value

    def forget(self, *keys: str) -> None:
        """Drop listings made stale by a change."""
        for key in keys:
            self._items.pop(key, None)

    def copy(self, **replaced: Any) -> Listings:
        """A copy for another view, with ``replaced`` listings (``servers=[...]``) instead."""
        return Listings({**self._items, **replaced})

    def take_from(self, other: Listings, *, skip: tuple[str, ...] = ()) -> None:
        """Keep what ``other`` (a view of the same run) listed, except ``skip``."""
        self._items.update({k: v for k, v in other._items.items() if k not in skip})


@dataclass
class RunShared:
    """What every view of one run shares, whichever worker holds it.

    :param throttle: the rate-limit pause: a 429's Retry-After pauses every worker.
    :param poller: ``resources.poller.Poller`` while one is installed (``shared_poller``);
        typed ``Any`` because that module imports this one.
    :param known_hosts: where the run writes host keys; ``ssh_key``: the key file the inventory
        names; ``console_refused``: the console refusal, once seen (no request after it).
    """

    throttle: Throttle | None = None   # made on the run's clock by the first Cloud
    poller: Any = None
    known_hosts: Any = None        # Path of the environment's known_hosts file (steps/gates.py)
    ssh_key: str | None = None     # IVC_SSH_KEY, for the inventory
    console_refused: Any = None    # resources/console.ConsoleRefused, told once per run
