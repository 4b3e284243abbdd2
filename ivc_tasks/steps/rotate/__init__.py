"""rotate-instance: replace a declared server by a new one, safely, resuming after any crash.

Where to look (one job per file):
  decide.py     the pure decision from one server listing (create, rotate, resume, conflict)
  preflight.py  every check before anything changes; RotateOptions
  phases.py     the phase list, shared by the executor and the dry run
  state.py      the rotation's state (one frozen record), what it starts from, a phase's Run
  executor.py   runs the phases of one server, applies what each learned, the failure rules
  forward.py    the forward phases (create, stop, move-port, move-volumes, move-floating-ip,
                delete-old, finish) and the new server's create request
  rollback.py   everything back onto the old server
  describe.py   what --dry-run prints
  report.py     what a rotation reports
The crash-resume markers (the new server's metadata, a kept port's tags) are defined, read and
written in ``ivc_tasks.resources.markers`` (status reads them too).

And here, the entry point: preflight every server (an invalid run changes nothing, not even a
lock), lock them all, look again at their servers (another run may have changed them: then
preflight again), then run the rotations (up to ``parallel`` side by side, ``run_jobs``: the
first failure stops new rotations, running ones finish). Exactly one run works on a server at
a time: see ``ivc_tasks.resources.lock``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from ivc_tasks.cloud import Cloud
from ivc_tasks.errors import ConfigError, IvcError, Locked
from ivc_tasks.hints import listed
from ivc_tasks.resources.lock import ServerLock, acquire_all, release_all
from ivc_tasks.resources.poller import shared_poller
from ivc_tasks.resources.resolve import (
    find_images,
    forget,
    list_flavors,
    list_floating_ips,
    list_keypairs,
    list_networks,
    list_security_groups,
    list_servers,
    list_volumes,
    prefetch,
)
from ivc_tasks.resources.servers import declared_server, managed_servers
from ivc_tasks.spec import Spec
from ivc_tasks.steps.checks import console_preflight
from ivc_tasks.steps.parallel import run_jobs
from ivc_tasks.steps.rotate.decide import Decision, Seen, decide
from ivc_tasks.steps.rotate.describe import describe
from ivc_tasks.steps.rotate.executor import Rotation
from ivc_tasks.steps.rotate.preflight import Prepared, RotateOptions, preflight
from ivc_tasks.steps.rotate.report import PhaseRecord, RotateFailed, RotateResult, RotationReport
from ivc_tasks.steps.secgroups import (
    SecGroupsPlan,
    apply_secgroups,
    describe_secgroups,
    plan_secgroups,
)

log = logging.getLogger("ivc")


def rotate(cloud: Cloud, spec: Spec, names: Iterable[str], *, options: RotateOptions | None = None,
           dry_run: bool = False) -> RotateResult:
    """Rotate (replace) each declared server of ``names``, or resume a rotation under way.

    Every server is preflighted, then locked, before anything changes; then up to
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
                          f"{listed(spec.servers, none='none declared')}")
    for name in names:
        declared_server(spec, name)
    result = RotateResult(dry_run=dry_run)
    start = cloud.clock()
    for name in names:
        log.info("phase: preflight (server %s)", name)
    # everything is checked before the lock is taken: an invalid run changes nothing at all
    if options.adopt and len(names) != 1:
        raise ConfigError(f"--adopt {options.adopt!r}: adopt one server at a time (one --name)")
    sg_plan, prepared = _preflight_all(cloud, spec, names, options)
    if dry_run:
        result.preflight = describe_secgroups(sg_plan) if sg_plan is not None else None
        result.rotations = [describe(cloud, p, options) for p in prepared]
        return result
    locks = acquire_all(cloud, names, op="rotate")
    try:
        seen = _servers_seen(cloud, names)
        forget(cloud, "servers")
        if _servers_seen(cloud, names) != seen:  # another run changed them meanwhile: again
            log.info("the servers changed while the lock was taken; checking again")
            forget(cloud, "volumes", "floating_ips", "security_groups")
            sg_plan, prepared = _preflight_all(cloud, spec, names, options)
        if sg_plan is not None:
            result.preflight = apply_secgroups(cloud, sg_plan)
            ids = {**sg_plan.ids, **result.preflight.info.get("ids", {})}
            for p in prepared:
                p.group_ids = ids
        return _run_all(cloud, prepared, options, {lk.name: lk for lk in locks}, result,
                        preflight_seconds=cloud.clock() - start)
    finally:
        release_all(locks)


