"""Independent jobs side by side in threads (volumes of one server, servers of one run).

``run_side_by_side`` runs every job and raises the first failure once all have ended (the
volumes of one server). ``run_jobs`` runs the servers of a run: the first failure stops new
work (jobs not started yet are reported as skipped), running ones finish, and each job's
outcome is returned. Each log line a job writes on logger ``ivc`` starts with its name
(``[web1] ...``), also from the threads it starts itself, so that output stays readable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
_current = threading.local()
_filter_lock = threading.Lock()


class _LabelFilter(logging.Filter):
    """Prefix each record logged from a labelled job's thread with ``[<label>] ``."""

    def filter(self, record: logging.LogRecord) -> bool:
        label = getattr(_current, "label", None)
        if label and not getattr(record, "ivc_label", None):
            record.msg = f"[{label}] {record.msg}"
            record.ivc_label = label
        return True


_FILTER = _LabelFilter()


def _install_filter() -> None:
    logger = logging.getLogger("ivc")
    with _filter_lock:
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def current_label() -> str | None:
    """The label of the job this thread runs (None outside ``run_jobs``)."""
    return getattr(_current, "label", None)


def labelled(label: str | None, job: Callable[[], T]) -> Callable[[], T]:
    """``job`` run with ``label`` as its thread's label (its log lines start with it)."""
    def run() -> T:
        previous = getattr(_current, "label", None)
        _current.label = label
        try:
            return job()
        finally:
            _current.label = previous
    return run


def run_side_by_side(jobs: Mapping[str, Callable[[], T]], *, workers: int | None = None
                     ) -> dict[str, T]:
    """Run the jobs (up to ``workers`` at once, default all); wait for ALL of them, then raise
    the first failure."""
    workers = len(jobs) if workers is None else max(1, min(workers, len(jobs)))
    if workers <= 1:
        return {key: job() for key, job in jobs.items()}
    label = current_label()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {key: pool.submit(labelled(label, job)) for key, job in jobs.items()}
        errors = [f.exception() for f in futures.values()]
    for error in errors:
        if error is not None:
            raise error
    return {key: f.result() for key, f in futures.items()}


@dataclass
class Outcome(Generic[T]):
    """What one job of ``run_jobs`` came to: its value, or its error, or skipped."""

    value: T | None = None
    error: BaseException | None = None
    started: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.started and self.error is None


def run_jobs(jobs: Mapping[str, Callable[[], T]], *, workers: int, label: bool = True
             ) -> dict[str, Outcome[T]]:
    """Run the jobs, up to ``workers`` at once, in order; the first failure stops new work.

    A job not started when a failure happened is skipped (``started`` False); jobs already
    running finish. Never raises a job's error: each is in its outcome.

    :param label: prefix each job's log lines with its key.
    """
    if label:
        _install_filter()
    stop = threading.Event()
    outcomes: dict[str, Outcome[T]] = {key: Outcome() for key in jobs}

    def one(key: str, job: Callable[[], T]) -> None:
        if stop.is_set():
            return
        outcome = outcomes[key]
        outcome.started = True
        start = time.monotonic()
        try:
            outcome.value = (labelled(key, job) if label else job)()
        except Exception as exc:  # noqa: BLE001 (reported in the outcome)
            outcome.error = exc
            stop.set()
        finally:
            outcome.seconds = time.monotonic() - start

    workers = max(1, min(workers, len(jobs) or 1))
    if workers == 1:
        for key, job in jobs.items():
            one(key, job)
        return outcomes
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(one, key, job) for key, job in jobs.items()]:
            future.result()
    return outcomes


__all__ = ["Outcome", "current_label", "labelled", "run_jobs", "run_side_by_side"]

