"""devcloud.*: the local OpenStack on loopback (keystone, glance, placement, nova, neutron, cinder)."""

import json as jsonlib

from invoke import Exit, task


def _lifecycle():
    # Imported here so that `invoke --list` stays fast.
    from ivc_tasks.devcloud import lifecycle
    return lifecycle


@task(help={"json": "Print a JSON summary on stdout (progress stays on stderr)."})
def up(c, json=False):
    """Install (first use), start and seed the local cloud; a rerun changes nothing."""
    lifecycle = _lifecycle()
    try:
        result = lifecycle.up()
    except lifecycle.DevcloudError as exc:
        raise Exit(f"devcloud.up failed: {exc}", code=1)
    except Exception as exc:  # a cloud call while seeding: say what, without a traceback
        raise Exit(f"devcloud.up failed: {type(exc).__name__}: {exc}", code=1)
    if json:
        print(jsonlib.dumps(result.__dict__, indent=2))


@task
def down(c):
    """Stop exactly the processes this checkout's devcloud started (PID files)."""
    _lifecycle().down()


@task(help={"json": "Print the table as JSON on stdout."})
def status(c, json=False):
    """Show each service of the local cloud: port, PID, running, answering."""
    rows = _lifecycle().status()
    if json:
        print(jsonlib.dumps(rows, indent=2))
    else:
        print(f"{'service':18} {'port':>5} {'pid':>8}  {'running':8} answering")
        for row in rows:
            pid = "-" if row["pid"] is None else str(row["pid"])
            if row["owner"] == "other":
                pid += "*"
            print(f"{row['service']:18} {row['port'] or '':>5} {pid:>8}  "
                  f"{'yes' if row['running'] else 'no':8} {'yes' if row['answering'] else 'no'}")
        if any(r["owner"] == "other" for r in rows):
            print("* not started by this checkout's devcloud (the machine's, or another checkout's)")
    if not all(r["answering"] for r in rows):
        raise Exit(code=3)


@task
def reset(c):
    """Wipe the cloud's data but keep the install, then bring it up on a clean slate."""
    lifecycle = _lifecycle()
    try:
        lifecycle.reset()
    except lifecycle.DevcloudError as exc:
        raise Exit(f"devcloud.reset failed: {exc}", code=1)
