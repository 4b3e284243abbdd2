"""The one retry policy for cloud calls: classified, bounded, jittered, logged.

Transient (retried):
  * connection failures and timeouts: keystoneauth1 ``ConnectFailure`` / ``ConnectTimeout``,
    requests ``ConnectionError`` / ``Timeout`` (not SSL errors);
  * HTTP 429 (waiting what ``Retry-After`` asks, capped), 502, 503, 504;
  * a failed version discovery (keystoneauth1 ``DiscoveryFailure``, openstacksdk
    ``ServiceDiscoveryException``) whose cause is one of the above: authentication discovers
    the identity API's versions inside the first call, and wraps a 503 or a reset connection
    there in a DiscoveryFailure;
  * openstacksdk's ``NotSupported`` "... exists but does not have any supported versions"
    (``ServiceDiscoveryException`` "No endpoint data found" with an endpoint override), raised
    when a service's version discovery got no document: keystoneauth swallows the reset
    connection or 503 that caused it (no cause chain to look at), so it is retried like any
    transient failure, within the same bounded budget: a genuine one (a cloud that really
    offers no version openstacksdk supports) fails once the budget is spent, with the SDK's
    message. ``cloud.open_connection`` also lets keystoneauth retry connection failures of
    discovery itself (``DISCOVERY_CONNECT_RETRIES``), so a reset rarely gets this far;
  * HTTP 409 only when the caller says conflicts are transient for its operation (volume
    attach/detach while a task_state is set).
Never retried: any other status (400, 401, 403, 404, 413...) and any error whose message
mentions a quota (Neutron reports quota errors as 409).

A create is not made safe by retrying: Nova has no idempotency key, so the caller looks for what
a lost first attempt made before sending a create again.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import tenacity

log = logging.getLogger("ivc")

TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
CONFLICT = 409
RETRY_AFTER_CAP = 60.0
# Class names recognised when the class itself cannot be imported (or is a look-alike).
CONNECTION_ERROR_NAMES = frozenset({"ConnectFailure", "ConnectTimeout", "RetriableConnectionFailure"})
# Wrappers of a discovery failure: transient when what they wrap is.
DISCOVERY_ERROR_NAMES = frozenset({"DiscoveryFailure", "ServiceDiscoveryException"})
# what openstacksdk raises when a service's version discovery got no document (NotSupported
# without an endpoint override, ServiceDiscoveryException with one); nothing to classify inside
NO_VERSIONS = ("does not have any supported versions", "No endpoint data found",
               "No version in endpoint data")
DISCOVERY_FOUND_NOTHING_NAMES = frozenset({"NotSupported", "ServiceDiscoveryException"})
REQUEST_ID_HEADERS = ("x-openstack-request-id", "x-compute-request-id")
_KSA_SUFFIX = re.compile(r" \(HTTP \d+\)( \(Request-ID: [^)]*\))?$")


def status_code(exc: BaseException) -> int | None:
    """Return the HTTP status of an openstacksdk or keystoneauth1 HTTP error, else None."""
    for attr in ("status_code", "http_status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value:
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) else None


def _connection_error_classes() -> tuple[type[BaseException], ...]:
    classes: list[type[BaseException]] = []
    try:
        from keystoneauth1 import exceptions as ksa
        classes += [ksa.ConnectFailure, ksa.ConnectTimeout]
    except ImportError:  # pragma: no cover - keystoneauth1 comes with openstacksdk
        pass
    try:
        import requests
        classes += [requests.ConnectionError, requests.Timeout]
    except ImportError:  # pragma: no cover
        pass
    return tuple(classes)


def is_connection_error(exc: BaseException) -> bool:
    """Return True for a failure to reach the cloud or a timeout (never an SSL error)."""
    if type(exc).__name__ == "SSLError":
        return False
    if isinstance(exc, _connection_error_classes()):
        return True
    return any(cls.__name__ in CONNECTION_ERROR_NAMES for cls in type(exc).__mro__)


def _messages(exc: BaseException) -> str:
    parts = [str(exc), str(getattr(exc, "details", "") or ""), str(getattr(exc, "message", "") or "")]
    return " ".join(parts)


def is_transient(exc: BaseException, *, conflict_is_transient: bool = False) -> bool:
    """Return True when retrying ``exc`` may succeed (see the module docstring for the cases).

    :param conflict_is_transient: treat HTTP 409 as transient (for attach/detach).
    """
    if "quota" in _messages(exc).lower():
        return False
    status = status_code(exc)
    if status is not None:
        return status in TRANSIENT_STATUS or (conflict_is_transient and status == CONFLICT)
    if is_connection_error(exc):
        return True
    if type(exc).__name__ in DISCOVERY_FOUND_NOTHING_NAMES and any(
            text in str(exc) for text in NO_VERSIONS):
        return True
    cause = discovery_cause(exc)
    return cause is not None and is_transient(cause)


def discovery_cause(exc: BaseException) -> BaseException | None:
    """Return what a failed version discovery wraps (the HTTP error or connection failure that
    keystoneauth1 or openstacksdk was handling when it raised), else None."""
    if not any(cls.__name__ in DISCOVERY_ERROR_NAMES for cls in type(exc).__mro__):
        return None
    cause = exc.__cause__ or exc.__context__
    return cause if cause is not None and cause is not exc else None


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """Return the delay a 429 response asks for (``Retry-After`` in seconds), else None."""
    if exc is None or status_code(exc) != 429:
        return None
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    raw = headers.get("Retry-After") if hasattr(headers, "get") else None
    if raw is None:
        raw = getattr(exc, "retry_after", None) or None  # keystoneauth1 HttpError
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        return None  # absent, or an HTTP date: fall back to the usual wait
    return max(seconds, 0.0)


class wait_retry_after(tenacity.wait.wait_base):
    """Wait what a 429's ``Retry-After`` asks (at most ``cap`` seconds), else ``fallback``."""

    def __init__(self, fallback: tenacity.wait.wait_base, cap: float = RETRY_AFTER_CAP):
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        delay = retry_after_seconds(outcome.exception() if outcome and outcome.failed else None)
        if delay is not None:
            return min(delay, self.cap)
        return self.fallback(retry_state)


