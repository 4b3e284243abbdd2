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
        raise Exit(f"devcloud.up failed: {exc}", code=1) from None
    except Exception as exc:  # noqa: BLE001 (a cloud call while seeding: say what, without a traceback)
        raise Exit(f"devcloud.up failed: {type(exc).__name__}: {exc}", code=1) from None
    if json:
        print(jsonlib.dumps(result.__dict__, indent=2))


@task
def down(c):
    """Stop this checkout's devcloud: its processes (PID files), its guests, their network."""
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
        lat = _lifecycle().latency()
        honoured = [n for n, ok in lat["honoured_by"].items() if ok]
        print(f"latency: {lat['mode']}" + (f" (switches off at {lat['until']:.0f})"
                                           if lat["until"] else "")
              + ("" if len(honoured) == len(lat["honoured_by"]) else
                 f"; honoured by {', '.join(honoured) or 'no service'}: the others predate it "
                 "(DEVCLOUD_LATENCY=<mode> invoke devcloud.up restarts them)"))
    if not all(r["answering"] for r in rows):
        raise Exit(code=3)


@task(help={"mode": "off, real (boot ~30 s, stop ~5 s, delete ~3 s, attach/detach ~2 s), or a "
                     "factor of those (0.2).",
             "minutes": "A slow mode switches itself off after this many minutes (default 30; "
                        "0: never).",
             "only": "Slow only the servers and volumes whose name starts with this prefix."})
def latency(c, mode=None, minutes=30, only=None):
    """Show or set the fake drivers' simulated latency (takes effect at once, no restart)."""
    lifecycle = _lifecycle()
    if mode is not None:
        try:
            lifecycle.set_latency(mode, minutes=float(minutes) or None, only=only)
        except (lifecycle.DevcloudError, ValueError) as exc:
            raise Exit(f"devcloud.latency: {exc}", code=2) from None
    print(jsonlib.dumps(lifecycle.latency()))


@task
def reset(c):
    """Wipe the cloud's data but keep the install, then bring it up on a clean slate."""
    lifecycle = _lifecycle()
    try:
        lifecycle.reset()
    except lifecycle.DevcloudError as exc:
        raise Exit(f"devcloud.reset failed: {exc}", code=1) from None


@task(help={"mode": "on or off (default: show the switch).",
            "only": "Apply MODE only to servers whose names start with this prefix (the rule "
                    "for the longest matching prefix wins; without --only, MODE becomes the "
                    "default and the prefix rules go)."})
def guests(c, mode=None, only=None):
    """Show or switch the servers' guests (read at each boot: no restart)."""
    from ivc_tasks.devcloud import guests as lib
    from ivc_tasks.devcloud.layout import default_layout
    layout = default_layout()
    if mode is not None:
        try:
            lib.set_mode(mode, only, layout)
        except ValueError as exc:
            raise Exit(f"devcloud.guests: {exc}", code=2) from None
    print(lib.describe_mode(lib.mode(layout)))


@task(help={"name": "The server's name.",
            "project": "Its project (default ivc, the demo's)."})
def guest(c, name, project="ivc"):
    """Run a command in a server's guest: devcloud.guest NAME -- CMD...; exits with its status."""
    import shlex
    import sys

    from ivc_tasks.devcloud import guests as lib
    from ivc_tasks.devcloud import seed
    from ivc_tasks.devcloud.bootstrap import DevcloudError
    from ivc_tasks.devcloud.layout import default_layout, load_secrets
    # the words after `--` as typed (invoke's remainder is one string, its quoting lost)
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else shlex.split(c.remainder)
    layout = default_layout()
    try:
        uuid = lib.find_server_uuid(seed.admin_connection(load_secrets(layout)), name, project)
        code = lib.exec_in(layout, uuid, argv)
    except DevcloudError as exc:
        raise Exit(f"devcloud.guest: {exc}", code=2) from None
    if code:
        raise Exit(code=code)
