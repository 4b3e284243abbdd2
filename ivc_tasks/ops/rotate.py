"""rotate-instance: replace a declared server by a new one, safely, resuming after any crash.

Phases (each logs ``phase: <name> (server <S>)`` on stderr when it starts):

  preflight         declarations valid, every referenced resource found, user_data rendered
                    (the spec loader checks its size), every declared volume available or
                    attached only to this server's servers; ensure the server's security groups.
  create            create the new server (same declaration, next ``ivc_gen``, its own port,
                    the rotation's markers in its metadata; the old server is untouched) and
                    wait for ACTIVE.
  stop              stop the old server gracefully and wait for SHUTOFF (``stop=False`` skips).
  move-volumes      for each declared volume: detach from the old server, wait available, attach
                    to the new one, wait in-use (the volumes move side by side).
  move-floating-ip  ONE update of each floating IP's port_id, to the new server's port.
  delete-old        delete the old server and wait until it is gone.
  finish            clear the rotation markers from the new server.

An old server in ERROR cannot have volumes detached (Nova refuses, 409), so for it the order is
create, delete-old, move-volumes (attach only), move-floating-ip, finish; no stop.

Failures before the old server is deleted roll back (phase ``rollback``): the volumes and
floating IPs go back to the old server, it is started again if the rotation stopped it, the
new server is deleted. Rollback works from what the cloud says NOW: something already where it
belongs counts as done, something missing is not an error. Then ``RolledBack`` (exit 3) names
the phase that failed and why. A failure once the old server is gone cannot be rolled back:
it is a CloudError (exit 1) and a rerun finishes the rotation.

Crash safety: the rotation's state lives in the new server's metadata, not in a local file,
and is written by the create request itself (no window where a server exists unmarked): the
rotation id ``ivc_rotation``, ``ivc_role=new``, ``ivc_replaces=<old id>``, ``ivc_was=<the old
server's status>``, one ``ivc_fip:<floating ip id>=<port id> <network id>`` per floating IP on
the old server's ports, and ``ivc_vol:<ref>=<volume id>`` for every declared volume. The old
server is never marked (Nova refuses to change the metadata of a server in ERROR). A rerun
reads one server listing and ``decide`` picks: no rotation under way -> rotate; new server
ACTIVE (or booting, then ACTIVE) -> roll forward; new server in ERROR, not ACTIVE in time, or
marked ``ivc_rollback=1`` (a rollback had started) -> roll back, then rotate afresh; old server
gone -> finish (volumes and floating IP onto the new server, clear the markers).

Exactly one run works on a server at a time: see ``ivc_tasks.ops.lock``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ivc_tasks.cloud import Cloud, CloudCallError
from ivc_tasks.errors import CloudError, ConfigError, IvcError, Locked, RolledBack
from ivc_tasks.ops.instances import (
    WAITING_STATES, InstancePlan, apply_instance, attached_ids, create_request,
    declared_server, ensure_floating_ip, fault_message, generation, is_managed, managed_servers,
    plan_instance, planned_result, redacted_request, server_metadata, volume_holders, volume_key,
)
from ivc_tasks.ops.lock import DEFAULT_TTL, LockLost, ServerLock, acquire_all, lock_name, \
    parse_holder, release_all
from ivc_tasks.ops.resolve import (
    find_images, forget, list_flavors, list_floating_ips, list_keypairs, list_networks,
    list_security_groups, list_servers, list_volumes, pick, prefetch,
)
from ivc_tasks.ops.result import Action, StepResult
from ivc_tasks.ops.secgroups import plan_secgroups, secgroups_result
from ivc_tasks.ops.volumes import attach_done_or_under_way, detach_done_or_under_way
from ivc_tasks.spec import Server, Spec

log = logging.getLogger("ivc")
T = TypeVar("T")
STEP = "rotate-instance"

# -- the markers ---------------------------------------------------------------------------
META_ROTATION = "ivc_rotation"
META_ROLE = "ivc_role"
META_REPLACES = "ivc_replaces"
META_WAS = "ivc_was"
META_ROLLBACK = "ivc_rollback"
# new-server states in which Nova refuses a metadata change (409): rollback deletes it unmarked
UNMARKABLE = ("ERROR", "BUILD")
FIP_KEY_PREFIX = "ivc_fip:"
MARKER_KEYS = (META_ROTATION, META_ROLE, META_REPLACES, META_WAS, META_ROLLBACK)

PHASES = ("preflight", "create", "stop", "move-volumes", "move-floating-ip", "delete-old",
          "finish")
ROLLBACK_PHASE = "rollback"
VOLUME_BUSY = ("attaching", "detaching", "reserved", "creating", "downloading", "maintenance")
NOVA_LAG_RETRIES = 5  # attach refused while Nova still lists the volume on the server it left
VOLUME_FAILED = ("error", "error_attaching", "error_detaching", "error_deleting")


def is_marker(key: str) -> bool:
    """Return True for the metadata keys that record a rotation under way."""
    return key in MARKER_KEYS or key.startswith(FIP_KEY_PREFIX)


def fip_markers(metadata: Mapping[str, str] | None) -> dict[str, tuple[str, str]]:
    """``{floating ip id: (port id, network id)}`` from a server's ``ivc_fip:`` keys."""
    out = {}
    for key, value in (metadata or {}).items():
        if key.startswith(FIP_KEY_PREFIX):
            port, _, network = str(value).partition(" ")
            out[key[len(FIP_KEY_PREFIX):]] = (port, network)
    return out


# -- the decision (pure) -------------------------------------------------------------------
CREATE = "create"      # no server: make it
ROTATE = "rotate"      # one server, no rotation under way: rotate it
FORWARD = "forward"    # a rotation under way whose new server is ACTIVE (or booting): finish it
ROLLBACK = "rollback"  # a rotation under way that cannot finish: roll it back
FINISH = "finish"      # the old server is gone already: the new one gets everything
CONFLICT = "conflict"  # servers ivc cannot account for: touch nothing


@dataclass(frozen=True)
class Seen:
    """What one listing says about a server of the rotation (the decision's input)."""

    id: str
    status: str
    task_state: str | None = None
    rotation: str | None = None
    role: str | None = None
    replaces: str | None = None
    rollback: bool = False
    gen: int = 0

    @classmethod
    def of(cls, server: Any) -> Seen:
        meta = getattr(server, "metadata", None) or {}
        return cls(id=server.id, status=str(server.status or "").upper(),
                   task_state=getattr(server, "task_state", None),
                   rotation=meta.get(META_ROTATION) or None, role=meta.get(META_ROLE) or None,
                   replaces=meta.get(META_REPLACES) or None,
                   rollback=meta.get(META_ROLLBACK) == "1", gen=generation(server))


@dataclass(frozen=True)
class Decision:
    kind: str
    old: Seen | None = None
    new: Seen | None = None
    reason: str = ""
    wait_for_new: bool = False  # FORWARD: the new server is still booting


