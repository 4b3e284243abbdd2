"""The connection to the cloud: one per process, every HTTP request counted, every call retried.

``connect(settings)`` opens an openstacksdk connection for ``settings.os_cloud`` with the env
file's ``OS_*`` variables applied (only while the configuration is read), never prompting for
anything, and hooks a counter on the underlying requests session before the first request, so
that authentication and version discovery are counted too.

``Cloud.call`` is the one way ops talk to the cloud: it runs a call under
``retry.cloud_retrying`` (with the run's attempt and time limits) and turns what still fails
into a ``CloudCallError`` (exit code 1) that carries the cloud's message and request id. A
create passes ``lookup``: before re-sending it, the lookup looks for what a lost first attempt
may have made.

openstacksdk is imported inside functions only, so that ``invoke --list`` stays fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ivc_tasks.errors import CloudError, ConfigError, clip, clip_repr
from ivc_tasks.retry import cloud_retrying, describe_cloud_error, status_code
from ivc_tasks.settings import DEFAULTS

if TYPE_CHECKING:
    from ivc_tasks.settings import Settings

log = logging.getLogger("ivc")
T = TypeVar("T")
EAGER_FIRST_POLL = 0.05  # seconds: the first poll of an eager wait
EAGER_GROWTH = 0.1  # then each wait is this share of the time waited so far

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


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
    PATCH and DELETE requests other than those, i.e. the ones that change something.
    """

    by_method: Counter = field(default_factory=Counter)
    auth: int = 0
    mutating: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def hook(self, response: Any, *args: Any, **kwargs: Any) -> None:
        """A requests response hook."""
        method = str(response.request.method).upper()
        is_auth = str(response.request.url).rstrip("/").endswith("/auth/tokens")
        with self._lock:
            self.by_method[method] += 1
            self.auth += is_auth
            self.mutating += method in MUTATING_METHODS and not is_auth

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
    """One run's connection, its limits, and what it has already listed.

    :param conn: the openstacksdk Connection (or a stand-in with the same proxies in tests).
    :param env: the environment's name (``ivc_env`` metadata).
    :param run_id: this run's id (``ivc_run`` metadata), to recognise what this run created.
    The timings (``poll_interval``, ``*_timeout``, ``lock_ttl``, ``retry_*``) are the run's
    Settings, with the same defaults (``settings.DEFAULTS``, defined once).
    :param floating_network: the external network to take floating IPs from, by name or id
        (``IVC_FLOATING_NETWORK``; default: the only external network).
    :param retry_overrides: extra tenacity arguments, e.g. ``wait=tenacity.wait_none()`` in tests.
    :param cache: lists already fetched in this run (see ``ivc_tasks.ops.resolve``).
    """

    conn: Any
    env: str
    counter: RequestCounter = field(default_factory=RequestCounter)
    run_id: str = field(default_factory=lambda: new_run_id())
    poll_interval: float = DEFAULTS["poll_interval"]
    boot_timeout: float = DEFAULTS["boot_timeout"]
    volume_timeout: float = DEFAULTS["volume_timeout"]
    stop_timeout: float = DEFAULTS["stop_timeout"]
    delete_timeout: float = DEFAULTS["delete_timeout"]
    lock_ttl: float = DEFAULTS["lock_ttl"]
    retry_attempts: int = int(DEFAULTS["retry_attempts"])
    retry_max_seconds: float = DEFAULTS["retry_max_seconds"]
    floating_network: str | None = None
    retry_overrides: Mapping[str, Any] = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    cache: dict[str, Any] = field(default_factory=dict)

    def call(
        self,
        operation: str,
        fn: Callable[[], T],
        *,
        conflict_is_transient: bool = False,
        lookup: Callable[[], T | None] | None = None,
        redact: str | None = None,
    ) -> T:
        """Run ``fn()`` under the retry policy.

        :param operation: what is being done, for logs and error messages ("create server web1").
        :param fn: the call; a listing must return a list (not a generator), so that paging
            happens inside the retry.
        :param conflict_is_transient: retry HTTP 409 too (volume attach/detach only).
        :param lookup: for a create: called before each re-send; when it returns something (what
            the lost attempt made), that is returned instead of sending the create again.
        :param redact: a secret sent in the call (base64 user_data): cut out of the error
            message, which may quote it (Nova's validation errors quote the values).
        :raises CloudCallError: the call failed for good.
        """
        retrying = cloud_retrying(operation=operation, conflict_is_transient=conflict_is_transient,
                                  attempts=self.retry_attempts, max_seconds=self.retry_max_seconds,
                                  **self.retry_overrides)
        try:
            for attempt in retrying:
                with attempt:
                    if lookup is not None and attempt.retry_state.attempt_number > 1:
                        found = lookup()
                        if found is not None:
                            log.info("%s: found what the previous attempt made", operation)
                            return found
                    return fn()
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
        eager: bool = False,
    ) -> T:
        """Fetch something every ``poll_interval`` until it is done, has failed, or time is up.

        Logs a progress line on stderr whenever the state changes (and every 5 s).

        ``eager``: poll soon after the request, then less and less often: each wait is 10% of
        the time waited so far (at least 50 ms, at most ``poll_interval``), so a 0.4 s attach
        is seen within ~50 ms and a long boot is polled every ``poll_interval`` as before; what
        polling adds to an operation stays under ~10% of it, for more GETs (rotate uses it,
        where the outage counts; the steps keep the fixed interval and fewer requests).

        :param what: the subject of the progress lines ("server web1").
        :param fetch: one GET (already retried by the caller through ``call``).
        :param state: a short text for progress lines, e.g. ``"BUILD (spawning)"``.
        :param failed: returns why it failed (e.g. the server's fault), or None.
        :raises CloudError: it failed, or was not done within ``timeout`` seconds.
        """
        start = self.clock()
        last_state, last_log = None, start
        cap = max(self.poll_interval, 0.0)
        while True:
            if eager and cap:
                waited = self.clock() - start
                self.sleep(min(cap, max(EAGER_FIRST_POLL, EAGER_GROWTH * waited)))
            else:
                self.sleep(self.poll_interval)
            item = fetch()
            now = self.clock()
            current = state(item)
            if current != last_state or now - last_log >= 5:
                log.info("  %s: %s (%.1f s)", what, current, now - start)
                last_state, last_log = current, now
            if done(item):
                return item
            reason = failed(item)
            if reason is not None:
                raise CloudError(f"{what}: {reason}")
            if now - start >= timeout:
                raise CloudError(f"{what}: still {current} after {timeout:g} s; raise the timeout "
                                 "(settings) or look at the cloud's side")


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


