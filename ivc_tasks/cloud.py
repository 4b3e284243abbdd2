"""The connection to the cloud: one per process, every HTTP request counted, every call retried.

``connect(settings)`` opens an openstacksdk connection for ``settings.os_cloud`` with the env
file's ``OS_*`` variables applied (only while the configuration is read), never prompting for
anything, and hooks a counter on the underlying requests session before the first request, so
that authentication and version discovery are counted too. keystoneauth retries a connection
failure of discovery and of the token request itself (``retry_discovery``); ivc's own calls
are retried by ivc alone.

``Cloud`` is one run: the connection, its ``Settings`` (read from ``cloud.settings``, never
copied) and its state (``run_state``: each worker view's listings, the state every view
shares).

``Cloud.call`` is the one way ops talk to the cloud: it runs a call under
``retry.cloud_retrying`` (with the run's attempt and time limits) and turns what still fails
into a ``CloudCallError`` (exit code 1) that carries the cloud's message and request id. A
create passes ``done_already``: before re-sending it, that looks for what a lost first attempt
may have made.

openstacksdk is imported inside functions only, so that ``invoke --list`` stays fast.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ivc_tasks.credentials import (
    MISSING_SECRET_FIX,
    Credentials,
    _environment,
    resolve_credentials,
)
from ivc_tasks.errors import CloudError, ConfigError, clip
from ivc_tasks.polling import PollVerdict, is_eager, next_interval
from ivc_tasks.retry import Throttle, cloud_retrying, describe_cloud_error, status_code
from ivc_tasks.run_state import Listings, RunShared
from ivc_tasks.settings import Settings

log = logging.getLogger("ivc")
T = TypeVar("T")
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
READ_ACTIONS = (b'"os-getConsoleOutput"',)  # server actions (POST) that change nothing
# keystoneauth's own retries of a connection failure, for the requests ivc's calls do not send
# through a service proxy: version discovery and the token request (see ``open_connection``)
DISCOVERY_CONNECT_RETRIES = 3


class CloudCallError(CloudError):
    """A cloud call failed for good (after retries, where it was retried).

    ``status`` is the HTTP status (None for a connection failure), ``original`` the exception.
    """

    def __init__(self, operation: str, original: BaseException, *, redact: str | None = None):
        self.operation = operation
        self.original = original
        self.status = status_code(original)
        super().__init__(scrub(f"{operation} failed: {describe_cloud_error(original)}", redact))

    @property
    def details(self) -> str:
        """The cloud's own message, for callers that recognise one (e.g. "already exists")."""
        return str(getattr(self.original, "details", None) or self.original)


@dataclass
class RequestCounter:
    """Counts every HTTP response the connection's session receives, by method.

    ``auth`` counts the token requests (``POST .../auth/tokens``); ``mutating`` the POST, PUT,
    PATCH and DELETE requests other than those, i.e. the ones that change something (Nova's
    ``os-getConsoleOutput`` is a POST action that only reads: not counted).
    """

    by_method: Counter = field(default_factory=Counter)
    auth: int = 0
    mutating: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def hook(self, response: Any, *args: Any, **kwargs: Any) -> None:
        """A requests response hook."""
        method = str(response.request.method).upper()
        url = str(response.request.url).rstrip("/")
        is_auth = url.endswith("/auth/tokens")
        body = getattr(response.request, "body", None) or b""
        reads = url.endswith("/action") and any(
            action in (body.encode() if isinstance(body, str) else body)
            for action in READ_ACTIONS)
        with self._lock:
            self.by_method[method] += 1
            self.auth += is_auth
            self.mutating += method in MUTATING_METHODS and not is_auth and not reads

    @property
    def total(self) -> int:
        return sum(self.by_method.values())

    def snapshot(self) -> dict[str, Any]:
        """The counts for JSON output: ``requests`` (all, auth and discovery included),
        ``requests_by_method``, ``auth_requests`` and ``mutating_requests``."""
        return {"requests": self.total, "requests_by_method": dict(sorted(self.by_method.items())),
                "auth_requests": self.auth, "mutating_requests": self.mutating}