def decide(servers: Sequence[Seen]) -> Decision:
    """Decide what a run does with the servers of one declared name (table-tested).

    :param servers: every managed server of that name in the environment.
    """
    if not servers:
        return Decision(CREATE, reason="no server yet")
    rotations = {s.rotation for s in servers if s.rotation}
    plain = [s for s in servers if not s.rotation]
    if not rotations:
        if len(plain) > 1:
            return Decision(CONFLICT, reason=f"{len(plain)} servers and no rotation under way")
        return Decision(ROTATE, old=plain[0], reason="one server, no rotation under way")
    if len(rotations) > 1:
        return Decision(CONFLICT, reason=f"{len(rotations)} rotations under way at once")
    news = [s for s in servers if s.rotation and (s.role == "new" or s.replaces)]
    if len(news) > 1:
        return Decision(CONFLICT, reason="several new servers in one rotation")
    new = news[0] if news else None
    rest = [s for s in servers if s is not new]
    if new is not None and new.replaces:
        # the old server is the one the new replaces, marked or not (Nova refuses to change
        # the metadata of a server in ERROR, so such an old server carries no marker)
        olds = [s for s in rest if s.id == new.replaces]
    else:
        olds = [s for s in rest if s.rotation]
    extras = [s for s in rest if s not in olds]
    if extras:
        return Decision(CONFLICT, reason="servers outside the rotation under way")
    if len(olds) > 1:
        return Decision(CONFLICT, reason="several old servers in one rotation")
    old = olds[0] if olds else None
    if new is None:
        return Decision(ROLLBACK, old=old, reason="the new server was never made (or is "
                        "deleted already)")
    if old is None:
        return Decision(FINISH, new=new, reason="the old server is gone already",
                        wait_for_new=new.status in WAITING_STATES)
    if new.rollback:
        return Decision(ROLLBACK, old=old, new=new, reason="a rollback had started")
    if new.status == "ACTIVE":
        return Decision(FORWARD, old=old, new=new, reason="the new server is ACTIVE")
    if new.status in WAITING_STATES:
        return Decision(FORWARD, old=old, new=new, wait_for_new=True,
                        reason=f"the new server is {new.status}")
    return Decision(ROLLBACK, old=old, new=new, reason=f"the new server is {new.status}")


# -- the report ----------------------------------------------------------------------------
@dataclass
class PhaseRecord:
    name: str
    seconds: float = 0.0
    ok: bool = True
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {"phase": self.name, "seconds": round(self.seconds, 3), "ok": self.ok}
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class RotationReport:
    """What happened (or would happen) to one server."""

    name: str
    decision: str = ""
    reason: str = ""
    dry_run: bool = False
    outcome: str = ""
    old_id: str | None = None
    new_id: str | None = None
    generation: int | None = None
    phases: list[PhaseRecord] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    outage_seconds: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "decision": self.decision, "reason": self.reason,
                "outcome": self.outcome, "old_id": self.old_id, "new_id": self.new_id,
                "generation": self.generation, "outage_seconds": _round(self.outage_seconds),
                "phases": [p.to_dict() for p in self.phases],
                "actions": [a.to_dict() for a in self.actions], "warnings": self.warnings,
                "error": self.error}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass
class RotateResult:
    """The outcome of ``rotate`` for every server asked for."""

    dry_run: bool = False
    preflight: StepResult | None = None
    rotations: list[RotationReport] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        if self.dry_run:
            return False
        return bool(self.preflight and self.preflight.changed) or \
            any(r.actions for r in self.rotations)

    def to_dict(self) -> dict[str, Any]:
        pre = self.preflight.actions if self.preflight else []
        return {
            "step": STEP,
            "changed": self.changed,
            "dry_run": self.dry_run,
            "actions": [{"server": None, **a.to_dict()} for a in pre] +
                       [{"server": r.name, **a.to_dict()} for r in self.rotations
                        for a in r.actions],
            "phases": [{"server": r.name, **p.to_dict()} for r in self.rotations
                       for p in r.phases],
            "rotations": [r.to_dict() for r in self.rotations],
            "warnings": (self.preflight.warnings if self.preflight else []) +
                        [w for r in self.rotations for w in r.warnings],
        }

    def lines(self) -> list[str]:
        out = []
        if self.preflight is not None and self.preflight.actions:
            out += self.preflight.lines()
        for r in self.rotations:
            if self.dry_run:
                out.append(f"rotate {r.name}: would {r.decision} ({r.reason})")
                out += [f"  {p.name}: {p.note}" for p in r.phases]
                continue
            head = f"rotate {r.name}: {r.outcome or r.decision}"
            if r.new_id:
                head += f", server {r.new_id} (gen {r.generation})"
            if r.old_id and r.old_id != r.new_id:
                head += f" replaced {r.old_id}"
            if r.outage_seconds is not None:
                head += f"; outage {r.outage_seconds:.1f} s"
            out.append(head)
            out += [f"  {p.name}: {p.seconds:.1f} s" + (f" ({p.note})" if p.note else "")
                    + ("" if p.ok else " FAILED") for p in r.phases]
        return out


class RotateFailed(IvcError):
    """Several rotations ran and some failed; ``result`` reports all of them.

    Its exit code is the failures' common code (3 when all rolled back), else 1.
    """

    def __init__(self, failures: Sequence[tuple[str, IvcError]], result: RotateResult):
        codes = {exc.exit_code for _, exc in failures}
        self.exit_code = codes.pop() if len(codes) == 1 else CloudError.exit_code
        self.result = result
        super().__init__("; ".join(f"{name}: {exc}" for name, exc in failures))


# -- options and the plan ------------------------------------------------------------------
@dataclass(frozen=True)
class RotateOptions:
    stop: bool = True
    boot_timeout: float | None = None  # default cloud.boot_timeout
    stop_timeout: float = 120.0
    delete_timeout: float = 120.0
    lock_ttl: float = DEFAULT_TTL
    parallel: int = 1


@dataclass
class Prepared:
    """The preflight of one server: its declaration, the decision, and what it needs."""

    declared: Server
    decision: Decision
    servers: dict[str, Any]  # id -> listed server
    plan: InstancePlan | None = None  # the new server's plan (resolved references)
    volumes: dict[str, str] = field(default_factory=dict)  # declared ref -> volume id
    listed_volumes: dict[str, Any] = field(default_factory=dict)  # ref -> volume as listed
    warnings: list[str] = field(default_factory=list)
    group_ids: dict[str, str] = field(default_factory=dict)  # security group name -> id

    @property
    def name(self) -> str:
        return self.declared.name


def _plan_new_server(cloud: Cloud, spec: Spec, name: str, pending_groups: Iterable[str]
                     ) -> InstancePlan:
    """Resolve everything a NEW server for ``name`` needs, even though one exists.

    ``plan_instance`` resolves only when it finds no server, so it is given a view of the cloud
    whose server listing leaves this name's servers out (the other listings are shared).
    """
    view = dataclasses.replace(cloud, cache=dict(cloud.cache))
    view.cache["servers"] = [s for s in list_servers(cloud) if not is_managed(s, cloud.env, name)]
    plan = plan_instance(view, spec, name, pending_groups=set(pending_groups),
                         boot_volumes=False)
    cloud.cache.update({k: v for k, v in view.cache.items() if k != "servers"})
    return plan


