"""destroy: delete a declared server's servers, never its volumes.

For every managed server of the name (leftovers of a half-done rotation included), under the
server's lock (``ivc_tasks.resources.lock``):
  * each attached volume is detached first and left ``available`` (from a server in ERROR, where
    Nova refuses to detach, deleting the server frees them; ivc then waits until they are
    available);
  * floating IPs: the one ivc allocated for the server (description ``ivc:<env>:<name>``, see
    ``instances.floating_marker``) is released (deleted), together with spare ones of the same
    description; with ``keep_floating_ip`` it is only disassociated, so that a later
    create-instance reuses the address. A floating IP ivc did not allocate (any other
    description) is only disassociated, never deleted;
  * the server is deleted, and ivc waits until it is gone (``resources.servers.is_gone``).
Destroying a name with no server is not an error: nothing to do.

Like every step: ``plan_destroy`` reads (under the lock, in a real run), ``describe_destroy`` is
what ``--dry-run`` prints, ``apply_destroy`` changes the cloud; both report each planned move
with the same ``Action``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import ConfigError
from ivc_tasks.resources.attachments import send_detach, wait_detached
from ivc_tasks.resources.floating_ips import associate, floating_marker, release
from ivc_tasks.resources.lock import ServerLock
from ivc_tasks.resources.resolve import forget, list_floating_ips, list_volumes, server_ports
from ivc_tasks.resources.servers import attached_ids, managed_servers
from ivc_tasks.resources.waits import delete_server_and_wait
from ivc_tasks.result import Action, StepResult
from ivc_tasks.spec import Spec

log = logging.getLogger("ivc")
STEP = "destroy"


@dataclass(frozen=True)
class FloatingMove:
    """A floating IP to release (ivc allocated it) or to disassociate (kept)."""

    fip: Any
    release: bool
    server_id: str | None = None  # the server it is on (None: a spare one)
    why: str = ""

    def action(self) -> Action:
        if self.release:
            return Action("delete", "floating_ip", self.fip.floating_ip_address,
                          "allocated by ivc for this server: released", {"id": self.fip.id})
        return Action("disassociate", "floating_ip", self.fip.floating_ip_address,
                      f"from {self.server_id} ({self.why})", {"id": self.fip.id})


@dataclass(frozen=True)
class ServerTeardown:
    """One server of the name: its floating IPs, then its volumes, then the server itself.

    ``volumes`` holds ``(volume id, label)``; from a server in ERROR they are not detached
    (Nova refuses) but freed by the delete.
    """

    server: Any
    floating: list[FloatingMove]
    volumes: list[tuple[str, str]]

    @property
    def in_error(self) -> bool:
        return self.server.status == "ERROR"

    def detach_action(self, volume_id: str, label: str) -> Action:
        summary = (f"freed by deleting {self.server.id}, kept" if self.in_error
                   else f"from {self.server.id}, kept")
        return Action("detach", "volume", label, summary, {"id": volume_id})

    def delete_action(self, name: str) -> Action:
        return Action("delete", "server", name, f"{self.server.id} ({self.server.status})",
                      {"id": self.server.id})


@dataclass
class DestroyPlan:
    """What destroying server ``name`` does: each server's teardown, then the spare floating
    IPs ivc allocated for the name (released unless kept)."""

    name: str
    servers: list[ServerTeardown] = field(default_factory=list)
    spare: list[FloatingMove] = field(default_factory=list)

    def actions(self) -> list[Action]:
        """The moves in the order ``apply_destroy`` makes them."""
        out: list[Action] = []
        for td in self.servers:
            out += [move.action() for move in td.floating]
            detached = [td.detach_action(vid, label) for vid, label in td.volumes]
            out += ([] if td.in_error else detached) + [td.delete_action(self.name)]
            out += detached if td.in_error else []
        return out + [move.action() for move in self.spare]

    def result(self, *, dry_run: bool) -> StepResult:
        actions = self.actions()
        return StepResult(step=STEP, target=self.name, dry_run=dry_run, actions=actions,
                          info={"volumes_kept": sorted({a.detail["id"] for a in actions
                                                         if a.kind == "volume"})}
                          if self.servers else {})


def plan_destroy(cloud: Cloud, name: str, servers: list[Any], *,
                 keep_floating_ip: bool = False) -> DestroyPlan:
    """Read what destroying ``servers`` (the managed servers of ``name``) involves: their
    floating IPs (one listing, and each server's ports) and volumes (one listing)."""
    plan = DestroyPlan(name)
    if not servers:
        return plan
    marker = floating_marker(cloud.env, name)
    fips = list_floating_ips(cloud, refresh=True)
    volumes = {v.id: v for v in list_volumes(cloud, refresh=True)}
    released: set[str] = set()
    for server in servers:
        ports = {p.id for p in server_ports(cloud, server.id)}
        moves = []
        for fip in [f for f in fips if f.port_id in ports]:
            ours = fip.description == marker
            moves.append(FloatingMove(fip, release=ours and not keep_floating_ip,
                                      server_id=server.id,
                                      why="allocated by ivc, kept" if ours
                                      else "not allocated by ivc: kept"))
            released |= {fip.id} if moves[-1].release else set()
        attached = sorted(attached_ids(server))
        plan.servers.append(ServerTeardown(server, moves, [
            (vid, getattr(volumes.get(vid), "name", None) or vid) for vid in attached]))
    if not keep_floating_ip:
        plan.spare = [FloatingMove(f, release=True) for f in fips
                      if not f.port_id and f.description == marker and f.id not in released]
    return plan


def describe_destroy(plan: DestroyPlan) -> StepResult:
    """What ``apply_destroy`` would do, for a dry run."""
    return plan.result(dry_run=True)


def apply_destroy(cloud: Cloud, plan: DestroyPlan) -> StepResult:
    """Make the plan's moves, in order, waiting for each volume and server.

    :raises CloudError: a cloud call failed or a wait timed out.
    """
    for td in plan.servers:
        for move in td.floating:
            _move_floating(cloud, move, plan.name)
        if not td.in_error:
            for volume_id, label in td.volumes:
                send_detach(cloud, volume_id, label, td.server.id, plan.name)
            for volume_id, _ in td.volumes:
                wait_detached(cloud, volume_id, volume_id, td.server.id, cloud.settings.volume_timeout)
        delete_server_and_wait(cloud, td.server.id, f"server {plan.name}", cloud.settings.delete_timeout)
        log.info("deleted server %s (%s)", plan.name, td.server.id)
        if td.in_error:
            for volume_id, _ in td.volumes:
                wait_detached(cloud, volume_id, volume_id, td.server.id, cloud.settings.volume_timeout)
    for move in plan.spare:
        _move_floating(cloud, move, plan.name)
    return plan.result(dry_run=False)


def _move_floating(cloud: Cloud, move: FloatingMove, name: str) -> None:
    fip = move.fip
    if move.release:
        release(cloud, fip)
        log.info("released floating IP %s (ivc allocated it for %s)", fip.floating_ip_address,
                 name)
    else:
        associate(cloud, fip, None, f"disassociate floating IP {fip.floating_ip_address}")


def destroy(cloud: Cloud, spec: Spec, name: str, *, keep_floating_ip: bool = False,
            dry_run: bool = False) -> StepResult:
    """Delete server ``name`` (every managed server of that name), keeping its volumes.

    :param keep_floating_ip: disassociate ivc's floating IP instead of releasing it.
    :param dry_run: return the plan; change nothing (and take no lock).
    :raises ConfigError: ``name`` is neither declared nor the name of a managed server.
    :raises Locked: another run holds the server's lock.
    :raises CloudError: a cloud call failed.
    """
    servers = managed_servers(cloud, name, refresh=True)
    if not servers and name not in spec.servers:
        raise ConfigError(f"{spec.path}: --name {name!r}: no such declared server, and no "
                          f"server of that name made by ivc in environment {cloud.env!r}")
    if dry_run:
        return describe_destroy(plan_destroy(cloud, name, servers,
                                             keep_floating_ip=keep_floating_ip))
    if not servers:
        return StepResult(step=STEP, target=name)
    lock = ServerLock(cloud, name, op="destroy")
    lock.acquire()
    try:
        plan = plan_destroy(cloud, name, servers, keep_floating_ip=keep_floating_ip)
        return apply_destroy(cloud, plan)
    finally:
        lock.release()
        forget(cloud, "servers", "volumes", "floating_ips")
