"""The deployment steps: ensure-secgroups, create-instance, attach-volume, and deploy (all four).

Each task resolves its flags, runs ONE ops function through ``_common.run_step`` and prints
its result. Every step is idempotent: a rerun reports ``changed: false`` and changes nothing.
Exit codes: 0 done, 1 a cloud operation failed (or, deploy, a new server's check failed), 2
invalid input or configuration (nothing
touched).
"""

from invoke import task

from ivc_tasks.tasks._common import count_flag, require, run_step, seconds_flag, usage

DRY_RUN = "Print the plan and change nothing (reads the cloud to resolve names)."
JSON = "Print one JSON object on stdout (changed, actions, requests...); progress stays on stderr."


@task(iterable=["name"], help={
    "name": "A declared security group to ensure (repeatable; default: all declared groups).",
    "prune": "Also delete the rules the declarations do not list (they are shown first).",
    "dry_run": DRY_RUN,
    "json": JSON,
})
def ensure_secgroups(c, name=None, prune=False, dry_run=False, json=False):
    """Create missing security groups and rules; with --prune, delete undeclared rules."""
    from ivc_tasks.steps.secgroups import ensure_secgroups as ensure

    run_step("ensure-secgroups",
             lambda cloud, spec: ensure(cloud, spec, name or (), prune=prune, dry_run=dry_run),
             json=json)


@task(help={
    "name": "The declared server to create (required).",
    "timeout": "Seconds to wait for ACTIVE (default IVC_BOOT_TIMEOUT).",
    "skip_checks": "Do not wait for the declared checks of the server this run creates "
                   "(emergencies only: said loudly).",
    "dry_run": DRY_RUN,
    "json": JSON,
})
def create_instance(c, name=None, timeout=None, skip_checks=False, dry_run=False, json=False):
    """Create a declared server if ivc has none (ACTIVE, floating IP), then wait for its checks."""
    from ivc_tasks.steps.instances import create_instance as create

    with usage("create-instance", json=json):
        require(name, "--name", "the declared server to create")
        seconds = seconds_flag(timeout, "--timeout")
    run_step("create-instance",
             lambda cloud, spec: create(cloud, spec, name, dry_run=dry_run, timeout=seconds,
                                        skip_checks=skip_checks),
             json=json)


@task(iterable=["volume"], help={
    "name": "The declared server to attach volumes to (required).",
    "volume": "One of the server's declared volumes, by name or id (repeatable; default: all).",
    "timeout": "Seconds to wait for each volume to be in-use (default IVC_VOLUME_TIMEOUT).",
    "dry_run": DRY_RUN,
    "json": JSON,
})
def attach_volume(c, name=None, volume=None, timeout=None, dry_run=False, json=False):
    """Attach a server's declared, existing volumes to it (never creates one)."""
    from ivc_tasks.steps.volumes import attach_volume as attach

    with usage("attach-volume", json=json):
        require(name, "--name", "the declared server to attach volumes to")
        seconds = seconds_flag(timeout, "--timeout")
    run_step("attach-volume",
             lambda cloud, spec: attach(cloud, spec, name, volume or (), dry_run=dry_run,
                                        timeout=seconds),
             json=json)


@task(help={
    "timeout": "Seconds to wait for each server to be ACTIVE (default IVC_BOOT_TIMEOUT).",
    "parallel": "Create servers and attach their volumes up to this many at once (default "
                "IVC_PARALLEL, 1); the first failure stops new work.",
    "skip_checks": "Do not wait for the declared checks of the servers this run creates "
                   "(emergencies only: said loudly).",
    "dry_run": DRY_RUN,
    "json": JSON,
})
def deploy(c, timeout=None, parallel=None, skip_checks=False, dry_run=False, json=False):
    """Ensure the security groups, then create every declared server and attach its volumes."""
    from ivc_tasks.steps.deploy import deploy as run_deploy

    with usage("deploy", json=json):
        seconds = seconds_flag(timeout, "--timeout")
        workers = None if parallel is None else count_flag(parallel, "--parallel")
    run_step("deploy", lambda cloud, spec: run_deploy(cloud, spec, dry_run=dry_run,
                                                       timeout=seconds, parallel=workers,
                                                       skip_checks=skip_checks),
             json=json)
