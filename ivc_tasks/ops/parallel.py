"""Independent jobs side by side in threads (volumes of one server, servers of one run)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def run_side_by_side(jobs: Mapping[str, Callable[[], T]], *, workers: int | None = None
                     ) -> dict[str, T]:
    """Run the jobs (up to ``workers`` at once, default all); wait for ALL of them, then raise
    the first failure."""
    workers = len(jobs) if workers is None else max(1, min(workers, len(jobs)))
    if workers <= 1:
        return {key: job() for key, job in jobs.items()}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {key: pool.submit(job) for key, job in jobs.items()}
        errors = [f.exception() for f in futures.values()]
    for error in errors:
        if error is not None:
            raise error
    return {key: f.result() for key, f in futures.items()}
