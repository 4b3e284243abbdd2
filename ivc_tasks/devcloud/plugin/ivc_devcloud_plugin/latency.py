"""Simulated real-cloud latency for the fake virt and volume drivers: waiting, not CPU.

The mode lives in a small file, ``<devcloud dir>/state/latency`` (JSON), read at each operation
(only when it changed), so a run can switch it on and off with no restart:

* absent, ``{"mode": "off"}``, or past its ``until`` (epoch seconds): no added time;
* ``{"mode": "real"}``: the figures of ``REAL`` (a public cloud's usual wall times);
* ``{"mode": "scale", "factor": 0.1}``: ``REAL`` times the factor;
* ``"only": "<prefix>"`` with either: only servers and volumes whose name starts with it are
  slowed (a benchmark's own, on a cloud others are testing on meanwhile).

``until`` makes a slow mode expire by itself, so that a crashed benchmark cannot leave a shared
cloud slow. Each driver records at start-up, in ``state/latency-drivers/<service>``, the process
group it runs in and the plugin's code stamp (``code_stamp``): ``devcloud.status`` tells from it
whether the running service honours the mode, with the current code.
"""

import json
import os
import time
from pathlib import Path

# seconds per operation at "real" speed
REAL = {
    "spawn": 30.0,          # boot to ACTIVE
    "power_off": 5.0,       # stop
    "power_on": 5.0,        # start
    "reboot": 5.0,
    "destroy": 3.0,         # delete
    "attach_volume": 1.0,   # hypervisor side of an attach (Cinder's side adds as much)
    "detach_volume": 1.0,
    "initialize_connection": 1.0,  # Cinder's side of an attach (export, connection info)
    "terminate_connection": 1.0,
    "create_volume": 3.0,
    "delete_volume": 2.0,
}
_cache = {"stamp": None, "config": {}}


def state_dir():
    root = os.environ.get("IVC_DEVCLOUD_DIR")
    return Path(root) / "state" if root else None


def mode_file():
    folder = state_dir()
    return folder / "latency" if folder else None


def _config():
    path = mode_file()
    try:
        stat = path.stat()
    except (OSError, AttributeError):
        return {}
    stamp = (stat.st_mtime_ns, stat.st_size)
    if stamp != _cache["stamp"]:
        try:
            _cache["config"] = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            _cache["config"] = {}
        _cache["stamp"] = stamp
    return _cache["config"]


def code_stamp():
    """The latest modification time of this plugin's code (ns): a running service loaded
    older code when its recorded stamp is smaller."""
    folder = Path(__file__).resolve().parent
    return max(p.stat().st_mtime_ns for p in folder.glob("*.py"))


def seconds(operation, name=None):
    """The wall time to add to ``operation`` on ``name`` now (0 when the mode is off, expired,
    or for another name than its ``only`` prefix)."""
    config = _config()
    mode = config.get("mode", "off")
    until = config.get("until")
    if mode == "off" or (until is not None and time.time() > float(until)):
        return 0.0
    only = config.get("only")
    if only and not str(name or "").startswith(only):
        return 0.0
    factor = 1.0 if mode == "real" else float(config.get("factor", 0) or 0)
    return max(0.0, REAL.get(operation, 0.0) * factor)


def pause(operation, name=None):
    """Wait (sleep: no CPU) what the mode asks for ``operation`` on ``name``."""
    delay = seconds(operation, name)
    if delay > 0:
        time.sleep(delay)


def record_driver(service):
    """Note that ``service``'s running process group honours the mode (see the module doc)."""
    folder = state_dir()
    if folder is None:
        return
    try:
        (folder / "latency-drivers").mkdir(parents=True, exist_ok=True)
        (folder / "latency-drivers" / service).write_text(f"{os.getpgid(0)} {code_stamp()}")
    except OSError:
        pass