def preflight(cloud: Cloud, spec: Spec, name: str, *, pending_groups: Iterable[str] = ()
              ) -> Prepared:
    """Check everything one rotation needs before anything changes (listings only).

    :raises ConfigError: undeclared name, a reference that does not resolve, a volume attached
        to a server that is not this one's, servers ivc cannot account for.
    :raises CloudCallError: a listing failed.
    """
    declared = declared_server(spec, name)
    found = managed_servers(cloud, name)
    decision = decide([Seen.of(s) for s in found])
    servers = {s.id: s for s in found}
    if decision.kind == CONFLICT:
        listed = ", ".join(f"{s.id} ({s.status}, gen {generation(s)}"
                           + (f", rotation {s.metadata.get(META_ROTATION)}"
                              if (s.metadata or {}).get(META_ROTATION) else "") + ")"
                           for s in found)
        raise ConfigError(f"server {name}: {decision.reason}: {listed}; ivc will not guess which "
                          f"one serves: delete the extra ones (openstack server delete <id>) "
                          f"and run again")
    prepared = Prepared(declared=declared, decision=decision, servers=servers)
    if decision.kind == CREATE:
        prepared.plan = plan_instance(cloud, spec, name, pending_groups=set(pending_groups))
        prepared.volumes = {ref: v.id for ref, v in prepared.plan.boot_volumes.items()}
        return prepared
    prepared.plan = _plan_new_server(cloud, spec, name, pending_groups)
    old = decision.old
    if old is not None and old.status in WAITING_STATES and decision.kind == ROTATE:
        raise CloudError(f"server {name} ({old.id}) is {old.status}; run rotate again once it "
                         "has settled")
    ours = set(servers)
    listed = list_volumes(cloud)
    for i, ref in enumerate(declared.volumes):
        entry = f"servers.{name}.volumes[{i}]"
        volume = pick(listed, ref, kind="volume", spec_path=spec.path, entry=entry,
                      fix="ivc never creates volumes: create it, or fix the name")
        holders = set(volume_holders(volume))
        foreign = holders - ours
        if foreign:
            raise ConfigError(f"{spec.path}: {entry}: volume {ref!r} ({volume.id}) is attached "
                              f"to server {_label(cloud, next(iter(foreign)))}, not to {name}; "
                              "detach it there first (ivc never moves a volume implicitly)")
        settled = ("available", "in-use") if decision.kind == ROTATE else \
            ("available", "in-use", *VOLUME_BUSY)
        if volume.status not in settled:
            raise ConfigError(f"{spec.path}: {entry}: volume {ref!r} ({volume.id}) is "
                              f"{volume.status!r}; fix it in the cloud first")
        prepared.volumes[ref] = volume.id
        prepared.listed_volumes[ref] = volume
    if old is not None and decision.kind == ROTATE:
        server = servers[old.id]
        undeclared = attached_ids(server) - set(prepared.volumes.values())
        if undeclared:
            prepared.warnings.append(
                f"server {name}: volumes {', '.join(sorted(undeclared))} are attached but not "
                "declared: rotate does not move them; deleting the old server detaches them "
                "(they stay, available)")
    return prepared


def _label(cloud: Cloud, server_id: str) -> str:
    for server in list_servers(cloud):
        if server.id == server_id:
            return f"{server.name!r} ({server_id})"
    return server_id


# -- waiting -------------------------------------------------------------------------------
def wait_until(cloud: Cloud, what: str, fetch: Callable[[], T], state: Callable[[T], str], *,
               done: Callable[[T], bool], failed: Callable[[T], str | None], timeout: float
               ) -> T:
    """``Cloud.poll``, eager: polled soon after the request, then less and less often.

    :raises CloudError: it failed, or was not done within ``timeout`` seconds.
    """
    return cloud.poll(what, fetch, state, done=done, failed=failed, timeout=timeout, eager=True)


def get_server(cloud: Cloud, server_id: str) -> Any | None:
    """The server, fresh; None when it is gone."""
    conn = cloud.conn
    try:
        server = cloud.call(f"get server {server_id}", lambda: conn.compute.get_server(server_id))
    except CloudCallError as exc:
        if exc.status == 404:
            return None
        raise
    return None if str(server.status).upper() in ("DELETED", "SOFT_DELETED") else server


def power_done_or_under_way(cloud: Cloud, server_id: str, status: str) -> bool | None:
    """A stop/start lookup: after a lost response, is the server there or on its way (sending
    it again would get Nova's 409)? True, or None to send it again."""
    server = get_server(cloud, server_id)
    task = "powering-off" if status == "SHUTOFF" else "powering-on"
    if server is None or server.status == status or server.task_state == task:
        return True
    return None


def get_volume(cloud: Cloud, volume_id: str) -> Any | None:
    conn = cloud.conn
    try:
        return cloud.call(f"get volume {volume_id}",
                          lambda: conn.block_storage.get_volume(volume_id))
    except CloudCallError as exc:
        if exc.status == 404:
            return None
        raise


def _server_state(server: Any | None) -> str:
    if server is None:
        return "gone"
    return server.status + (f" ({server.task_state})" if server.task_state else "")


def wait_server_status(cloud: Cloud, server_id: str, what: str, status: str, timeout: float
                       ) -> Any:
    """Wait until the server is ``status`` with no task under way.

    :raises CloudError: it went to ERROR, is gone, or timed out.
    """
    def failed(server: Any | None) -> str | None:
        if server is None:
            return f"is gone ({server_id})"
        if server.status == "ERROR" and status != "ERROR":
            return f"went to ERROR: {fault_message(server)} (server {server_id})"
        return None

    return wait_until(cloud, what, lambda: get_server(cloud, server_id), _server_state,
                      done=lambda s: s is not None and s.status == status and not s.task_state,
                      failed=failed, timeout=timeout)


def server_ref(server_id: str) -> Any:
    """A Server resource that holds only an id: the SDK then makes no lookup of its own
    (``delete_volume_attachment`` given a bare id GETs the server to check the argument order).
    """
    from openstack.compute.v2.server import Server  # noqa: PLC0415

    return Server.new(id=server_id)


def delete_server_and_wait(cloud: Cloud, server_id: str, what: str, timeout: float) -> bool:
    """Delete a server (gone already counts) and wait until it is gone.

    :returns: True when the server was there to delete, False when it was gone already.
    """
    conn = cloud.conn
    try:
        cloud.call(f"delete {what}",
                   lambda: conn.compute.delete_server(server_id, ignore_missing=False))
    except CloudCallError as exc:
        if exc.status != 404:
            raise
        forget(cloud, "servers")
        return False
    wait_until(cloud, what, lambda: get_server(cloud, server_id), _server_state,
               done=lambda s: s is None, failed=lambda s: None, timeout=timeout)
    forget(cloud, "servers")
    return True


