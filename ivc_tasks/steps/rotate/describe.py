"""What ``--dry-run`` prints: the phases the executor would run (the same ``plan_phases``), each
with the servers, volumes and floating IPs involved. No request changes anything."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.resources.markers import META_ROTATION, Markers
from ivc_tasks.resources.ports import addresses_of_port, public_addresses
from ivc_tasks.resources.resolve import list_floating_ips, server_ports
from ivc_tasks.resources.servers import META_RUN
from ivc_tasks.result import Action
from ivc_tasks.steps.gates import describe_gate
from ivc_tasks.steps.instances import describe_instance, redacted_request
from ivc_tasks.steps.rotate.decide import CREATE, FINISH, FORWARD
from ivc_tasks.steps.rotate.forward import new_server_request, old_fips
from ivc_tasks.steps.rotate.phases import plan_phases
from ivc_tasks.steps.rotate.preflight import Prepared, RotateOptions, lock_holder
from ivc_tasks.steps.rotate.report import PhaseRecord, RotationReport
from ivc_tasks.steps.rotate.state import RotationState, initial_state


@dataclasses.dataclass
class _View:
    """What the notes are written from."""

    cloud: Cloud
    prepared: Prepared
    options: RotateOptions
    report: RotationReport
    state: RotationState
    old: Any | None
    new: Any | None
    volumes: str
    fips: str
    old_ports: list[Any]  # the old server's ports (listed once)

    @property
    def target(self) -> str:
        return self.new.id if self.new is not None else "the new server"


def describe(cloud: Cloud, p: Prepared, options: RotateOptions) -> RotationReport:
    """The phases a rotation would go through, with the resources involved (no change)."""
    report = RotationReport(name=p.name, decision=p.decision.label, reason=p.decision.reason,
                            dry_run=True, warnings=list(p.warnings))
    held = lock_holder(cloud, p.name)
    if held:
        report.warnings.append(f"server {p.name}: {held}")
    state = initial_state(p)  # what the executor would start from
    old, new = state.old, state.new
    report.old_id = old.id if old is not None else None
    report.new_id = new.id if new is not None else None
    vols = ", ".join(f"{ref} ({vid})" for ref, vid in p.volumes.items()) or "none declared"
    ports = server_ports(cloud, old.id) if old is not None and state.kind != CREATE else []
    view = _View(cloud, p, options, report, state, old, new, vols,
                 "" if p.decision.kind == CREATE else _fips(cloud, old, new, ports), ports)
    names = plan_phases(state.kind, old_status=old.status if old is not None else None,
                        wait_for_new=p.decision.wait_for_new, keep_port=state.keep_port)
    for name in ["preflight", *names]:
        report.phases.append(PhaseRecord(name, note=NOTES[name](view)))
    return report


def _preflight(v: _View) -> str:
    return "references resolved; volumes " + v.volumes


def _rollback(v: _View) -> str:
    return (f"volumes {v.volumes} and floating IPs {v.fips or 'none'} back to {v.old.id}; "
            f"start it if it was ACTIVE; delete the new server "
            f"{v.new.id if v.new is not None else '(none)'}; clear the markers")


def _create(v: _View) -> str:
    p, report = v.prepared, v.report
    if p.decision.kind == CREATE:
        step = describe_instance(v.cloud, p.plan)
        report.actions += step.actions
        return "; ".join(str(a) for a in step.actions)
    if p.decision.kind in (FORWARD, FINISH):  # the crashed run made it: wait for it
        return f"wait for the new server {v.new.id} to be ACTIVE (else roll back)"
    plan = p.plan
    body, gen = new_server_request(v.cloud, p, v.state, old_fips(v.cloud, v.old.id, v.old_ports))
    report.generation = gen
    body["metadata"] = {k: ("<this run>" if k in (META_RUN, META_ROTATION) else val)
                        for k, val in body["metadata"].items()}
    report.actions.append(Action("create", "server", p.name, f"generation {gen}", {
        "request": redacted_request(body, plan.declared.userdata)}))
    return (f"create server {p.name} generation {gen}: image {plan.image.name}, flavor "
            f"{plan.flavor.name}, networks {', '.join(n.name for n in plan.networks)}; "
            "wait ACTIVE" + _addresses(v))


def _addresses(v: _View) -> str:
    """What the rotation does to the old server's public addresses (a note; a warning for
    each that changes)."""
    plan, name = v.prepared.plan, v.prepared.name
    kept = [port for port in plan.ports.values() if port is not None]
    before = public_addresses([*v.old_ports, *kept], plan.networks)
    notes = []
    for net in plan.networks:
        if net.name not in before:
            continue
        now = ", ".join(before[net.name])
        if plan.ports.get(net.id) is not None:
            notes.append(f"keeps {now} on {net.name} (port {plan.ports[net.id].id})")
            continue
        notes.append(f"a NEW address on {net.name} (now {now})")
        fix = ("ivc makes the port now, which keeps the address from the next rotate on"
               if net.id in plan.ports else
               f'keep_address = ["{net.name}"] in [servers.{name}] keeps it')
        v.report.warnings.append(f"server {name}: the rotate changes its public address on "
                                 f"{net.name} (now {now}); {fix}")
    return "; " + "; ".join(notes) if notes else ""


def _move_port(v: _View) -> str:
    ports = [port for port in v.prepared.plan.ports.values() if port is not None]
    return (f"detach port {', '.join(f'{p.id} ({addresses_of_port(p)})' for p in ports)} from "
            f"the stopped {v.old.id}; the new server is created with it (same IP and MAC)")


def _stop(v: _View) -> str:
    if not v.options.stop:
        return "skipped (--no-stop)"
    if v.old.status == "ACTIVE":
        return f"stop {v.old.id} and wait SHUTOFF"
    return f"{v.old.id} is {v.old.status}: no stop"


def _move_volumes(v: _View) -> str:
    return (f"{v.volumes}: detach from {v.old.id if v.old is not None else '-'}, attach to "
            f"{v.target}")


def _move_fips(v: _View) -> str:
    return f"{v.fips or 'none'} to {v.target}'s port (one update each)"


def _delete_old(v: _View) -> str:
    return f"delete {v.old.id} and wait until gone"


def _finish(v: _View) -> str:
    return f"clear the rotation markers of {v.target}"


def _gate(gate: str) -> Callable[[_View], str]:
    def note(v: _View) -> str:
        what = describe_gate(v.prepared.declared, skip=v.options.skip_checks, gate=gate)
        return f"{what} on {v.target}; a failure rolls back"
    return note


NOTES: dict[str, Callable[[_View], str]] = {
    "ready-gate": _gate("ready"), "healthy-gate": _gate("healthy"),
    "preflight": _preflight, "rollback": _rollback, "create": _create, "stop": _stop,
    "move-port": _move_port, "move-volumes": _move_volumes, "move-floating-ip": _move_fips,
    "delete-old": _delete_old,
    "finish": _finish,
}


def _fips(cloud: Cloud, old: Any | None, new: Any | None, old_ports: list[Any]) -> str:
    recorded = Markers.of(new).fips or Markers.of(old).fips
    listed = list_floating_ips(cloud)
    if old is not None and not recorded:
        ports = {p.id for p in old_ports}
        recorded = {f.id: (f.port_id, "") for f in listed if f.port_id in ports}
    by_id = {f.id: f for f in listed}
    return ", ".join(f"{by_id[fid].floating_ip_address} ({fid})" if fid in by_id else fid
                     for fid in recorded)
