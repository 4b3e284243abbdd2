"""Plumbing shared by the step tasks: settings and spec, the connection, output, exit codes.

Output: progress and logs go to stderr; stdout gets the result, either a short human summary or,
with ``--json``, ONE JSON object with at least ``changed``, ``actions``, ``requests`` (every
HTTP request of the run, authentication and version discovery included) and
``requests_by_method``. A failure prints that object too, with ``error`` and ``exit_code``.

Exit codes (``ivc_tasks.errors``): 0 done, changed or not; 1 a cloud operation failed;
2 invalid input or configuration, nothing touched.

Nothing here imports openstacksdk at import time: ``invoke --list`` stays fast.
"""

from __future__ import annotations

import json as jsonlib
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from invoke import Exit

from ivc_tasks.errors import EXIT_INVALID, ConfigError, IvcError

LOG_FORMAT = "%(message)s"


def setup_logging() -> None:
    """Send the ``ivc`` logger's INFO lines to stderr (once)."""
    log = logging.getLogger("ivc")
    if not any(getattr(h, "_ivc", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._ivc = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def load_inputs() -> tuple[Any, Any]:
    """Read the settings (``IVC_ENV``, ``IVC_ROOT``...) and the spec they point at.

    :raises ConfigError: anything invalid, before any cloud call.
    """
    from ivc_tasks.settings import load_settings  # noqa: PLC0415 (keep `invoke --list` light)
    from ivc_tasks.spec import load_spec  # noqa: PLC0415

    settings = load_settings()
    return settings, load_spec(settings.spec_path, env_name=settings.env)


def require(value: Any, flag: str, what: str) -> Any:
    """Return ``value``, or exit 2 saying that ``flag`` is required."""
    if not value:
        raise Exit(f"{flag} is required: {what}", code=EXIT_INVALID)
    return value


def seconds_flag(value: Any, flag: str) -> float | None:
    """A positive number of seconds from a flag (None stays None); else exit 2."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise Exit(f"{flag}: {value!r} is not a number of seconds", code=EXIT_INVALID) from None
    if not seconds > 0:
        raise Exit(f"{flag}: {value!r} must be greater than 0", code=EXIT_INVALID)
    return seconds


def count_flag(value: Any, flag: str) -> int:
    """A whole number of 1 or more from a flag; else exit 2."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise Exit(f"{flag}: {value!r} is not a whole number", code=EXIT_INVALID) from None
    if number < 1:
        raise Exit(f"{flag}: {value!r} must be 1 or more", code=EXIT_INVALID)
    return number


def run_step(step: str, action: Callable[[Any, Any], Any], *, json: bool,
             connect: Callable[[Any], Any] | None = None) -> Any:
    """Load inputs, connect, run ``action(cloud, spec)``, print its result, map errors to exits.

    :param step: the task's name, for messages.
    :param action: calls ONE ops function; returns a result with ``to_dict()`` and ``lines()``.
    :param json: print one JSON object on stdout instead of the human summary.
    :param connect: how to get the Cloud from Settings (tests pass a fake).
    :raises Exit: with the error's exit code (1 cloud, 2 invalid input).
    """
    setup_logging()
    start = time.monotonic()
    cloud = None
    try:
        settings, spec = load_inputs()
        if connect is None:
            from ivc_tasks.cloud import connect  # noqa: PLC0415
        cloud = connect(settings)
        result = action(cloud, spec)
    except IvcError as exc:
        partial = getattr(exc, "result", None)
        out = partial.to_dict() if partial is not None else {"step": step, "changed": False,
                                                              "actions": []}
        out.update(error=str(exc), exit_code=exc.exit_code, **_stats(cloud, start))
        if json:
            _print_json(out)
        elif partial is not None and partial.changed:
            _print_lines(partial.lines())
        kind = "invalid input" if isinstance(exc, ConfigError) else "failed"
        raise Exit(f"{step}: {kind}: {exc}", code=exc.exit_code) from None
    out = {**result.to_dict(), **_stats(cloud, start)}
    if json:
        _print_json(out)
    else:
        _print_lines(result.lines() + [*(f"warning: {w}" for w in out.get("warnings", []))] +
                     [f"{out['requests']} requests in {out['elapsed_seconds']} s"])
    return out


def _stats(cloud: Any, start: float) -> dict[str, Any]:
    stats = cloud.counter.snapshot() if cloud is not None else \
        {"requests": 0, "requests_by_method": {}, "auth_requests": 0, "mutating_requests": 0}
    stats["elapsed_seconds"] = round(time.monotonic() - start, 3)
    if cloud is not None:
        stats["run_id"] = cloud.run_id
        stats["env"] = cloud.env
    return stats


def _print_json(data: dict[str, Any]) -> None:
    print(jsonlib.dumps(data, indent=2, default=str))


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        print(line)