def ensure_volume_on(cloud: Cloud, volume_id: str, ref: str, target: str, target_name: str, *,
                     movable_from: Iterable[str], timeout: float, known: Any = None
                     ) -> list[Action]:
    """Make the volume in-use by server ``target``, from whatever state it is in now.

    Attached to a server of ``movable_from``: detach it there, wait until available, attach it.
    Attached to ``target`` already: done. Busy (attaching, detaching...): wait until it settles.
    Gone: not an error (nothing to do). Never detaches it from any other server.

    :param known: the volume as listed under the lock and unchanged since (saves a GET).

    :raises CloudError: it is attached to a foreign server, went to an error state, or timed out.
    """
    conn = cloud.conn
    movable = set(movable_from) - {target}
    actions: list[Action] = []
    nova_lags = 0
    for _ in range(8 + NOVA_LAG_RETRIES):
        # ``known``: as listed, or as the last wait saw it; trusted only for the usual case
        # (a failed state or a foreign holder is fetched again before ivc acts on it)
        snapshot = known is not None
        volume = known if snapshot else get_volume(cloud, volume_id)
        known = None
        if volume is None:
            log.warning("volume %s (%s) is gone; nothing to move", ref, volume_id)
            return actions
        holders = volume_holders(volume)
        if volume.status in VOLUME_FAILED and not snapshot:
            raise CloudError(f"volume {ref} ({volume_id}) is {volume.status}; fix it in the cloud "
                             "(openstack volume set --state ...) and run again")
        if volume.status in VOLUME_BUSY:
            _wait_volume_settled(cloud, volume_id, ref, timeout)
            continue
        if volume.status == "in-use" and holders == [target]:
            return actions
        foreign = [h for h in holders if h != target and h not in movable]
        if (foreign or volume.status in VOLUME_FAILED) and snapshot:
            continue
        if foreign:
            raise CloudError(f"volume {ref} ({volume_id}) is attached to server {foreign[0]}, "
                             f"which is not part of this rotation; ivc leaves it there")
        others = [h for h in holders if h != target]
        if others:
            for holder in others:
                log.info("detaching volume %s from %s", ref, holder)
                try:
                    cloud.call(f"detach volume {ref} from {holder}",
                               lambda holder=holder: conn.compute.delete_volume_attachment(
                                   server_ref(holder), volume_id, ignore_missing=False),
                               conflict_is_transient=True,
                               lookup=lambda holder=holder: detach_done_or_under_way(
                                   get_volume(cloud, volume_id), holder) or None)
                except CloudCallError as exc:
                    if exc.status != 404:  # gone meanwhile (a lost response, retried)
                        raise
                actions.append(Action("detach", "volume", ref, f"from {holder}",
                                      {"id": volume_id, "server_id": holder}))
            known = wait_volume(cloud, volume_id, ref, "available",
                                lambda v: v.status == "available" or
                                (v.status == "in-use" and set(volume_holders(v)) <= {target}),
                                timeout)
            continue
        if volume.status == "available":
            log.info("attaching volume %s to %s", ref, target_name)

            def attached_meanwhile() -> Any | None:
                fresh = get_volume(cloud, volume_id)
                return fresh if attach_done_or_under_way(fresh, target) else None

            try:
                cloud.call(f"attach volume {ref} to {target_name}",
                           lambda: conn.compute.create_volume_attachment(target, volume_id),
                           conflict_is_transient=True, lookup=attached_meanwhile)
            except CloudCallError as exc:
                # Cinder says available a moment before Nova drops the old server's record of
                # the volume; Nova then refuses the attach (400 naming that server): nothing
                # changed, so look again shortly
                left = [h for h in movable if h in exc.details]
                if exc.status != 400 or "already attached" not in exc.details or not left \
                        or nova_lags >= NOVA_LAG_RETRIES:
                    raise
                nova_lags += 1
                log.info("Nova still lists volume %s on %s; attaching again", ref, left[0])
                cloud.sleep(0.1 * nova_lags)
                continue
            actions.append(Action("attach", "volume", ref, f"to {target_name} ({target})",
                                  {"id": volume_id, "server_id": target}))
            known = wait_volume(cloud, volume_id, ref, "in-use",
                                lambda v: v.status == "in-use" and target in volume_holders(v),
                                timeout)
            continue
        if volume.status == "in-use" and not holders:
            _wait_volume_settled(cloud, volume_id, ref, timeout)
            continue
        raise CloudError(f"volume {ref} ({volume_id}) is {volume.status!r}; ivc does not know "
                         "how to move it from there")
    raise CloudError(f"volume {ref} ({volume_id}) did not settle on {target_name}; run again")


def wait_volume(cloud: Cloud, volume_id: str, ref: str, wanted: str,
                 done: Callable[[Any], bool], timeout: float) -> Any:
    def failed(volume: Any | None) -> str | None:
        if volume is None:
            return f"is gone ({volume_id})"
        if volume.status in VOLUME_FAILED:
            return f"went to {volume.status} ({volume_id}); look at the cloud's logs"
        if wanted == "in-use" and volume.status == "available":
            return f"is available again ({volume_id}): Nova rolled the attach back"
        if wanted == "available" and volume.status == "in-use" and not done(volume):
            return f"is still in-use ({volume_id}): the detach did not happen"
        return None

    return wait_until(cloud, f"volume {ref}", lambda: get_volume(cloud, volume_id),
                      lambda v: "gone" if v is None else v.status,
                      done=lambda v: v is not None and done(v), failed=failed, timeout=timeout)


def _wait_volume_settled(cloud: Cloud, volume_id: str, ref: str, timeout: float) -> None:
    wait_until(cloud, f"volume {ref}", lambda: get_volume(cloud, volume_id),
               lambda v: "gone" if v is None else v.status,
               done=lambda v: v is None or (v.status not in VOLUME_BUSY and
                                            not (v.status == "in-use" and not volume_holders(v))),
               failed=lambda v: None, timeout=timeout)


def run_side_by_side(jobs: Mapping[str, Callable[[], T]]) -> dict[str, T]:
    """Run independent jobs in threads; wait for ALL of them, then raise the first failure."""
    if len(jobs) <= 1:
        return {key: job() for key, job in jobs.items()}
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {key: pool.submit(job) for key, job in jobs.items()}
        errors = [f.exception() for f in futures.values()]
    for error in errors:
        if error is not None:
            raise error
    return {key: f.result() for key, f in futures.items()}


def server_ports(cloud: Cloud, server_id: str) -> list[Any]:
    conn = cloud.conn
    return cloud.call(f"list ports of {server_id}",
                      lambda: list(conn.network.ports(device_id=server_id)))


def pick_port(ports: Sequence[Any], network_id: str | None, order: Sequence[str] = ()
              ) -> Any | None:
    """The port on ``network_id``, else the first port on the networks of ``order``."""
    with_ip = [p for p in ports if p.fixed_ips]
    same = [p for p in with_ip if network_id and p.network_id == network_id]
    if same:
        return same[0]
    rank = {net: i for i, net in enumerate(order)}
    ranked = sorted((p for p in with_ip if p.network_id in rank), key=lambda p: rank[p.network_id])
    return ranked[0] if ranked else None


