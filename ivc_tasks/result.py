"""What an ops step reports: the actions it took (or would take, in a dry run) and what it found.

Nothing here talks to the cloud, and nothing here may hold a secret or rendered user_data: a
server's user_data appears as ``{"sha256": ..., "bytes": ...}`` only (see ``userdata_summary``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ivc_tasks.userdata import userdata_sha256


@dataclass(frozen=True)
class Action:
    """One change: ``verb`` (create, update, delete, attach, associate) a ``kind`` named ``name``.

    ``summary`` says the rest in a few words; ``detail`` holds printable facts (ids, the redacted
    create request). Never secrets.
    """

    verb: str
    kind: str
    name: str
    summary: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"action": self.verb, "kind": self.kind, "name": self.name, **self.detail}
        if self.summary:
            out["summary"] = self.summary
        return out

    def __str__(self) -> str:
        return f"{self.verb} {self.kind} {self.name}" + (f": {self.summary}" if self.summary else "")


@dataclass
class StepResult:
    """The outcome of one step (or its plan, with ``dry_run``).

    ``changed`` is True when the step changed something in the cloud (never in a dry run);
    ``actions`` lists the changes made, or planned in a dry run.
    """

    step: str
    target: str | None = None
    dry_run: bool = False
    actions: list[Action] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions) and not self.dry_run

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "target": self.target,
            "changed": self.changed,
            "dry_run": self.dry_run,
            "actions": [a.to_dict() for a in self.actions],
            "info": self.info,
            "warnings": self.warnings,
        }

    def lines(self) -> list[str]:
        """Human summary lines (for stderr)."""
        head = f"{self.step}" + (f" {self.target}" if self.target else "")
        if not self.actions:
            return [f"{head}: nothing to do" + (" (dry run)" if self.dry_run else "")]
        verb = "would" if self.dry_run else "did"
        return [f"{head}: {verb} {action}" for action in self.actions]


def userdata_summary(data: bytes | None) -> dict[str, Any] | None:
    """Return what may be shown of rendered user_data: its sha256 and size, never the bytes."""
    if data is None:
        return None
    return {"sha256": userdata_sha256(data), "bytes": len(data)}
