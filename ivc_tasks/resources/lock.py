"""A per-server lock, so that two runs (two CI jobs) never rotate or destroy the same server at once.

Nova server metadata has no compare-and-set, but Nova keypair names are unique per user: creating
keypair ``ivc-lock-<env>-<server>`` either succeeds (the lock is ours) or fails with 409 (someone
holds it). The keypair's public key is a throwaway ed25519 key (its private half is never kept)
whose comment records the holder: ``ivc-lock op=rotate run=<run id> host=<host> pid=<pid>
start=<unix time> ttl=<seconds>``. Releasing deletes the keypair.

A lock whose holder died expires:
  * holder on this host (same hostname): expired as soon as its pid is gone (or a zombie);
  * holder on another host: expired ``ttl`` seconds after the keypair was created (Nova's
    ``created_at``, else the holder's ``start``), the holder's own ``ttl`` (``IVC_LOCK_TTL``
    where it ran) when it recorded one: a run set for a short TTL never cuts a longer one short.
An expired lock is taken over (deleted, then created again), logged as a warning.

Limitations (by design of the primitive):
  * keypairs are per USER: runs authenticating as different users do not exclude each other.
    Give every CI job that may rotate the same servers the same OpenStack user.
  * taking over an expired lock is delete-then-create: two runs taking over the SAME dead lock
    at the same instant may both succeed. Each run re-reads the lock before every phase
    (``ServerLock.verify``) and stops (exit 4, nothing rolled back) when it is not the holder
    any more, which narrows, but does not close, that window.
  * a hung (alive) holder on the same host is never expired: kill it, or delete the keypair.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ivc_tasks.cloud import Cloud, CloudCallError
from ivc_tasks.errors import Locked
from ivc_tasks.resources.waits import get_or_none

log = logging.getLogger("ivc")

LOCK_PREFIX = "ivc-lock-"
COMMENT_TAG = "ivc-lock"
_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def lock_name(env: str, name: str) -> str:
    """The keypair name that locks server ``name`` of environment ``env``.

    Characters a keypair name may not hold become ``_``; a short hash then keeps distinct
    names distinct (``a.b`` and ``a_b``).
    """
    raw = f"{env}-{name}"
    safe = _SAFE.sub("_", raw)
    if safe != raw:
        safe += "-" + hashlib.sha256(raw.encode()).hexdigest()[:8]
    return LOCK_PREFIX + safe


@dataclass(frozen=True)
class Holder:
    """Who holds a lock."""

    run: str
    host: str
    pid: int
    start: float
    op: str = "rotate"
    ttl: float | None = None  # the holder's IVC_LOCK_TTL

    def comment(self) -> str:
        return (f"{COMMENT_TAG} op={self.op} run={self.run} host={self.host} pid={self.pid} "
                f"start={int(self.start)}" + (f" ttl={self.ttl:g}" if self.ttl else ""))

    def describe(self, now: float) -> str:
        """Who, and how long ago it started, at unix time ``now`` (the run's wall clock)."""
        age = now - self.start
        return (f"{self.op} run {self.run} on host {self.host}, pid {self.pid}, "
                f"started {age:.0f} s ago")


def parse_holder(public_key: str | None) -> Holder | None:
    """Read the holder from a lock keypair's public key comment; None when it is not one."""
    fields = dict(re.findall(r"(\w+)=(\S+)", str(public_key or "")))
    if COMMENT_TAG not in str(public_key or "") or "run" not in fields:
        return None
    try:
        return Holder(run=fields["run"], host=fields.get("host", "?"),
                      pid=int(fields.get("pid", "0")), start=float(fields.get("start", "0")),
                      op=fields.get("op", "?"),
                      ttl=float(fields["ttl"]) if "ttl" in fields else None)
    except ValueError:
        return None


def lock_text(keypair: Any, now: float) -> str:
    """Who holds a lock, from its keypair (status and the dry run print it): ``locked by
    rotate run R on host H, pid P, started S s ago`` (``locked (keypair K)`` when the
    keypair's comment is not ivc's). ``now``: unix time, the run's ``Cloud.wall_clock()``."""
    holder = parse_holder(getattr(keypair, "public_key", None))
    return f"locked by {holder.describe(now)}" if holder else f"locked (keypair {keypair.name})"


def parse_created_at(value: Any) -> float | None:
    """Nova's ``created_at`` (UTC, with or without a zone) as a unix time; None if unreadable."""
    if not value:
        return None
    try:
        stamp = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def pid_alive(pid: int) -> bool:
    """Return True when process ``pid`` exists on this host and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def expiry_reason(holder: Holder | None, created_at: float | None, *, now: float, ttl: float,
                  host: str, alive: Callable[[int], bool] = pid_alive) -> str | None:
    """Why a held lock has expired, or None while it is valid (pure but for ``alive``).

    :param holder: the holder read from the keypair (None: unreadable, then only the TTL counts).
    :param created_at: when the keypair was created (unix time), if known.
    """
    if holder is not None and holder.host == host:
        if not alive(holder.pid):
            return f"its holder, pid {holder.pid} on this host, is gone"
        return None
    since = created_at if created_at is not None else (holder.start if holder else None)
    ttl = holder.ttl if holder is not None and holder.ttl else ttl
    if since is None:
        return f"it shows no holder nor creation time (older than the {ttl:g} s TTL assumed)"
    if now - since > ttl:
        return f"it is {now - since:.0f} s old, over the {ttl:g} s TTL"
    return None


def throwaway_public_key() -> str:
    """A fresh ed25519 public key in OpenSSH format; the private half is discarded."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode("ascii")


class LockLost(Locked):
    """This run held the lock but another run took it over; this run stopped where it was."""


@dataclass
class ServerLock:
    """The lock of one server; ``acquire`` it, ``verify`` it between phases, ``release`` it."""

    cloud: Cloud
    name: str
    op: str = "rotate"
    ttl: float | None = None  # default: the run's IVC_LOCK_TTL (cloud.settings.lock_ttl)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    now: Callable[[], float] | None = None  # default: the run's wall clock (Cloud.wall_clock)
    held: bool = False

    @property
    def keypair(self) -> str:
        return lock_name(self.cloud.env, self.name)

    @property
    def holder(self) -> Holder:
        return Holder(run=self.cloud.run_id, host=self.host, pid=self.pid, start=self._start,
                      op=self.op, ttl=self.ttl)

    def __post_init__(self) -> None:
        if self.now is None:
            self.now = self.cloud.wall_clock
        self._start = self.now()
        if self.ttl is None:
            self.ttl = self.cloud.settings.lock_ttl

    def _get(self) -> Any | None:
        conn = self.cloud.conn
        return get_or_none(self.cloud, f"get lock {self.keypair}",
                           lambda: conn.compute.get_keypair(self.keypair))

    def _mine(self, keypair: Any | None) -> bool:
        holder = parse_holder(getattr(keypair, "public_key", None)) if keypair else None
        return holder is not None and holder.run == self.cloud.run_id and holder.pid == self.pid

    def _create(self) -> bool:
        """Try to create the lock keypair; False when it exists (409)."""
        conn = self.cloud.conn
        public_key = f"{throwaway_public_key()} {self.holder.comment()}"
        try:
            self.cloud.call(
                f"create lock {self.keypair}",
                lambda: conn.compute.create_keypair(name=self.keypair, public_key=public_key),
                done_already=lambda: (lambda kp: kp if self._mine(kp) else None)(self._get()))
        except CloudCallError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def acquire(self) -> None:
        """Take the lock, taking over an expired one.

        :raises Locked: another run holds it (named in the message).
        :raises CloudCallError: a cloud call failed.
        """
        for _ in range(3):
            if self._create():
                self.held = True
                log.info("locked %s (keypair %s)", self.name, self.keypair)
                return
            current = self._get()
            if current is None:
                continue  # released meanwhile: try again
            holder = parse_holder(current.public_key)
            reason = expiry_reason(holder, parse_created_at(getattr(current, "created_at", None)),
                                   now=self.now(), ttl=self.ttl, host=self.host)
            who = holder.describe(self.now()) if holder else "an unknown holder"
            if reason is None:
                raise Locked(f"server {self.name}: another run holds the lock (keypair "
                             f"{self.keypair}): {who}; wait for it to finish, or, if it is dead "
                             f"and on another host, delete the keypair ({self.keypair}) or wait "
                             f"{(holder.ttl if holder and holder.ttl else self.ttl):g} s after "
                             "it started")
            again = self._get()  # re-read just before deleting: narrow the takeover race
            if again is None or getattr(again, "public_key", None) != current.public_key:
                continue
            log.warning("server %s: taking over the lock %s held by %s: %s", self.name,
                        self.keypair, who, reason)
            self._delete()
        raise Locked(f"server {self.name}: the lock {self.keypair} keeps changing hands; "
                     "another run is starting on it, try again later")

    def _delete(self) -> None:
        conn = self.cloud.conn
        self.cloud.call(f"delete lock {self.keypair}",
                        lambda: conn.compute.delete_keypair(self.keypair, ignore_missing=True))

    def verify(self) -> None:
        """Check that this run still holds the lock (one GET).

        :raises LockLost: another run took it over; stop without touching anything.
        """
        if not self.held:
            return
        current = self._get()
        if not self._mine(current):
            self.held = False
            holder = parse_holder(getattr(current, "public_key", None)) if current else None
            who = holder.describe(self.now()) if holder else "nobody (it was deleted)"
            raise LockLost(f"server {self.name}: this run lost its lock {self.keypair}, now held "
                           f"by {who}; stopped here without rolling back, the holder (or a "
                           "rerun) finishes the rotation")

    def release(self) -> None:
        """Delete the lock if this run still holds it (never someone else's)."""
        if not self.held:
            return
        self.held = False
        try:
            if self._mine(self._get()):
                self._delete()
                log.info("unlocked %s", self.name)
        except CloudCallError as exc:
            log.warning("server %s: could not release the lock %s: %s; it expires when this "
                        "process is gone", self.name, self.keypair, exc)


def acquire_all(cloud: Cloud, names: Iterable[str], *, op: str) -> list[ServerLock]:
    """Lock every server of ``names`` (in order), or none of them.

    :raises Locked: one is held by another run (those already taken are released).
    """
    locks: list[ServerLock] = []
    try:
        for name in names:
            lock = ServerLock(cloud, name, op=op)
            lock.acquire()
            locks.append(lock)
    except BaseException:
        release_all(locks)
        raise
    return locks


def release_all(locks: Iterable[ServerLock]) -> None:
    for lock in locks:
        lock.release()


GROUPS_LOCK = ".secgroups"  # not a server name (a dot first): the environment's shared things


def acquire_waiting(cloud: Cloud, name: str, *, op: str, timeout: float | None = None
                    ) -> ServerLock:
    """Take server ``name``'s lock, waiting (lazily) while another live run holds it: the
    caller then looks again at what that run made. For the commands that create (deploy,
    create-instance, converge), where the second of two runs should wait, not fail.

    :param timeout: seconds to wait (default the run's ``lock_ttl``).
    :raises Locked: still held after ``timeout``.
    """
    from ivc_tasks.polling import next_interval

    lock = ServerLock(cloud, name, op=op)
    start = cloud.clock()
    limit = cloud.settings.lock_ttl if timeout is None else timeout
    said = False
    while True:
        try:
            lock.acquire()
            return lock
        except Locked as exc:
            waited = cloud.clock() - start
            if waited >= limit:
                raise
            if not said:
                log.info("%s; waiting for it (up to %g s)", str(exc).split(";")[0], limit)
                said = True
            cloud.sleep(max(0.2, next_interval(waited, poll_interval=cloud.poll_interval,
                                               eager=False)))


@contextlib.contextmanager
def held(cloud: Cloud, name: str, *, op: str, timeout: float | None = None
         ) -> Iterator[ServerLock]:
    """``acquire_waiting`` for the block, released at its end."""
    lock = acquire_waiting(cloud, name, op=op, timeout=timeout)
    try:
        yield lock
    finally:
        lock.release()
