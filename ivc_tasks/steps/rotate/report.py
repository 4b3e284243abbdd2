"""What a rotation reports: its phases (with seconds), its actions, the outcome."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ivc_tasks.errors import CloudError, IvcError
from ivc_tasks.result import Action, StepResult

STEP = "rotate-instance"

@dataclass
class PhaseRecord:
    name: str
    seconds: float = 0.0
    ok: bool = True
    note: str = ""
    checks: list[dict[str, Any]] = field(default_factory=list)  # a gate's checks (gates.py)

    def to_dict(self) -> dict[str, Any]:
        out = {"phase": self.name, "seconds": round(self.seconds, 3), "ok": self.ok}
        if self.note:
            out["note"] = self.note
        if self.checks:
            out["checks"] = self.checks
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
    # the public addresses: [{"network", "old": [ip], "new": [ip], "kept": bool}]
    addresses: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "decision": self.decision, "reason": self.reason,
                "outcome": self.outcome, "old_id": self.old_id, "new_id": self.new_id,
                "generation": self.generation, "outage_seconds": _round(self.outage_seconds),
                "addresses": self.addresses,
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
            out += [f"  address on {a['network']}: {', '.join(a['old']) or '-'} "
                    + ("kept" if a["kept"] else f"-> {', '.join(a['new']) or '-'}"
                       + (" (changed)" if a["old"] != a["new"] else ""))
                    for a in r.addresses]
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