@dataclass
class Cloud:
    """One run: the connection, the Settings it runs with, and its state.

    :param conn: the openstacksdk Connection (or a stand-in with the same proxies in tests).
    :param settings: the run's Settings (environment, timings, retries, floating network,
        parallel workers), read from there and never copied (``settings.make_settings`` builds
        them in code).
    :param run_id: this run's id (``ivc_run`` metadata), to recognise what this run created.
    :param retry_overrides: extra tenacity arguments, e.g. ``wait=tenacity.wait_none()`` in tests.
    :param sleep: how the run waits: between polls, before a retry, out a 429's pause.
    :param clock: the run's monotonic clock (waits' timeouts, the 429 pause, phase timings).
        Tests inject both (``tests/unit/fakecloud.ticking_cloud``); no wait needs real time.
    :param wall_clock: the run's wall clock (unix time), for what is compared with times the
        cloud or another run recorded: a lock's age and expiry. Tests inject it too.
    :param listings: what this view has listed (``resources.resolve``).
    :param shared: what every view of the run shares (the throttle, the shared poller).
    """

    conn: Any
    settings: Settings
    counter: RequestCounter = field(default_factory=RequestCounter)
    run_id: str = field(default_factory=lambda: new_run_id())
    retry_overrides: Mapping[str, Any] = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    listings: Listings = field(default_factory=Listings)
    shared: RunShared = field(default_factory=RunShared)

    def __post_init__(self) -> None:
        if self.shared.throttle is None:   # the 429 pause keeps time on the run's clock
            self.shared.throttle = Throttle(self.clock)

    @property
    def env(self) -> str:
        """The environment's name (``ivc_env`` metadata): ``settings.env``."""
        return self.settings.env

    @property
    def poll_interval(self) -> float:
        """``settings.poll_interval``, which ``poll`` and the shared poller start from."""
        return self.settings.poll_interval

    def worker_view(self, **listed: list[Any]) -> Cloud:
        """This run as one worker sees it: the same connection, Settings, counter, run id and
        shared state, its own copy of the listings; ``listed`` replaces some of them (rotate's
        preflight plans a new server against a server listing without the one it replaces).
        """
        return Cloud(conn=self.conn, settings=self.settings, counter=self.counter,
                     run_id=self.run_id, retry_overrides=self.retry_overrides, sleep=self.sleep,
                     clock=self.clock, wall_clock=self.wall_clock,
                     listings=self.listings.copy(**listed), shared=self.shared)

    def call(
        self,
        operation: str,
        fn: Callable[[], T],
        *,
        conflict_is_transient: bool = False,
        done_already: Callable[[], T | None] | None = None,
        redact: str | None = None,
    ) -> T:
        """Run ``fn()`` under the retry policy.

        :param operation: what is being done, for logs and error messages ("create server web1").
        :param fn: the call; a listing must return a list (not a generator), so that paging
            happens inside the retry.
        :param conflict_is_transient: retry HTTP 409 too (volume attach/detach only).
        :param done_already: "did a lost attempt do it already?": called before each re-send;
            when it returns something (what the lost attempt made, or True for a change already
            made or under way), that is returned instead of sending the call again.
        :param redact: a secret sent in the call (base64 user_data): cut out of the error
            message, which may quote it (Nova's validation errors quote the values).
        :raises CloudCallError: the call failed for good.
        """
        retrying = cloud_retrying(operation=operation, conflict_is_transient=conflict_is_transient,
                                  attempts=self.settings.retry_attempts,
                                  max_seconds=self.settings.retry_max_seconds,
                                  **({"sleep": self.sleep} | dict(self.retry_overrides)))
        throttle = self.shared.throttle
        try:
            for attempt in retrying:
                with attempt:
                    throttle.wait(self.sleep, operation)
                    if done_already is not None and attempt.retry_state.attempt_number > 1:
                        found = done_already()
                        if found is not None:
                            log.info("%s: found what the previous attempt made", operation)
                            return found
                    try:
                        return fn()
                    except Exception as exc:
                        throttle.note(exc)  # a 429's Retry-After pauses every worker
                        raise
        except CloudCallError:
            raise
        except Exception as exc:
            if not is_cloud_exception(exc):
                raise
            raise CloudCallError(operation, exc, redact=redact) from exc
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def poll(
        self,
        what: str,
        fetch: Callable[[], T],
        state: Callable[[T], str],
        *,
        done: Callable[[T], bool],
        failed: Callable[[T], str | None],
        timeout: float,
        eager: bool | Callable[[Any], bool] = False,
    ) -> T:
        """Fetch something on ``next_interval``'s schedule until it is done, has failed, or
        time is up (the shared poller follows the same schedule).

        Logs a progress line on stderr whenever the state changes (and every 5 s).

        :param eager: True inside an outage (look soon, then less often), False where a wait
            costs no outage (look lazily), or a function of the last item seen (None before
            the first look) that says which: ``waits.wait_server`` is lazy while a server boots.

        :param what: the subject of the progress lines ("server web1").
        :param fetch: one GET (already retried by the caller through ``call``).
        :param state: a short text for progress lines, e.g. ``"BUILD (spawning)"``.
        :param failed: returns why it failed (e.g. the server's fault), or None.
        :raises CloudError: it failed, or was not done within ``timeout`` seconds.
        """
        start = self.clock()
        verdict = PollVerdict(what, state, done, failed, timeout, start)
        item: Any = None
        while True:
            self.sleep(next_interval(self.clock() - start, poll_interval=self.poll_interval,
                                     eager=is_eager(eager, item)))
            item = fetch()
            if verdict.done(item, self.clock()):
                return item


_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{16,}")


def scrub(text: str, secret: str | None) -> str:
    """Cut out of ``text`` every run of 16+ base64 characters that is part of ``secret``."""
    if not secret:
        return text
    return _BASE64_RUN.sub(
        lambda m: "<redacted user_data>" if m.group(0).rstrip("=") in secret else m.group(0), text)