@contextlib.contextmanager
def _environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Set ``variables`` in os.environ for the duration of the block, then restore it."""
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
    import openstack  # noqa: PLC0415 (keep `invoke --list` light)

    origin = "the environment" if "OS_PASSWORD" in os.environ else str(settings.env_file)
    with _environment(settings.os_vars):
        creds = resolve_credentials(settings, prompt=prompt, password_origin=origin)
        try:
            conn = openstack.connection.Connection(config=creds.region)
        except Exception as exc:  # noqa: BLE001 (anything the SDK raises on a bad entry)
            raise ConfigError(f"{creds.where}: {clip(str(exc))}; fix the cloud entry") from None
    log.info("cloud: %s; credentials: %s", creds.where, creds.source)
    conn.session.session.hooks.setdefault("response", []).append(counter.hook)
    conn.ivc_credentials = creds
    return conn


def connect(settings: Settings, **overrides: Any) -> Cloud:
    """Return the run's Cloud: one connection, counted, with the settings' limits, authenticated.

    Authentication (identity version discovery and the token request) runs under the same
    retry policy as every other call; a refusal (401/403) fails at once.

    :param overrides: Cloud fields to override (tests pass ``retry_overrides``);
        ``authenticate=False`` skips the token request (it then happens at the first call).
    :raises ConfigError: see ``open_connection``; the credentials were refused.
    :raises CloudCallError: the identity service could not be reached, after retries.
    """
    do_auth = overrides.pop("authenticate", True)
    counter = RequestCounter()
    conn = open_connection(settings, counter)
    fields = dict(
        conn=conn, env=settings.env, counter=counter, poll_interval=settings.poll_interval,
        boot_timeout=settings.boot_timeout, volume_timeout=settings.volume_timeout,
        stop_timeout=settings.stop_timeout, delete_timeout=settings.delete_timeout,
        lock_ttl=settings.lock_ttl,
        retry_attempts=settings.retry_attempts, retry_max_seconds=settings.retry_max_seconds,
        floating_network=settings.floating_network,
    )
    cloud = Cloud(**(fields | overrides))
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
    except Exception as exc:  # noqa: BLE001 keystoneauth's bare Exception("... is a required attribute")
        if type(exc) is not Exception:
            raise
        raise ConfigError(f"{creds.where}: {clip(str(exc))}; {MISSING_SECRET_FIX}") from None


# -- credentials: which cloud entry, from which file, with which secret -------------------------
MISSING_SECRET_FIX = ("set OS_PASSWORD (environment or env file), add auth.password to the entry "
                      "(or to secure.yaml), or use an application credential "
                      "(auth_type: v3applicationcredential)")
ENV_CLOUD = "envvars"  # openstacksdk's name for the cloud made of OS_* variables


@dataclass
class Credentials:
    """What ``resolve_credentials`` found: the cloud region to connect with, the entry's name,
    the file it came from (None for ``OS_*`` variables), and where the secret came from (for
    the log; never the secret itself)."""

    region: Any
    name: str
    file: str | None
    source: str

    @property
    def where(self) -> str:
        if self.file is None:
            return f"cloud {self.name!r} (the OS_* variables)"
        return f"cloud entry {self.name!r} in {self.file}"


def interactive() -> bool:
    """Return True when ivc may prompt: stdin is a terminal and ``CI`` is not set."""
    import sys  # noqa: PLC0415

    try:
        tty = sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        tty = False
    return tty and not os.environ.get("CI")


def _getpass(text: str) -> str:
    import getpass  # noqa: PLC0415

    return getpass.getpass(text)


def clouds_files() -> list[str]:
    """The clouds.yaml files openstacksdk reads, in its order (``OS_CLIENT_CONFIG_FILE`` first)."""
    from openstack.config import loader  # noqa: PLC0415

    files = list(loader.CONFIG_FILES)
    override = os.environ.get("OS_CLIENT_CONFIG_FILE")
    return [override, *files] if override else files


def check_clouds_file(settings: Settings) -> str | None:
    """Return the clouds file openstacksdk will use (None if there is none), after checking it.

    openstacksdk skips a malformed file with a warning (then says the cloud "was not found");
    this names the file, the YAML problem and its line instead.

    :raises ConfigError: ``OS_CLIENT_CONFIG_FILE`` names a file that does not exist, or the
        file is not readable, not UTF-8, not YAML, or not a mapping.
    """
    import yaml  # noqa: PLC0415

    override = os.environ.get("OS_CLIENT_CONFIG_FILE")
    if override:
        try:
            exists, is_file = os.path.exists(override), os.path.isfile(override)
        except (OSError, ValueError):
            exists = is_file = False
        if not exists or not is_file:
            problem = "does not exist" if not exists else "is not a file"
            raise ConfigError(f"{settings.env_file}: OS_CLIENT_CONFIG_FILE: the clouds file "
                              f"{clip(override)} {problem}; create it or fix the path") from None
    for path in clouds_files():
        try:
            if not os.path.isfile(path):
                continue
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except PermissionError:
            continue  # openstacksdk skips it too
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                              "save the clouds file as UTF-8") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{path}: not valid YAML: {problem}{line}; fix the clouds "
                              "file (openstacksdk would skip it)") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the clouds file: {exc.strerror}") from None
        if data is not None and not (isinstance(data, dict) and
                                     isinstance(data.get("clouds", {}), dict)):
            raise ConfigError(f"{path}: not a clouds file (expected a mapping with a 'clouds' "
                              "key of cloud entries); fix the file")
        return path
    return None


def resolve_credentials(settings: Settings, *, prompt: Callable[[str], str] | None = None,
                        password_origin: str = "the environment") -> Credentials:
    """Find the cloud entry and its credentials, without any request (run inside the env vars).

    Precedence for a password: the entry's ``auth.password`` (clouds.yaml, or secure.yaml beside
    it), then ``OS_PASSWORD``, then (at an interactive terminal only) one prompt. With no
    ``OS_CLOUD`` and ``OS_AUTH_URL`` etc. set, the ``OS_*`` variables are the cloud.

    :raises ConfigError: naming the entry, the file and the fix.
    """
    import openstack  # noqa: PLC0415
    from keystoneauth1 import exceptions as ksa  # noqa: PLC0415
    from keystoneauth1 import loading  # noqa: PLC0415

    path = check_clouds_file(settings)
    try:
        config = openstack.config.OpenStackConfig(app_name="ivc")
    except openstack.exceptions.ConfigException as exc:
        raise ConfigError(f"{path or 'clouds.yaml'}: {clip(str(exc))}") from None
    name = settings.os_cloud or config.default_cloud
    entries = sorted(k for k in config.cloud_config.get("clouds", {}) if k != ENV_CLOUD)
    if settings.os_cloud and settings.os_cloud not in config.cloud_config.get("clouds", {}):
        where = f"{settings.env_file}: OS_CLOUD={clip_repr(settings.os_cloud)}"
        if path is None:
            raise ConfigError(f"{where}: no clouds file found (looked for {', '.join(clouds_files())}); "
                              "create one with that entry, or set OS_CLIENT_CONFIG_FILE")
        have = f" (it has: {', '.join(entries)})" if entries else " (it has none)"
        raise ConfigError(f"{where}: no such cloud entry in {path}{have}; fix OS_CLOUD or the "
                          "clouds.yaml entry")
    if not name or name == "defaults":
        raise ConfigError(f"{settings.env_file}: no cloud configured: set OS_CLOUD to an entry of "
                          "clouds.yaml, or the OS_AUTH_URL, OS_USERNAME... variables")
    file = None if name == ENV_CLOUD else path
    creds = Credentials(region=None, name=name, file=file, source="")
    try:
        raw = config.get_one(cloud=name, validate=False).config
        auth_type = raw.get("auth_type") or "password"
        options = loading.get_plugin_loader(auth_type).get_options()
    except ksa.NoMatchingPlugin:
        raise ConfigError(f"{creds.where}: unknown auth_type {clip(str(raw.get('auth_type')))}; "
                          "use password or v3applicationcredential") from None
    except (openstack.exceptions.ConfigException, ksa.ClientException) as exc:
        raise ConfigError(f"{creds.where}: {clip(str(exc))}; fix the cloud entry") from None
    auth = raw.get("auth") or {}
    extra: dict[str, Any] = {}
    secrets = [o.dest for o in options if o.secret and (o.prompt or o.required)]
    source = f"{auth_type}, no secret needed"
    for dest in secrets:
        if auth.get(dest) or raw.get(dest):
            source = f"{auth_type}, {dest} from " + (
                "the OS_* variables" if file is None else "the entry (clouds.yaml/secure.yaml)")
            continue
        if dest == "password" and os.environ.get("OS_PASSWORD"):
            extra[dest] = os.environ["OS_PASSWORD"]
            source = f"{auth_type}, password from OS_PASSWORD ({password_origin})"
            continue
        what = f"no {dest.replace('_', ' ')} (auth_type {auth_type})"
        asked = next((o.prompt for o in options if o.dest == dest and o.prompt), None)
        if asked is None:
            raise ConfigError(f"{creds.where}: {what}; add auth.{dest} to the entry (or to "
                              "secure.yaml beside it)")
        ask = prompt if prompt is not None else (_getpass if interactive() else None)
        if ask is None:
            raise ConfigError(f"{creds.where}: {what}, and ivc asks only at a terminal (stdin "
                              f"is not one, or CI is set); {MISSING_SECRET_FIX}")
        value = ask(f"{asked.rstrip(': ')} for cloud {name} ({file or 'OS_* variables'}): ")
        if not value:
            raise ConfigError(f"{creds.where}: nothing given at the prompt; {MISSING_SECRET_FIX}")
        extra[dest] = value
        source = f"{auth_type}, {dest} typed at the prompt"
    try:
        creds.region = config.get_one(cloud=name, auth=extra) if extra else config.get_one(cloud=name)
    except ksa.MissingRequiredOptions as exc:
        missing = ", ".join(o.dest for o in exc.options)
        raise ConfigError(f"{creds.where}: missing {missing} (auth_type {auth_type}); add them to "
                          "the entry's auth (or the matching OS_* variables)") from None
    except (openstack.exceptions.ConfigException, ksa.ClientException) as exc:
        raise ConfigError(f"{creds.where}: {clip(str(exc))}; fix the cloud entry") from None
    creds.source = source
    return creds


_REAL_ENVIRON: dict[str, str] = dict(os.environ)


def _real_environ() -> Mapping[str, str]:
    """The process environment as it was before ``_environment`` applied the env file."""
    return _REAL_ENVIRON