def ensure_fips_on(cloud: Cloud, fips: Mapping[str, tuple[str, str]], target: Any,
                   target_name: str, *, back_to_recorded_port: bool,
                   internal_order: Sequence[str] = ()) -> tuple[list[Action], set[str]]:
    """Put each floating IP of ``fips`` on a port of server ``target`` (one update each).

    :param fips: ``{fip id: (port id it had on the old server, network id)}``.
    :param back_to_recorded_port: rollback: prefer the recorded port itself.
    :returns: the actions, and the ids of the floating IPs now on the target.
    """
    conn = cloud.conn
    actions: list[Action] = []
    placed: set[str] = set()
    if not fips:
        return actions, placed
    ports = server_ports(cloud, target.id)
    # forward: as listed under the lock; rollback: as the cloud says now (an update that failed
    # on our side may have taken effect on Neutron's)
    listed = {f.id: f for f in list_floating_ips(cloud, refresh=back_to_recorded_port)}
    for fip_id, (port_id, network_id) in fips.items():
        fip = listed.get(fip_id)
        if fip is None:
            log.warning("floating IP %s is gone; nothing to move", fip_id)
            continue
        port = next((p for p in ports if p.id == port_id), None) if back_to_recorded_port \
            else None
        port = port or pick_port(ports, network_id, internal_order)
        if port is None:
            raise CloudError(f"server {target_name} ({target.id}) has no port on network "
                             f"{network_id} for floating IP {fip.floating_ip_address}")
        if fip.port_id == port.id:
            placed.add(fip_id)
            continue
        log.info("moving floating IP %s to %s (port %s)", fip.floating_ip_address, target_name,
                 port.id)
        cloud.call(f"move floating IP {fip.floating_ip_address} to {target_name}",
                   lambda fip=fip, port=port: conn.network.update_ip(fip, port_id=port.id))
        placed.add(fip_id)
        actions.append(Action("associate", "floating_ip", fip.floating_ip_address,
                              f"to {target_name} ({target.id})",
                              {"id": fip_id, "port_id": port.id, "from_port_id": fip.port_id}))
    forget(cloud, "floating_ips")
    return actions, placed


def clear_markers(cloud: Cloud, server_id: str, what: str, *, known: Any = None) -> bool:
    """Remove the rotation markers from a server's metadata (one PUT, if there are any).

    :param known: the server as fetched since the last metadata change made under the lock
        (saves a GET); else it is fetched.
    """
    conn = cloud.conn
    server = known if known is not None else get_server(cloud, server_id)
    if server is None:
        return False
    meta = dict(server.metadata or {})
    kept = {k: v for k, v in meta.items() if not is_marker(k)}
    if kept == meta:
        return False
    cloud.call(f"clear the rotation markers of {what}",
               lambda: server.set_metadata(conn.compute, metadata=kept, replace=True))
    return True


# -- one rotation --------------------------------------------------------------------------
class _Failed(Exception):
    """Internal: a phase failed; carries the phase's name and the cause."""

    def __init__(self, phase: str, cause: IvcError):
        super().__init__(str(cause))
        self.phase, self.cause = phase, cause


