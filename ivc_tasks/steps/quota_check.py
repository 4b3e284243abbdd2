"""Quota before any change, for deploy and rotate (converge checks its own plan): the plan's
peak need against the project's quota (``resources.quota``); too little is exit 2 with zero
mutating requests. A quota the cloud hides is assumed to allow the run, said once (a warning
on stderr)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.resources.quota import check, plan_need
from ivc_tasks.spec import Spec

log = logging.getLogger("ivc")


def check_quota(cloud: Cloud, spec: Spec, *, creates: Iterable[str] = (),
                rotations: Iterable[str] = (), in_flight: int = 1,
                flag: str = "--max-unavailable") -> list[str]:
    """Refuse (``QuotaTooLow``, exit 2) a plan the quota cannot hold; the warnings, logged.

    :raises QuotaTooLow: naming each quota, its limit, use and need.
    """
    need = plan_need(cloud, spec, creates=[n for n in creates if n in spec.servers],
                     rotations=[n for n in rotations if n in spec.servers],
                     in_flight=in_flight, flag=flag)
    warnings = check(cloud, need)
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


def rotate_within_quota(cloud: Cloud, spec: Spec, names: Iterable[str], *, options: Any,
                        dry_run: bool = False) -> Any:
    """``steps.rotate.rotate`` after the quota check (one extra server per rotation in
    flight, ``--parallel`` of them).

    :raises QuotaTooLow: too little quota (nothing changed, no lock taken).
    """
    from ivc_tasks.steps.rotate import rotate

    names = list(names or ())
    if not dry_run and names:
        check_quota(cloud, spec, rotations=names, in_flight=options.parallel, flag="--parallel")
    return rotate(cloud, spec, names, options=options, dry_run=dry_run)