def new_run_id() -> str:
    """Return a fresh id for one run (12 hex digits)."""
    return uuid.uuid4().hex[:12]


def is_cloud_exception(exc: BaseException) -> bool:
    """Return True for errors raised by openstacksdk, keystoneauth1 or requests."""
    module = type(exc).__module__ or ""
    return module.split(".")[0] in ("openstack", "keystoneauth1", "requests", "urllib3")


def open_connection(settings: Settings, counter: RequestCounter, *,
                    prompt: Callable[[str], str] | None = None) -> Any:
    """Open an openstacksdk Connection for ``settings.os_cloud`` with ``counter`` hooked on.

    No request is made here (see ``authenticate``). The credentials are checked first (see
    ``resolve_credentials``); which cloud and which credentials are used is logged once.

    :param prompt: asks for a missing password; default: ``getpass`` at an interactive terminal
        only (stdin a TTY and ``CI`` unset), never otherwise.
    :raises ConfigError: no such cloud entry, a clouds file missing or malformed, or missing
        credentials; the message names the entry, the file and the fix.
    """
    import openstack

    origin = "the environment" if "OS_PASSWORD" in os.environ else str(settings.env_file)
    with _environment(settings.os_vars):
        creds = resolve_credentials(settings, prompt=prompt, password_origin=origin)
        try:
            creds.region.config["connect_retries"] = 0  # the service proxies: ivc's policy only
            conn = openstack.connection.Connection(config=creds.region)
        except Exception as exc:  # noqa: BLE001 (anything the SDK raises on a bad entry)
            raise ConfigError(f"{creds.where}: {clip(str(exc))}; fix the cloud entry") from None
    log.info("cloud: %s; credentials: %s", creds.where, creds.source)
    retry_discovery(conn.session)
    conn.session.session.hooks.setdefault("response", []).append(counter.hook)
    conn.ivc_credentials = creds
    return conn


def retry_discovery(session: Any) -> None:
    """Let keystoneauth retry a connection failure (``DISCOVERY_CONNECT_RETRIES`` times, after
    0.5, 1, 2 s) of the requests it sends on its own: version discovery and the token request.

    keystoneauth swallows what fails during a service's version discovery, and openstacksdk
    then raises ``NotSupported`` ("exists but does not have any supported versions") with no
    cause to classify; retried here, a reset connection never gets that far. ivc's own calls go
    through the service proxies, whose ``connect_retries`` is 0 (set in ``open_connection``):
    keystoneauth never re-sends them (a create must not be re-sent blindly, see
    ``Cloud.call``'s ``done_already``). keystoneauth reads the session-wide default from
    ``Session._connect_retries`` (its constructor's ``connect_retries``, which openstacksdk
    does not pass).
    """
    if not hasattr(session, "_connect_retries"):  # pragma: no cover - a keystoneauth change
        log.warning("keystoneauth's Session has no _connect_retries: version discovery is not "
                    "retried on a connection failure")
        return
    session._connect_retries = DISCOVERY_CONNECT_RETRIES


def connect(settings: Settings, **overrides: Any) -> Cloud:
    """Return the run's Cloud: one connection, counted, with the settings' limits, authenticated.

    Authentication (identity version discovery and the token request) runs under the same
    retry policy as every other call; a refusal (401/403) fails at once.

    :param overrides: Cloud fields (tests pass ``retry_overrides``);
        ``authenticate=False`` skips the token request (it then happens at the first call).
    :raises ConfigError: see ``open_connection``; the credentials were refused.
    :raises CloudCallError: the identity service could not be reached, after retries.
    """
    do_auth = overrides.pop("authenticate", True)
    counter = RequestCounter()
    conn = open_connection(settings, counter)
    cloud = Cloud(conn=conn, settings=settings, counter=counter, **overrides)
    if do_auth:
        authenticate(cloud, conn.ivc_credentials)
    return cloud


def authenticate(cloud: Cloud, creds: Credentials) -> None:
    """Get the run's token now (discovery + token request), retried like every call.

    :raises ConfigError: the identity service refused the credentials (401/403), or
        keystoneauth found them incomplete.
    :raises CloudCallError: the identity service could not be reached, after retries.
    """
    try:
        cloud.call(f"authenticate to cloud {creds.name}", cloud.conn.session.get_token)
    except CloudCallError as exc:
        if exc.status in (401, 403):
            raise ConfigError(
                f"{creds.where}: the identity service refused the credentials "
                f"({clip(describe_cloud_error(exc.original), 300)}); credentials: {creds.source}; "
                "check the password or application credential of that entry") from None
        raise CloudCallError(f"authenticate to {creds.where}", exc.original) from None
    except Exception as exc:
        if type(exc) is not Exception:
            raise
        raise ConfigError(f"{creds.where}: {clip(str(exc))}; {MISSING_SECRET_FIX}") from None