class Throttle:
    """A 429's ``Retry-After`` for the whole run: every worker waits it out before its next
    request, not only the one that got it (that one waits through its own retry)."""

    def __init__(self, clock: Any = None):
        import threading
        import time

        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self.until = 0.0

    def note(self, exc: BaseException) -> None:
        """Record the pause a 429 asks for (capped as the retry caps it)."""
        delay = retry_after_seconds(exc)
        if delay:
            with self._lock:
                self.until = max(self.until, self._clock() + min(delay, RETRY_AFTER_CAP))

    def wait(self, sleep: Any, operation: str) -> None:
        """Sleep until the pause is over (at once when there is none)."""
        left = self.until - self._clock()
        if left > 0:
            log.info("%s: waiting %.1f s (the cloud asked this run to slow down: 429)",
                     operation, left)
            sleep(left)


def _log_before_sleep(operation: str, attempts: int):
    def before_sleep(retry_state: tenacity.RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        sleep = retry_state.next_action.sleep if retry_state.next_action else 0.0
        log.warning("%s failed (attempt %d of %d): %s; retrying in %.1f s", operation,
                    retry_state.attempt_number, attempts,
                    describe_cloud_error(exc) if exc else "no error", sleep)
    return before_sleep


def cloud_retrying(
    *,
    operation: str = "cloud call",
    conflict_is_transient: bool = False,
    attempts: int = 6,
    max_seconds: float = 120,
    **overrides: Any,
) -> tenacity.Retrying:
    """Return the Retrying that every cloud call goes through.

    Use it as ``for attempt in cloud_retrying(operation="attach web1-data"): with attempt: ...``
    or ``cloud_retrying(...)(fn, *args)``.

    :param operation: what is being done, for the WARNING logged on logger ``ivc`` before each
        retry.
    :param conflict_is_transient: retry HTTP 409 too (attach/detach only).
    :param attempts: at most this many attempts in all.
    :param max_seconds: stop retrying once this long has passed since the first attempt.
    :param overrides: any tenacity.Retrying argument, e.g. ``wait=tenacity.wait_none()`` in tests.
    :raises ValueError: for attempts < 1 or max_seconds <= 0.
    """
    if attempts < 1 or max_seconds <= 0:
        raise ValueError(f"attempts must be >= 1 and max_seconds > 0 (got {attempts}, {max_seconds})")
    policy: dict[str, Any] = dict(
        retry=tenacity.retry_if_exception(
            lambda exc: is_transient(exc, conflict_is_transient=conflict_is_transient)),
        wait=wait_retry_after(tenacity.wait_random_exponential(multiplier=0.5, max=20),
                              cap=min(RETRY_AFTER_CAP, max_seconds)),
        stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_after_delay(max_seconds),
        before_sleep=_log_before_sleep(operation, attempts),
        reraise=True,
    )
    return tenacity.Retrying(**(policy | overrides))


def request_id(exc: BaseException) -> str | None:
    """Return the cloud's request id for an HTTP error (attribute, else response headers)."""
    value = getattr(exc, "request_id", None)
    if value:
        return str(value)
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    for header in REQUEST_ID_HEADERS:
        if hasattr(headers, "get") and headers.get(header):
            return str(headers.get(header))
    return None


def describe_cloud_error(exc: BaseException) -> str:
    """Return one line for an operator: HTTP status, the cloud's message and the request id.

    e.g. ``HTTP 409: Quota exceeded for resources: ['port'] (request id req-1234)``.
    """
    status = status_code(exc)
    details = getattr(exc, "details", None)
    message = str(details) if details else str(getattr(exc, "message", None) or exc or "")
    # keystoneauth1 formats its message as "<message> (HTTP 404) (Request-ID: req-...)"
    message = _KSA_SUFFIX.sub("", " ".join(message.split())) or type(exc).__name__
    head = f"HTTP {status}" if status is not None else type(exc).__name__
    rid = request_id(exc)
    return f"{head}: {message}" + (f" (request id {rid})" if rid else "")