class Rotation:
    """Carries out one server's decision, phase by phase, and fills its report."""

    def __init__(self, cloud: Cloud, prepared: Prepared, options: RotateOptions,
                 lock: ServerLock | None, report: RotationReport):
        self.cloud, self.prepared, self.options, self.lock = cloud, prepared, options, lock
        self.report = report
        self.name = prepared.name
        self.conn = cloud.conn
        self._outage_start: float | None = None
        self._current = "preflight"
        self._metadata_changed = False

    # helpers
    @contextmanager
    def phase(self, name: str, note: str = "") -> Iterator[PhaseRecord]:
        if self.lock is not None:
            self.lock.verify()
        log.info("phase: %s (server %s)", name, self.name)
        self._current = name
        record = PhaseRecord(name, note=note)
        self.report.phases.append(record)
        start = self.cloud.clock()
        try:
            yield record
        except BaseException:
            record.ok = False
            raise
        finally:
            record.seconds = self.cloud.clock() - start

    def _settle(self, server: Any) -> Any:
        """Wait out a stop or start under way (a crashed run may have left one)."""
        task = server.task_state or ""
        if task == "powering-off":
            return wait_server_status(self.cloud, server.id, f"server {self.name}", "SHUTOFF",
                                      self.options.stop_timeout)
        if task == "powering-on":
            return wait_server_status(self.cloud, server.id, f"server {self.name}", "ACTIVE",
                                      self.options.stop_timeout)
        return server

    def _timeout(self) -> float:
        return self.options.boot_timeout or self.cloud.boot_timeout

    def _old_fips(self, old_id: str) -> dict[str, tuple[str, str]]:
        ports = server_ports(self.cloud, old_id)
        by_port = {p.id: p for p in ports}
        fips = list_floating_ips(self.cloud)  # listed in preflight, under the lock
        return {f.id: (f.port_id, by_port[f.port_id].network_id)
                for f in fips if f.port_id in by_port}

    def _markers(self, server: Any) -> dict[str, str]:
        return dict(server.metadata or {}) if server is not None else {}

    # the decisions
    def run(self) -> None:
        kind = self.prepared.decision.kind
        if kind == CREATE:
            self._create_only()
        elif kind == ROTATE:
            self._rotate()
        elif kind in (FORWARD, FINISH):
            self._resume_forward()
        elif kind == ROLLBACK:
            self._resume_rollback()
        else:  # pragma: no cover - preflight refuses conflicts
            raise AssertionError(kind)

    def _create_only(self) -> None:
        plan = self.prepared.plan
        with self.phase("create"):
            step = apply_instance(self.cloud, plan, timeout=self.options.boot_timeout)
        self.report.actions += step.actions
        self.report.warnings += step.warnings
        self.report.new_id = step.info.get("id")
        self.report.generation = step.info.get("generation")
        self.report.outcome = "created"

    def _rotate(self) -> None:
        old = self.prepared.servers[self.prepared.decision.old.id]
        self.report.old_id = old.id
        rotation = self.cloud.run_id
        new = None
        try:
            with self.phase("create"):
                new = self._create_new(old, rotation, self._old_fips(old.id))
                new = wait_server_status(self.cloud, new.id, f"new server {self.name}",
                                         "ACTIVE", self._timeout())
                log.info("new server %s (%s) is ACTIVE", self.name, new.id)
        except LockLost:
            raise
        except IvcError as exc:
            self._rollback("create", exc, old.id, new.id if new is not None else None)
        self._forward(old.id, new, old=old)
        self.report.outcome = "rotated"

    def _create_new(self, old: Any, rotation: str, fips: Mapping[str, tuple[str, str]]) -> Any:
        plan = self.prepared.plan
        plan.boot_volumes = {}
        body = create_request(self.cloud, plan, self.prepared.group_ids)
        gen = generation(old) + 1
        body["metadata"] = {
            **server_metadata(plan.declared, self.cloud.env, self.cloud.run_id, gen=gen,
                              volumes=self.prepared.volumes),
            META_ROTATION: rotation, META_ROLE: "new", META_REPLACES: old.id,
            META_WAS: old.status,
            **{FIP_KEY_PREFIX + fid: f"{port} {net}" for fid, (port, net) in fips.items()},
        }
        log.info("creating server %s generation %d (image %s, flavor %s)", self.name, gen,
                 plan.image.name, plan.flavor.name)

        def made_meanwhile() -> Any | None:
            for server in managed_servers(self.cloud, self.name, refresh=True):
                meta = server.metadata or {}
                if meta.get(META_ROTATION) == rotation and meta.get(META_ROLE) == "new":
                    return server
            return None

        new = self.cloud.call(f"create server {self.name}",
                              lambda: self.conn.compute.create_server(**body),
                              lookup=made_meanwhile, redact=body.get("user_data"))
        forget(self.cloud, "servers")
        self.report.new_id, self.report.generation = new.id, gen
        self.report.actions.append(Action("create", "server", self.name, f"generation {gen}", {
            "id": new.id, "request": redacted_request(body, plan.declared.userdata)}))
        return new

    def _forward(self, old_id: str, new: Any, *, old: Any = None) -> None:
        """Roll forward from any point: the new server is ACTIVE.

        :param old: the old server as just listed (else it is fetched).
        """
        as_listed = old is not None  # a plain rotation: nothing moved since preflight
        old = old if old is not None else get_server(self.cloud, old_id)
        self.report.new_id = new.id
        self.report.generation = generation(new)
        fips = fip_markers(new.metadata) or fip_markers(self._markers(old))
        old_error = old is not None and old.status == "ERROR"
        try:
            if old is not None and not old_error:
                self._stop_old(old)
                self._move_volumes(new, old.id, as_listed=as_listed)
                self._move_fips(new, fips)
        except LockLost:
            raise
        except _Failed as failed:
            self._rollback(failed.phase, failed.cause, old_id, new.id)
        except IvcError as exc:
            self._rollback(self._current, exc, old_id, new.id)
        try:
            if old is not None:
                with self.phase("delete-old"):
                    if delete_server_and_wait(self.cloud, old_id, f"old server {self.name}",
                                              self.options.delete_timeout):
                        self.report.actions.append(Action("delete", "server", self.name,
                                                          f"old server {old_id}", {"id": old_id}))
            if old is None or old_error:
                self._move_volumes(new, old_id)
                self._move_fips(new, fips)
            with self.phase("finish"):
                clear_markers(self.cloud, new.id, f"server {self.name}",
                              known=None if self._metadata_changed else new)
        except LockLost:
            raise
        except (_Failed, IvcError) as exc:
            cause = exc.cause if isinstance(exc, _Failed) else exc
            raise CloudError(f"rotate {self.name}: the new server {new.id} is ACTIVE but the "
                             f"rotation could not complete: {cause}; run `invoke rotate --name "
                             f"{self.name}` again to finish it") from None

    def _stop_old(self, old: Any) -> None:
        if not self.options.stop:
            with self.phase("stop", note="skipped (--no-stop)"):
                self._outage_start = self._outage_start or self.cloud.clock()
            return
        with self.phase("stop") as record:
            self._outage_start = self._outage_start or self.cloud.clock()
            try:
                old = self._settle(old)
                if old.status != "ACTIVE" or old.task_state:
                    record.note = f"old server is {_server_state(old)}"
                    return
                log.info("stopping old server %s (%s)", self.name, old.id)
                self.cloud.call(f"stop old server {self.name}",
                                lambda: self.conn.compute.stop_server(old.id),
                                lookup=lambda: power_done_or_under_way(self.cloud, old.id,
                                                                       "SHUTOFF"))
                self.report.actions.append(Action("stop", "server", self.name,
                                                  f"old server {old.id}", {"id": old.id}))
                wait_server_status(self.cloud, old.id, f"old server {self.name}", "SHUTOFF",
                                   self.options.stop_timeout)
            except IvcError as exc:
                raise _Failed("stop", exc) from exc

    def _move_volumes(self, new: Any, old_id: str, *, as_listed: bool = False) -> None:
        """:param as_listed: the volumes are as preflight listed them (a plain rotation)."""
        volumes = self.prepared.volumes
        listed = self.prepared.listed_volumes if as_listed else {}
        with self.phase("move-volumes", note=", ".join(volumes) or "no volumes"):
            self._outage_start = self._outage_start or self.cloud.clock()
            jobs = {ref: (lambda ref=ref, vid=vid: ensure_volume_on(
                self.cloud, vid, ref, new.id, f"new server {self.name}", movable_from=[old_id],
                timeout=self.cloud.volume_timeout, known=listed.get(ref)))
                for ref, vid in volumes.items()}
            try:
                done = run_side_by_side(jobs)
            except IvcError as exc:
                raise _Failed("move-volumes", exc) from exc
            for actions in done.values():
                self.report.actions += actions
            record = {volume_key(ref): vid for ref, vid in volumes.items()}
            if record and any((new.metadata or {}).get(k) != v for k, v in record.items()):
                self.cloud.call(f"record volumes of {self.name}",
                                lambda: self.conn.compute.set_server_metadata(new.id, **record))
                self._metadata_changed = True

    def _move_fips(self, new: Any, fips: Mapping[str, tuple[str, str]]) -> None:
        plan = self.prepared.plan
        with self.phase("move-floating-ip") as record:
            try:
                order = [n.id for n in plan.networks if not n.is_router_external]
                actions, placed = ensure_fips_on(self.cloud, fips, new, f"new server {self.name}",
                                                 back_to_recorded_port=False,
                                                 internal_order=order)
                self.report.actions += actions
                if self._outage_start is not None and (placed or not fips):
                    self.report.outage_seconds = self.cloud.clock() - self._outage_start
                if plan.declared.floating_ip and not placed and plan.floating is not None:
                    fresh = get_server(self.cloud, new.id) or new
                    action = ensure_floating_ip(self.cloud, plan, fresh)
                    if action:
                        self.report.actions.append(action)
                        record.note = f"{action.verb} {action.summary}"
                    if self._outage_start is not None:
                        self.report.outage_seconds = self.cloud.clock() - self._outage_start
            except IvcError as exc:
                raise _Failed("move-floating-ip", exc) from exc

    # resuming
    def _resume_forward(self) -> None:
        decision = self.prepared.decision
        new = self.prepared.servers[decision.new.id]
        old_id = decision.old.id if decision.old else new.metadata.get(META_REPLACES)
        self.report.old_id = old_id
        log.info("server %s: resuming rotation %s: %s; rolling forward", self.name,
                 new.metadata.get(META_ROTATION), decision.reason)
        if decision.wait_for_new:
            try:
                with self.phase("create", note="waiting for the new server"):
                    new = wait_server_status(self.cloud, new.id, f"new server {self.name}",
                                             "ACTIVE", self._timeout())
            except LockLost:
                raise
            except IvcError as exc:
                if decision.old is None:
                    raise
                try:
                    self._rollback("create", exc, old_id, new.id)
                except RolledBack:
                    self._rotate_again(old_id)
                    return
        else:
            new = get_server(self.cloud, new.id) or new
        self._forward(old_id, new)
        self.report.outcome = "resumed: rolled forward"

    def _resume_rollback(self) -> None:
        decision = self.prepared.decision
        old_id = decision.old.id
        new_id = decision.new.id if decision.new else None
        self.report.old_id = old_id
        old = self.prepared.servers[old_id]
        log.info("server %s: resuming rotation %s: %s; rolling back", self.name,
                 (old.metadata or {}).get(META_ROTATION), decision.reason)
        try:
            self._rollback("resume", CloudError(decision.reason), old_id, new_id)
        except RolledBack:
            pass
        self._rotate_again(old_id)

    def _rotate_again(self, old_id: str) -> None:
        """After a resumed rotation was rolled back: the run was asked to rotate, so rotate."""
        self.report.phases.append(PhaseRecord("rotate-again", note="after the rollback"))
        fresh = get_server(self.cloud, old_id)
        if fresh is None:  # pragma: no cover - rollback keeps the old server
            raise CloudError(f"server {self.name}: the old server {old_id} is gone")
        self.prepared.servers = {old_id: fresh}
        self.prepared.listed_volumes = {}  # the rollback moved them since preflight
        forget(self.cloud, "floating_ips")
        self.prepared.decision = Decision(ROTATE, old=Seen.of(fresh), reason="after rollback")
        self.report.decision = f"{ROLLBACK}+{ROTATE}"
        self._rotate()
        self.report.outcome = "resumed: rolled back, then rotated"

    # rolling back
    def _rollback(self, phase: str, cause: IvcError, old_id: str, new_id: str | None) -> None:
        """Put everything back on the old server, delete the new one; always raises.

        :raises RolledBack: done (exit 3).
        :raises CloudError: the rollback failed too (a rerun continues it).
        """
        log.warning("server %s: phase %s failed: %s; rolling back", self.name, phase, cause)
        try:
            with self.phase(ROLLBACK):
                self._undo(old_id, new_id)
        except LockLost:
            raise
        except IvcError as exc:
            raise CloudError(f"rotate {self.name} failed in phase {phase}: {cause}; the rollback "
                             f"failed too: {exc}; run `invoke rotate --name {self.name}` again "
                             "to finish the rollback") from None
        self.report.outcome = "rolled back"
        old = get_server(self.cloud, old_id)
        serves = (f"server {old_id} is as it was, in ERROR" if old is not None and
                  old.status == "ERROR" else
                  f"server {old_id} serves as before with its volumes and floating IP")
        raise RolledBack(f"rotate {self.name} failed in phase {phase}: {cause}; rolled back: "
                         f"{serves}" + (f", new server {new_id} deleted" if new_id else ""))

    def _undo(self, old_id: str, new_id: str | None) -> None:
        cloud = self.cloud
        old = get_server(cloud, old_id)
        if old is None:
            raise CloudError(f"the old server {old_id} is gone; nothing to roll back to")
        new = get_server(cloud, new_id) if new_id else None
        fips = fip_markers(self._markers(old)) or fip_markers(self._markers(new))
        was = (self._markers(old).get(META_WAS) or self._markers(new).get(META_WAS)
               or self._status_before(old_id) or old.status)
        if new is not None and new.status not in UNMARKABLE \
                and (new.metadata or {}).get(META_ROLLBACK) != "1":
            cloud.call(f"mark new server {self.name} for rollback",
                       lambda: self.conn.compute.set_server_metadata(new.id,
                                                                     **{META_ROLLBACK: "1"}))
        # the floating IPs first: their record is the new server's metadata, which may go next
        actions, _ = ensure_fips_on(cloud, fips, old, f"old server {self.name}",
                                    back_to_recorded_port=True)
        self.report.actions += actions
        if new is not None and new.status in UNMARKABLE:
            # ERROR: Nova refuses to detach from it, deleting frees the volumes; BUILD: nothing
            # of ours is on it yet (volumes move once it is ACTIVE). A rerun rolls back anyway.
            self._delete_new(new.id)
            new = None
        jobs = {ref: (lambda ref=ref, vid=vid: ensure_volume_on(
            cloud, vid, ref, old_id, f"old server {self.name}",
            movable_from=[new_id] if new_id else [], timeout=cloud.volume_timeout))
            for ref, vid in self.prepared.volumes.items()}
        for actions in run_side_by_side(jobs).values():
            self.report.actions += actions
        old = self._settle(get_server(cloud, old_id) or old)
        if was == "ACTIVE" and old.status == "SHUTOFF":
            log.info("starting old server %s (%s) again", self.name, old_id)
            cloud.call(f"start old server {self.name}",
                       lambda: self.conn.compute.start_server(old_id),
                       lookup=lambda: power_done_or_under_way(cloud, old_id, "ACTIVE"))
            self.report.actions.append(Action("start", "server", self.name,
                                              f"old server {old_id}", {"id": old_id}))
            wait_server_status(cloud, old_id, f"old server {self.name}", "ACTIVE",
                               self.options.stop_timeout)
        if new is not None:
            self._delete_new(new.id)
        clear_markers(cloud, old_id, f"server {self.name}")
        self.report.new_id = None
        self.report.generation = generation(old)

    def _status_before(self, old_id: str) -> str | None:
        """The old server's status as this run first listed it (before it stopped anything)."""
        old = self.prepared.decision.old
        return old.status if old is not None and old.id == old_id else None

    def _delete_new(self, new_id: str) -> None:
        if delete_server_and_wait(self.cloud, new_id, f"new server {self.name}",
                                  self.options.delete_timeout):
            self.report.actions.append(Action("delete", "server", self.name,
                                              f"new server {new_id}", {"id": new_id}))


