"""converge's plan: what each server of the environment needs, and why, from ONE status.

The drift is ``steps.status``'s (one computation, the one ``invoke status`` shows): each
declared server is

  * ``create``: no server of that name (ivc's) exists;
  * ``rotate``: a rotation is under way, or a field only a new server applies differs (the
    image the declared name resolves to, flavor, rendered user_data, networks, keypair);
  * ``update``: only what Nova changes in place differs (security groups, declared metadata,
    a user_data digest recorded in the old form, a declared volume or floating IP missing);
  * ``unchanged``;

and each managed server of this environment that is no longer declared is ``undeclared``
(listed with what it holds; ``--prune`` deletes it the way ``destroy`` does). A server of a
declared name that ivc did not make is never touched (``invoke rotate --adopt`` takes it over).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.resources.resolve import find_images, list_images, value_of
from ivc_tasks.spec import Spec
from ivc_tasks.steps.status import (
    IN_PLACE_FIELDS,
    ROTATE_FIELDS,
    USERDATA_RECORD,
    ServerStatus,
    status,
)

CREATE, UPDATE, ROTATE, UNCHANGED, UNDECLARED = (
    "create", "update", "rotate", "unchanged", "undeclared")
UPDATE_FIELDS = (*IN_PLACE_FIELDS, USERDATA_RECORD, "volumes", "floating_ip")


@dataclass
class ServerPlan:
    """One server's part of a converge: its action, the reasons in words, and the drift."""

    name: str
    action: str
    reasons: list[str] = field(default_factory=list)
    status: ServerStatus | None = None
    drift: dict[str, dict[str, Any]] = field(default_factory=dict)  # field -> drift entry
    outcome: str | None = None
    seconds: float | None = None
    error: str | None = None

    def to_dict(self, *, dry_run: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "action": self.action,
                               "reasons": self.reasons, "id": self.status.id if self.status
                               else None}
        if self.action == UNDECLARED and self.status is not None:
            out["holds"] = holds(self.status)
        if not dry_run:
            out.update(outcome=self.outcome, seconds=None if self.seconds is None
                       else round(self.seconds, 1))
            if self.error:
                out["error"] = self.error
        return out

    def line(self, *, dry_run: bool) -> str:
        why = f": {'; '.join(self.reasons)}" if self.reasons else ""
        head = f"{self.name}: {self.action}{why}"
        if dry_run or self.outcome is None:
            return head
        took = f" in {self.seconds:.1f} s" if self.seconds else ""
        return f"{head} -> {self.outcome}{took}" + (f" ({self.error})" if self.error else "")


def holds(item: ServerStatus) -> dict[str, Any]:
    """What an undeclared server holds: its volumes, floating IPs and addresses."""
    return {"volumes": [v.get("name") or v["id"] for v in item.volumes],
            "floating_ips": list(item.floating_ips), "addresses": item.addresses,
            "status": item.status, "generation": item.generation}


def image_reason(cloud: Cloud, ref: str, item: ServerStatus) -> str:
    """``image 'Debian 12' now resolves to 5c1… (was 9ab…), published 2026-12-01``."""
    old_id = item.image.get("id") or "?"
    candidates = find_images(cloud, ref) or [i for i in list_images(cloud)
                                             if ref in (i.id, i.name)]
    new = max(candidates, key=lambda i: str(value_of(i, "created_at") or ""), default=None)
    if new is None:
        return f"image {ref!r} no longer resolves to {_short(old_id)}"
    published = str(value_of(new, "created_at") or "")[:10]
    was = item.image.get("name")
    was = f"{_short(old_id)}, named {was!r} now" if was and was != ref else _short(old_id)
    return (f"image {ref!r} now resolves to {_short(new.id)} (was {was})"
            + (f", published {published}" if published else ""))


def _short(value: str) -> str:
    return value[:8] + "…" if len(value) > 8 else value


def _words(cloud: Cloud, spec: Spec, name: str, entry: dict[str, Any], item: ServerStatus
           ) -> str:
    kind, want, have = entry["field"], entry["declared"], entry["actual"]
    if kind == "image":
        return image_reason(cloud, want, item)
    if kind == "userdata":
        return f"user_data changed (digest {have} -> {want})"
    if kind == USERDATA_RECORD:
        return f"user_data digest recorded in the old form ({have}): re-recorded as {want}"
    if kind == "volumes":
        return f"declared volumes {', '.join(want)}: {have}"
    if kind == "floating_ip":
        return "no floating IP (declared)"
    if kind == "metadata":
        return "metadata " + ", ".join(f"{k}={v!r} (is {have.get(k)!r})" for k, v in want.items())
    if kind == "security_groups":
        added, removed = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        parts = [f"+{g}" for g in added] + [f"-{g}" for g in removed]
        return f"security groups {' '.join(parts)}"
    return f"{kind} {have!r} -> {want!r}"


def plan_converge(cloud: Cloud, spec: Spec) -> list[ServerPlan]:
    """Every server's action and reasons (listings only; nothing is changed).

    :raises CloudCallError: a listing failed.
    """
    report = status(cloud, spec)
    plans: list[ServerPlan] = []
    for item in report.servers:
        if not item.managed:
            continue  # a server ivc did not make: status names it; converge leaves it be
        if not item.declared:
            plans.append(ServerPlan(item.name, UNDECLARED, status=item, reasons=[
                "no longer declared: left alone (--prune deletes it, keeping its volumes)"]))
            continue
        if any(p.name == item.name for p in plans):
            continue  # an older generation of a name already planned (a rotation's leftovers)
        if item.id is None:
            plans.append(ServerPlan(item.name, CREATE, status=item, reasons=["no server"]))
            continue
        drift = {d["field"]: d for d in item.drift}
        rotate = [f for f in ROTATE_FIELDS if f in drift]
        update = [f for f in UPDATE_FIELDS if f in drift]
        if item.rotation:
            plan = ServerPlan(item.name, ROTATE, status=item, drift=drift, reasons=[
                f"rotation {item.rotation['id']} under way ({item.rotation['role']}): finished "
                "or rolled back"])
        elif item.status.upper().startswith("ERROR"):
            plan = ServerPlan(item.name, ROTATE, status=item, drift=drift,
                              reasons=[f"server {item.id} is in ERROR: only a new one serves"])
        elif rotate:
            plan = ServerPlan(item.name, ROTATE, status=item, drift=drift,
                              reasons=[_words(cloud, spec, item.name, drift[f], item)
                                       for f in rotate])
        elif update:
            plan = ServerPlan(item.name, UPDATE, status=item, drift=drift,
                              reasons=[_words(cloud, spec, item.name, drift[f], item)
                                       for f in update])
        else:
            plan = ServerPlan(item.name, UNCHANGED, status=item)
        plans.append(plan)
    return plans
