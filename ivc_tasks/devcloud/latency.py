"""The fake drivers' simulated latency: the mode file that nova-compute's and cinder-volume's
fake drivers read at each operation (plugin/ivc_devcloud_plugin/latency.py), so that switching it
needs no restart."""

from __future__ import annotations

import json as jsonlib
import time

from . import procs
from .bootstrap import DevcloudError
from .layout import PLUGIN_DIR, Layout, default_layout

LATENCY_SERVICES = ("nova-compute", "cinder-volume")
LATENCY_ENV = "DEVCLOUD_LATENCY"


def parse_latency(value: str) -> dict:
    """``off``, ``real``, or a factor of the real figures (``0.2``) -> the mode file's JSON.

    :raises DevcloudError: anything else.
    """
    text = str(value).strip().lower()
    if text in ("", "off", "0", "none"):
        return {"mode": "off"}
    if text in ("real", "1"):
        return {"mode": "real"}
    try:
        factor = float(text)
    except ValueError:
        factor = -1.0
    if not 0 < factor < 100:
        raise DevcloudError(f"{LATENCY_ENV}={value!r}: use off, real, or a factor of the real "
                            "figures such as 0.2")
    return {"mode": "scale", "factor": factor}


def set_latency(value: str, *, minutes: float | None = None, only: str | None = None,
                layout: Layout | None = None) -> dict:
    """Write the latency mode (no restart: the drivers read it at each operation).

    :param minutes: a slow mode switches itself off after this long (None: never).
    :param only: slow only the servers and volumes whose name starts with this prefix (a
        benchmark's own, while others test on the same cloud).
    """
    layout = layout or default_layout()
    config = parse_latency(value)
    if config["mode"] != "off" and minutes:
        config["until"] = round(time.time() + 60 * float(minutes), 1)
    if config["mode"] != "off" and only:
        config["only"] = only
    path = layout.stamp("latency")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(jsonlib.dumps(config))
    tmp.replace(path)
    return config


def latency(layout: Layout | None = None) -> dict:
    """The latency mode in force: ``mode`` (off, real, x<factor>), ``until`` and, per driver
    service, whether the running process honours the mode (started from a plugin that has it)."""
    layout = layout or default_layout()
    try:
        config = jsonlib.loads(layout.stamp("latency").read_text() or "{}")
    except (OSError, ValueError):
        config = {}
    mode = config.get("mode", "off")
    until = config.get("until")
    if mode != "off" and until is not None and time.time() > float(until):
        mode = "off"
    label = {"off": "off", "real": "real"}.get(mode, f"x{config.get('factor')}")
    if mode != "off" and config.get("only"):
        label += f" (only names starting {config['only']})"
    code = max(p.stat().st_mtime_ns for p in (PLUGIN_DIR / "ivc_devcloud_plugin").glob("*.py"))
    honours = {}
    for name in LATENCY_SERVICES:
        proc = procs.read_pidfile(layout.pidfile(name))
        marker = layout.state / "latency-drivers" / name
        try:
            pgid, _, stamp = marker.read_text().strip().partition(" ")
            honours[name] = bool(proc) and procs.alive(proc) and int(pgid) == proc.pid \
                and int(stamp or 0) >= code  # loaded the plugin's current code
        except (OSError, ValueError):
            honours[name] = False
    return {"mode": label, "until": until if mode != "off" else None, "honoured_by": honours}