# -- the entry point -----------------------------------------------------------------------
def rotate(cloud: Cloud, spec: Spec, names: Iterable[str], *, options: RotateOptions | None = None,
           dry_run: bool = False) -> RotateResult:
    """Rotate (replace) each declared server of ``names``, or resume a rotation under way.

    Every server is locked and preflighted before anything changes; then up to
    ``options.parallel`` rotations run side by side.

    :param dry_run: return the phases with the resources involved; change nothing (and take
        no lock; a lock held by another run is reported as a warning).
    :raises ConfigError: invalid input or a missing resource (nothing changed).
    :raises Locked: another run holds a server's lock (nothing changed).
    :raises RolledBack: a rotation failed and was rolled back (its ``result`` reports all).
    :raises CloudError: a cloud call failed; a rerun resumes from the servers' metadata.
    :raises RotateFailed: several servers, and some failed.
    """
    options = options or RotateOptions()
    names = list(dict.fromkeys(names or ()))
    if not names:
        raise ConfigError(f"--name is required: one or more of "
                          f"{', '.join(spec.servers) or 'none declared'}")
    for name in names:
        declared_server(spec, name)
    result = RotateResult(dry_run=dry_run)
    locks: list[ServerLock] = []
    if not dry_run:
        locks = acquire_all(cloud, names, op="rotate", ttl=options.lock_ttl)
    try:
        start = cloud.clock()
        for name in names:
            log.info("phase: preflight (server %s)", name)
        groups = sorted({g for n in names for g in spec.servers[n].security_groups
                         if g in spec.secgroups})
        images = sorted({spec.servers[n].image for n in names})
        # every listing preflight needs, side by side (one request each)
        prefetch(cloud, list_servers, list_volumes, list_floating_ips, list_networks,
                 list_flavors, list_keypairs,
                 *([list_security_groups] if any(spec.servers[n].security_groups
                                                 for n in names) else []),
                 *(lambda c, ref=ref: find_images(c, ref) for ref in images))
        sg_plan = plan_secgroups(cloud, spec, groups) if groups else None
        pending = {gp.declared.name for gp in sg_plan.groups if gp.existing is None} \
            if sg_plan else set()
        prepared = [preflight(cloud, spec, name, pending_groups=pending) for name in names]
        if sg_plan is not None:
            result.preflight = secgroups_result(cloud, sg_plan, dry_run=dry_run)
            ids = {**sg_plan.ids, **result.preflight.info.get("ids", {})}
            for p in prepared:
                p.group_ids = ids
        if dry_run:
            result.rotations = [_planned(cloud, p, options) for p in prepared]
            return result
        return _run_all(cloud, prepared, options, {lk.name: lk for lk in locks}, result,
                        preflight_seconds=cloud.clock() - start)
    finally:
        release_all(locks)