def _servers_seen(cloud: Cloud, names: list[str]) -> list[tuple]:
    """What the decisions are made from: each name's servers, their states and markers."""
    return [(s.id, s.status, s.task_state, sorted((s.metadata or {}).items()))
            for name in names for s in managed_servers(cloud, name)]


def _preflight_all(cloud: Cloud, spec: Spec, names: list[str], options: RotateOptions
                   ) -> tuple[SecGroupsPlan | None, list[Prepared]]:
    """Preflight every server (the listings side by side, one request each) and plan the
    security groups they use; nothing is changed.

    :raises ConfigError: invalid input or a missing resource.
    """
    groups = sorted({g for n in names for g in spec.servers[n].security_groups
                     if g in spec.secgroups})
    images = sorted({spec.servers[n].image for n in names})
    prefetch(cloud, list_servers, list_volumes, list_floating_ips, list_networks,
             list_flavors, list_keypairs,
             *([list_security_groups] if any(spec.servers[n].security_groups
                                             for n in names) else []),
             *(lambda c, ref=ref: find_images(c, ref) for ref in images))
    sg_plan = plan_secgroups(cloud, spec, groups) if groups else None
    pending = {gp.declared.name for gp in sg_plan.groups if gp.existing is None} \
        if sg_plan else set()
    prepared = [preflight(cloud, spec, name, pending_groups=pending, options=options)
                for name in names]
    if not options.skip_checks:  # only cloud_init declared, the console refused: exit 2 now
        console_preflight(cloud, [p.declared for p in prepared], next(
            (p.decision.old.id for p in prepared if p.decision.old is not None), None))
    return sg_plan, prepared


def _run_all(cloud: Cloud, prepared: list[Prepared], options: RotateOptions,
             locks: Mapping[str, ServerLock], result: RotateResult, *,
             preflight_seconds: float = 0.0) -> RotateResult:
    reports = {p.name: RotationReport(name=p.name, decision=p.decision.label,
                                      reason=p.decision.reason, warnings=list(p.warnings))
               for p in prepared}
    result.rotations = list(reports.values())

    def one(p: Prepared) -> None:
        view = cloud.worker_view()
        reports[p.name].phases.append(PhaseRecord("preflight", preflight_seconds,
                                                  note=p.decision.reason))
        Rotation(view, p, options, locks.get(p.name), reports[p.name]).run()

    several = options.parallel > 1 and len(prepared) > 1
    with shared_poller(cloud, active=several):  # one list request per interval for all waits
        # the first failure stops new work; running rotations finish
        outcomes = run_jobs({p.name: (lambda p=p: one(p)) for p in prepared},
                            workers=options.parallel, label=several)
    forget(cloud, "servers", "volumes", "floating_ips")
    failures: dict[str, IvcError] = {}
    for name, outcome in outcomes.items():
        if not outcome.started:
            reports[name].error = "not started: another rotation of this run failed first"
        elif isinstance(outcome.error, IvcError):
            reports[name].error = str(outcome.error)
            failures[name] = outcome.error
        elif outcome.error is not None:  # not an IvcError: a bug
            raise outcome.error
    if not failures:
        return result
    if len(prepared) == 1:
        exc = next(iter(failures.values()))
        exc.result = result  # type: ignore[attr-defined]
        raise exc
    raise RotateFailed([(n, failures[n]) for n in reports if n in failures], result)


__all__ = ["rotate", "RotateOptions", "RotateResult", "RotateFailed", "decide", "Decision",
           "Seen", "Locked"]
