"""The project's quota and use, and whether a plan's peak need fits, before anything changes.

Read with two requests: Nova's ``GET /limits`` (instances, cores, RAM: limit and use) and
Neutron's ``GET /v2.0/quotas/{project}/details.json`` (ports and floating IPs: limit, use and
reservations). A limit of -1 is unlimited. A cloud that refuses either (403, 404) or leaves a
field out is assumed to allow what it hides; the caller says so once (``Quota.hidden``).

``Need`` is what a plan takes at its peak: every server it creates, plus, per rotation in
flight, one extra server with its cores, RAM and ports (the old one is deleted only after the
new one took over); new floating IPs. ``check`` refuses a need that does not fit with a
``QuotaTooLow`` (exit 2) naming each quota, its limit, use and need, and how many rotations
side by side would fit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ivc_tasks.cloud import Cloud, CloudCallError
from ivc_tasks.errors import ConfigError

log = logging.getLogger("ivc")
FIELDS = ("instances", "cores", "ram", "ports", "floating_ips")
UNITS = {"ram": " MiB"}


class QuotaTooLow(ConfigError):
    """The plan needs more than the project's quota leaves (exit 2, nothing changed)."""


@dataclass
class Quota:
    """``free[field]``: what is left (None: unlimited or hidden); ``limit`` and ``used``."""

    limit: dict[str, int | None] = field(default_factory=dict)
    used: dict[str, int] = field(default_factory=dict)
    hidden: list[str] = field(default_factory=list)

    def free(self, name: str) -> int | None:
        limit = self.limit.get(name)
        if limit is None or limit < 0:
            return None
        return limit - self.used.get(name, 0)


@dataclass
class Need:
    """A plan's peak need: ``fixed`` (creates, new floating IPs) plus ``per_rotation`` times
    the rotations in flight (``in_flight``, at most ``rotations``)."""

    fixed: dict[str, int] = field(default_factory=dict)
    per_rotation: dict[str, int] = field(default_factory=dict)  # the largest rotation's
    rotations: int = 0
    in_flight: int = 1
    flag: str = "--max-unavailable"

    def total(self, name: str, in_flight: int | None = None) -> int:
        n = min(self.rotations, self.in_flight if in_flight is None else in_flight)
        return self.fixed.get(name, 0) + n * self.per_rotation.get(name, 0)


def read_quota(cloud: Cloud) -> Quota:
    """The project's limits and use (two requests; cached for the run)."""
    if "quota" in cloud.listings:
        return cloud.listings.get("quota")
    conn = cloud.conn
    quota = Quota()
    try:
        absolute = cloud.call("get compute limits", lambda: conn.compute.get_limits()).absolute
        for name, limit, used in (("instances", "instances", "instances_used"),
                                  ("cores", "total_cores", "total_cores_used"),
                                  ("ram", "total_ram", "total_ram_used")):
            value = getattr(absolute, limit, None)
            if value is None:
                quota.hidden.append(name)
                continue
            quota.limit[name] = int(value)
            quota.used[name] = int(getattr(absolute, used, 0) or 0)
    except CloudCallError as exc:
        if exc.status not in (403, 404, 501):
            raise
        quota.hidden += ["instances", "cores", "ram"]
    try:
        details = cloud.call("get network quota details", lambda: conn.network.get_quota(
            conn.current_project_id, details=True))
        for name, attr in (("ports", "ports"), ("floating_ips", "floating_ips")):
            value = getattr(details, attr, None)
            if not isinstance(value, dict) or value.get("limit") is None:
                quota.hidden.append(name)
                continue
            quota.limit[name] = int(value["limit"])
            quota.used[name] = int(value.get("used") or 0) + int(value.get("reserved") or 0)
    except CloudCallError as exc:
        if exc.status not in (403, 404, 501):
            raise
        quota.hidden += ["ports", "floating_ips"]
    cloud.listings.put("quota", quota)
    return quota


def fits(quota: Quota, need: Need, in_flight: int) -> bool:
    return all(quota.free(f) is None or need.total(f, in_flight) <= quota.free(f)
               for f in FIELDS)


def check(cloud: Cloud, need: Need) -> list[str]:
    """Refuse a need the quota cannot hold; the warnings to show (a hidden quota).

    :raises QuotaTooLow: naming each quota short, its limit, use and need, and the
        ``--parallel``/``--max-unavailable`` that would fit.
    :raises CloudCallError: a quota request failed (other than refused).
    """
    if not any(need.fixed.values()) and not (need.rotations and any(need.per_rotation.values())):
        return []
    quota = read_quota(cloud)
    warnings = []
    if quota.hidden:
        warnings.append(f"the cloud does not show the quota of {', '.join(quota.hidden)}: "
                        "assumed to allow what this run needs")
    short = []
    for name in FIELDS:
        free = quota.free(name)
        total = need.total(name)
        if free is not None and total > free:
            unit = UNITS.get(name, "")
            short.append(f"{name}: limit {quota.limit[name]}{unit}, used "
                         f"{quota.used.get(name, 0)}{unit}, this run needs {total}{unit} more")
    if not short:
        return warnings
    hint = ""
    if need.rotations and need.in_flight > 1:
        fitting = [n for n in range(need.in_flight - 1, 0, -1) if fits(quota, need, n)]
        hint = (f"; {need.flag} {fitting[0]} would fit" if fitting else
                f"; even {need.flag} 1 does not fit")
    raise QuotaTooLow("quota too low for this run (nothing changed): " + "; ".join(short)
                      + hint + "; raise the project's quota or free some of it")


def server_need(flavor: Any, ports: int) -> dict[str, int]:
    """One server's need: an instance, its flavor's cores and RAM, ``ports`` new ports."""
    return {"instances": 1, "cores": int(getattr(flavor, "vcpus", 0) or 0),
            "ram": int(getattr(flavor, "ram", 0) or 0), "ports": ports}


def add(into: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        into[key] = into.get(key, 0) + value


def largest(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: max(a.get(k, 0), b.get(k, 0)) for k in set(a) | set(b)}


def plan_need(cloud: Cloud, spec: Any, *, creates: list[str] = (), rotations: list[str] = (),
              in_flight: int = 1, flag: str = "--max-unavailable") -> Need:
    """The peak need of creating ``creates`` and rotating ``rotations``, ``in_flight`` at once
    (from the listings: flavors, floating IPs)."""
    from ivc_tasks.resources.floating_ips import floating_marker
    from ivc_tasks.resources.resolve import (
        list_flavors,
        list_floating_ips,
        matching,
    )

    need = Need(rotations=len(rotations), in_flight=in_flight, flag=flag)
    if not creates and not rotations:
        return need  # nothing to add: no request at all
    flavors = list_flavors(cloud)
    markers = {f.description for f in list_floating_ips(cloud)} if any(
        spec.servers[n].floating_ip for n in creates) else set()

    def one(name: str, *, rotating: bool) -> dict[str, int]:
        declared = spec.servers[name]
        found = matching(flavors, declared.flavor)
        kept = len(declared.keep_address) if rotating else 0
        return server_need(found[0] if found else None, max(len(declared.networks) - kept, 0))

    for name in creates:
        add(need.fixed, one(name, rotating=False))
        if spec.servers[name].floating_ip and floating_marker(cloud.env, name) not in markers:
            add(need.fixed, {"floating_ips": 1})
    for name in rotations:
        need.per_rotation = largest(need.per_rotation, one(name, rotating=True))
    return need
