"""The converge task: bring the environment to its declarations (``steps.converge``).

Exit codes: 0 done (or nothing to do); 1 a cloud operation failed; 2 invalid input or quota too
low, nothing changed; 3 a rotation failed and every failure rolled back (the old servers serve
as before; the servers not started are named); 4 another run holds a lock.
"""

from invoke import task

from ivc_tasks.tasks._common import count_flag, run_step, usage


@task(help={
    "max_unavailable": "Rotate at most this many servers at once (default 1); the first "
                       "failed rotation stops new ones.",
    "prune": "Delete the servers this environment made that are no longer declared, after the "
             "rotations (volumes detached and kept, ivc's floating IP released).",
    "dry_run": "Print each server's action and reasons; change nothing.",
    "json": "Print one JSON object on stdout: servers [{name, action, reasons, outcome, "
            "seconds}], changed, requests...; progress stays on stderr.",
})
def converge(c, max_unavailable=1, prune=False, dry_run=False, json=False):
    """Make the environment match its declarations: create, update in place, rotate what drifted."""
    from ivc_tasks.steps.converge import converge as run_converge

    with usage("converge", json=json):
        workers = count_flag(max_unavailable, "--max-unavailable")
    run_step("converge", lambda cloud, spec: run_converge(
        cloud, spec, max_unavailable=workers, prune=prune, dry_run=dry_run), json=json)
