"""Server lifecycle tasks: rotate-instance (alias rotate), status, destroy.

Each task resolves its flags, runs ONE ops function through ``_common.run_step`` and prints its
result (``--json``: one JSON object on stdout). Progress, and rotate's ``phase: <name>`` lines,
go to stderr.

Exit codes: 0 done; 1 a cloud operation failed (a rerun of rotate resumes from the servers'
metadata); 2 invalid input or configuration, nothing touched (and destroy without --yes);
3 rotate failed and rolled back, the old server serves as before; 4 another run holds the
server's lock.
"""

from invoke import Exit, task

from ivc_tasks.errors import EXIT_INVALID
from ivc_tasks.tasks._common import count_flag, require, run_step, seconds_flag, usage

DRY_RUN = "Print the plan and change nothing (reads the cloud to resolve names)."
JSON = "Print one JSON object on stdout (changed, actions, requests...); progress stays on stderr."




@task(aliases=["rotate"], iterable=["name"], help={
    "name": "A declared server to rotate (repeatable; required). A missing server is created; "
            "a half-done rotation is finished or rolled back first.",
    "parallel": "Rotate up to this many servers at once (default IVC_PARALLEL, 1); the first "
                "failure stops new work.",
    "stop": "Stop the old server gracefully before moving its volumes (default). "
            "--no-stop detaches them from the running server.",
    "timeout": "Seconds to wait for the new server to be ACTIVE (default IVC_BOOT_TIMEOUT).",
    "adopt": "Take over a server ivc did not make (its id, or its name): replace it by a "
             "managed server for --name the way rotate does, moving its declared volumes and "
             "floating IP (one --name; only while ivc has no server of that name).",
    "detach_undeclared": "Let volumes attached to the old server that the declarations do not "
                         "list stay behind, detached (default: the rotate refuses, exit 2).",
    "skip_checks": "Run no ready or healthy gate (the declared checks; emergencies only: "
                   "said loudly). Default: a new server failing its checks is rolled back.",
    "dry_run": DRY_RUN + " Shows each phase with the resources involved.",
    "json": JSON + " Adds phases (with seconds) and rotations.",
})
def rotate_instance(c, name=None, parallel=None, stop=True, timeout=None, adopt=None,
                    detach_undeclared=False, skip_checks=False, dry_run=False, json=False):
    """Replace servers by new ones (new generation), moving volumes and floating IP; resumable."""
    from ivc_tasks.steps.quota_check import rotate_within_quota
    from ivc_tasks.steps.rotate import RotateOptions

    with usage("rotate-instance", json=json):
        require(name, "--name", "the declared server(s) to rotate")
        workers = count_flag(1 if parallel is None else parallel, "--parallel")
        seconds = seconds_flag(timeout, "--timeout")
        if adopt is not None and not str(adopt).strip():
            raise Exit("rotate-instance: --adopt needs a server id or name", code=EXIT_INVALID)
    run_step("rotate-instance",
             lambda cloud, spec: rotate_within_quota(
                 cloud, spec, name, dry_run=dry_run, options=RotateOptions(
                 stop=stop, boot_timeout=seconds,
                 parallel=workers if parallel is not None else cloud.settings.parallel,
                 adopt=str(adopt).strip() if adopt else None,
                 detach_undeclared=detach_undeclared, skip_checks=skip_checks)),
             json=json)


@task(iterable=["name"], help={
    "name": "Only this declared server (repeatable; default: every server of the environment).",
    "check": "Also run each declared server's checks (docs/checks.md); exit 1 if one fails.",
    "json": "Print one JSON object on stdout (servers, each with its drift and rotate_due).",
})
def status(c, name=None, check=False, json=False):
    """Show every managed server: generation, state, addresses, volumes, and whether it drifted."""
    from ivc_tasks.steps.status import status as show

    if check:
        from ivc_tasks.steps.gates import status_with_checks

        show = status_with_checks
    run_step("status", lambda cloud, spec: show(cloud, spec, name or ()), json=json)


@task(help={
    "name": "The declared server to destroy (required).",
    "yes": "Really delete it (required unless --dry-run).",
    "keep_floating_ip": "Keep the floating IP ivc allocated for the server (unassociated; a later "
                        "create-instance reuses it). Default: release it.",
    "dry_run": DRY_RUN,
    "json": JSON,
})
def destroy(c, name=None, yes=False, keep_floating_ip=False, dry_run=False, json=False):
    """Delete a server, detaching its volumes first (never deleting them)."""
    from ivc_tasks.steps.destroy import destroy as run_destroy

    with usage("destroy", json=json):
        require(name, "--name", "the declared server to destroy")
        if not yes and not dry_run:
            raise Exit(f"destroy: refusing to delete server {name} without --yes (try --dry-run "
                       "to see what would go)", code=EXIT_INVALID)

    run_step("destroy", lambda cloud, spec: run_destroy(
        cloud, spec, name, keep_floating_ip=keep_floating_ip, dry_run=dry_run), json=json)


@task(help={
    "format": "ssh-config (default; `ssh -F <(invoke inventory) NAME`), ansible (a YAML "
              "inventory) or json.",
})
def inventory(c, format="ssh-config"):
    """Print every managed server (address from Neutron, user, key, known_hosts, groups)."""
    from ivc_tasks.steps.inventory import FORMATS
    from ivc_tasks.steps.inventory import inventory as listing

    with usage("inventory", json=format == "json"):
        if format not in FORMATS:
            raise Exit(f"inventory: --format {format!r}: use one of {', '.join(FORMATS)}",
                       code=EXIT_INVALID)
    run_step("inventory", lambda cloud, spec: listing(cloud, spec, fmt=format), json=False,
             raw=True)

