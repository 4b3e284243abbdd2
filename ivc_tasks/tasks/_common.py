"""Plumbing shared by the step tasks: settings and spec, the connection, output, exit codes.

Output: progress and logs go to stderr; stdout gets the result, either a short human summary or,
with ``--json``, ONE JSON object with at least ``changed``, ``actions``, ``requests`` (every
HTTP request of the run, authentication and version discovery included) and
``requests_by_method``. A failure prints that object too, with ``error`` and ``exit_code``.

Exit codes (``ivc_tasks.errors``): 0 done, changed or not; 1 a cloud operation failed;
2 invalid input or configuration, nothing touched. Never a traceback: what escapes as another
exception while reading the inputs is exit 2 naming the file, anything else exit 1 (set
``IVC_DEBUG=1`` to log the traceback). Messages are cut (``errors.clip_message``): a long value
shows its first characters and its length, in text and in JSON.

Nothing here imports openstacksdk at import time: ``invoke --list`` stays fast.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from invoke import Exit

from ivc_tasks.errors import EXIT_CLOUD, EXIT_INVALID, ConfigError, IvcError, clip, clip_message

LOG_FORMAT = "%(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest swaps it between tests)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging() -> None:
    """Send the ``ivc`` logger's INFO lines to stderr (once)."""
    log = logging.getLogger("ivc")
    if not any(getattr(h, "_ivc", False) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._ivc = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def load_inputs() -> tuple[Any, Any]:
    """Read the settings (``IVC_ENV``, ``IVC_ROOT``...) and the spec they point at.

    :raises ConfigError: anything invalid, before any cloud call.
    """
    from ivc_tasks.settings import find_root, load_settings
    from ivc_tasks.spec import load_spec

    try:
        settings = load_settings()
    except ConfigError:
        raise
    except OSError as exc:  # e.g. IVC_ENV or IVC_ROOT too long for the filesystem
        name = clip(str(exc.filename)) if exc.filename else "the env file"
        raise ConfigError(f"{name}: {exc.strerror or exc} (from IVC_ROOT / IVC_ENV); use a shorter "
                          "environment name or root folder") from None
    except Exception as exc:  # noqa: BLE001 (a dotenv parse problem, a bad byte...)
        env_file = (f"{os.environ.get('IVC_ROOT') or find_root()}/env/"
                    f"{os.environ.get('IVC_ENV') or 'local'}.env")
        raise ConfigError(f"{clip(env_file)}: cannot read the settings: {type(exc).__name__}: "
                          f"{clip(str(exc))}; fix the env file (UTF-8 text, KEY=value lines)"
                          ) from None
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


@contextlib.contextmanager
def usage(step: str, *, json: bool) -> Iterator[None]:
    """Check flags inside this block: an ``Exit`` raised there (a usage error, exit 2) also
    prints the one JSON object with ``error`` and ``exit_code`` when ``--json`` was given."""
    start = time.monotonic()
    try:
        yield
    except Exit as exc:
        message = clip_message(str(exc.message or ""))
        if json:
            _print_json({"step": step, "changed": False, "actions": [], "error": message,
                         "exit_code": exc.code, **_stats(None, start)})
        raise Exit(message, code=exc.code) from None


def run_step(step: str, action: Callable[[Any, Any], Any], *, json: bool,
             connect: Callable[[Any], Any] | None = None, raw: bool = False) -> Any:
    """Load inputs, connect, run ``action(cloud, spec)``, print its result, map errors to exits.

    :param step: the task's name, for messages.
    :param action: calls ONE ops function; returns a result with ``to_dict()`` and ``lines()``.
    :param json: print one JSON object on stdout instead of the human summary.
    :param raw: print ``result.text()`` only (e.g. an ssh config), warnings on stderr.
    :param connect: how to get the Cloud from Settings (tests pass a fake).
    :raises Exit: with the error's exit code (1 cloud, 2 invalid input).
    """
    setup_logging()
    start = time.monotonic()
    cloud = None
    try:
        settings, spec = load_inputs()
        if connect is None:
            from ivc_tasks.cloud import connect
        cloud = connect(settings)
        from ivc_tasks.known_hosts import known_hosts_path
        cloud.shared.known_hosts = cloud.shared.known_hosts or known_hosts_path(
            settings.root, settings.env, settings.values)  # where host keys are written
        key = settings.values.get("IVC_SSH_KEY", "").strip()  # for `inventory`
        cloud.shared.ssh_key = cloud.shared.ssh_key or (str(settings.root / key) if key else None)
        result = action(cloud, spec)
    except IvcError as exc:
        _fail(step, exc, exc.exit_code, json=json, cloud=cloud, start=start)
    except Exception as exc:
        if os.environ.get("IVC_DEBUG"):
            logging.getLogger("ivc").exception("unexpected error")
        _fail(step, exc, EXIT_CLOUD, json=json, cloud=cloud, start=start)
    out = {**result.to_dict(), **_stats(cloud, start)}
    if raw:  # the result's own text only (inventory); the rest goes to stderr
        print(result.text(), end="")
        for warning in out.get("warnings", []):
            logging.getLogger("ivc").warning("warning: %s", warning)
        return out
    if json:
        _print_json(out)
    else:
        _print_lines(result.lines() + [*(f"warning: {w}" for w in out.get("warnings", []))] +
                     [f"{out['requests']} requests in {out['elapsed_seconds']} s"])
    return out


def _describe(exc: BaseException) -> str:
    """One line for an exception that is not an IvcError."""
    from ivc_tasks.cloud import is_cloud_exception
    from ivc_tasks.retry import describe_cloud_error

    if is_cloud_exception(exc):
        return describe_cloud_error(exc)
    return (f"unexpected error {type(exc).__name__}: {exc} (a bug in ivc: please report it; "
            "IVC_DEBUG=1 logs the traceback)")


def _fail(step: str, exc: BaseException, code: int, *, json: bool, cloud: Any,
          start: float) -> None:
    """Print the failure (JSON, or what a partial result did) and raise ``Exit``."""
    message = clip_message(str(exc) if isinstance(exc, IvcError) else _describe(exc))
    partial = getattr(exc, "result", None)
    try:
        out = partial.to_dict() if partial is not None else None
    except Exception:  # noqa: BLE001
        out = None
    out = out or {"step": step, "changed": False, "actions": []}
    out.update(error=message, exit_code=code, **_stats(cloud, start))
    if json:
        _print_json(out)
    elif partial is not None and getattr(partial, "changed", False):
        _print_lines(partial.lines())
    kind = "invalid input" if isinstance(exc, ConfigError) else "failed"
    raise Exit(f"{step}: {kind}: {message}", code=code) from None


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