def _run_all(cloud: Cloud, prepared: list[Prepared], options: RotateOptions,
             locks: Mapping[str, ServerLock], result: RotateResult, *,
             preflight_seconds: float = 0.0) -> RotateResult:
    reports = {p.name: RotationReport(name=p.name, decision=p.decision.kind,
                                      reason=p.decision.reason, warnings=list(p.warnings))
               for p in prepared}
    result.rotations = list(reports.values())
    failures: dict[str, IvcError] = {}
    guard = threading.Lock()

    def one(p: Prepared) -> None:
        view = dataclasses.replace(cloud, cache=dict(cloud.cache))
        report = reports[p.name]
        report.phases.append(PhaseRecord("preflight", preflight_seconds,
                                         note=p.decision.reason))
        try:
            Rotation(view, p, options, locks.get(p.name), report).run()
        except IvcError as exc:
            report.error = str(exc)
            with guard:
                failures[p.name] = exc

    workers = max(1, min(options.parallel, len(prepared)))
    if workers == 1:
        for p in prepared:
            one(p)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, prepared))
    forget(cloud, "servers", "volumes", "floating_ips")
    if not failures:
        return result
    if len(prepared) == 1:
        exc = next(iter(failures.values()))
        exc.result = result  # type: ignore[attr-defined]
        raise exc
    raise RotateFailed([(n, failures[n]) for n in reports if n in failures], result)


def _planned(cloud: Cloud, p: Prepared, options: RotateOptions) -> RotationReport:
    """The phases a rotation would go through, with the resources involved (no change)."""
    report = RotationReport(name=p.name, decision=p.decision.kind, reason=p.decision.reason,
                            dry_run=True, warnings=list(p.warnings))
    held = _lock_holder(cloud, p.name)
    if held:
        report.warnings.append(f"server {p.name}: {held}")
    add = lambda name, note: report.phases.append(PhaseRecord(name, note=note))  # noqa: E731
    vols = ", ".join(f"{ref} ({vid})" for ref, vid in p.volumes.items()) or "none declared"
    kind = p.decision.kind
    add("preflight", "references resolved; volumes " + vols)
    if kind == CREATE:
        step = planned_result(cloud, p.plan)
        report.actions += step.actions
        add("create", "; ".join(str(a) for a in step.actions))
        return report
    old = p.servers.get(p.decision.old.id) if p.decision.old else None
    new = p.servers.get(p.decision.new.id) if p.decision.new else None
    report.old_id = old.id if old is not None else None
    report.new_id = new.id if new is not None else None
    fips = _planned_fips(cloud, old, new)
    if kind in (ROTATE, ROLLBACK):
        if kind == ROLLBACK:
            add(ROLLBACK, f"volumes {vols} and floating IPs {fips or 'none'} back to {old.id}; "
                f"start it if it was ACTIVE; delete the new server "
                f"{new.id if new is not None else '(none)'}; clear the markers")
        plan = p.plan
        gen = generation(old) + 1
        report.generation = gen
        body = create_request(cloud, dataclasses.replace(plan, boot_volumes={}), {})
        add("create", f"mark {old.id}; create server {p.name} generation {gen}: image "
            f"{plan.image.name}, flavor {plan.flavor.name}, networks "
            f"{', '.join(n.name for n in plan.networks)}; wait ACTIVE")
        report.actions.append(Action("create", "server", p.name, f"generation {gen}", {
            "request": redacted_request(body, plan.declared.userdata)}))
        old_error = old.status == "ERROR"
    else:
        if p.decision.wait_for_new:
            add("create", f"wait for the new server {new.id} to be ACTIVE (else roll back)")
        old_error = old is not None and old.status == "ERROR"
    if old is not None and not old_error:
        stop = "skipped (--no-stop)" if not options.stop else (
            f"stop {old.id} and wait SHUTOFF" if old.status == "ACTIVE" else
            f"{old.id} is {old.status}: no stop")
        add("stop", stop)
    target = new.id if new is not None else "the new server"
    move_v = ("move-volumes", f"{vols}: detach from {old.id if old is not None else '-'}, "
              f"attach to {target}")
    move_f = ("move-floating-ip", f"{fips or 'none'} to {target}'s port (one update each)")
    delete = ("delete-old", f"delete {old.id} and wait until gone" if old is not None else
              "the old server is gone already")
    order = [delete, move_v, move_f] if old is None or old_error else [move_v, move_f, delete]
    for name, note in order:
        add(name, note)
    add("finish", f"clear the rotation markers of {target}")
    return report


def _planned_fips(cloud: Cloud, old: Any | None, new: Any | None) -> str:
    recorded = fip_markers(getattr(new, "metadata", None)) or \
        fip_markers(getattr(old, "metadata", None))
    listed = list_floating_ips(cloud)
    if old is not None and not recorded:
        ports = {p.id for p in server_ports(cloud, old.id)}
        recorded = {f.id: (f.port_id, "") for f in listed if f.port_id in ports}
    by_id = {f.id: f for f in listed}
    return ", ".join(f"{by_id[fid].floating_ip_address} ({fid})" if fid in by_id else fid
                     for fid in recorded)


def _lock_holder(cloud: Cloud, name: str) -> str | None:
    wanted = lock_name(cloud.env, name)
    for keypair in list_keypairs(cloud):
        if keypair.name == wanted:
            holder = parse_holder(getattr(keypair, "public_key", None))
            return (f"locked by {holder.describe()}" if holder else
                    f"locked (keypair {wanted})") + ": a real run would exit 4"
    return None


__all__ = ["rotate", "RotateOptions", "RotateResult", "RotateFailed", "decide", "Decision",
           "Seen", "Locked"]
