"""Whether a server gets a guest: the switch ``devcloud.guests`` writes, read at each spawn.

``<devcloud dir>/state/guests`` (JSON): ``{"mode": "on" | "off", "rules": [{"prefix": P,
"mode": "on" | "off"}, ...]}``. A server whose name starts with a rule's prefix follows that
rule (the longest prefix wins); any other follows ``mode``. No file: guests on.
"""

import json
import os
from pathlib import Path

MODES = ("on", "off")


def mode_file(base=None):
    root = base or os.environ.get("IVC_DEVCLOUD_DIR")
    return Path(root) / "state" / "guests" if root else None


def read(base=None):
    path = mode_file(base)
    try:
        config = json.loads(path.read_text() or "{}")
    except (OSError, ValueError, AttributeError):
        config = {}
    return config if isinstance(config, dict) else {}


def enabled(config, name):
    """Whether server ``name`` gets a guest under ``config`` (the mode file's JSON)."""
    best = None
    for rule in config.get("rules", []):
        prefix = str(rule.get("prefix", ""))
        if prefix and str(name or "").startswith(prefix) and \
                (best is None or len(prefix) > len(best["prefix"])):
            best = rule
    mode = (best or config).get("mode", "on")
    return mode != "off"


def updated(config, mode, only=None):
    """The config after ``devcloud.guests --mode MODE [--only PREFIX]``.

    Without ``only``, MODE becomes the default for every server and the prefix rules go; with
    it, the rule for that prefix is set (replacing an earlier one for the same prefix).

    :raises ValueError: a mode other than on or off.
    """
    if mode not in MODES:
        raise ValueError(f"guests mode {mode!r}: use on or off")
    if not only:
        return {"mode": mode, "rules": []}
    rules = [r for r in config.get("rules", []) if r.get("prefix") != only]
    return {"mode": config.get("mode", "on"), "rules": rules + [{"prefix": only, "mode": mode}]}


def write(config, base=None):
    path = mode_file(base)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config))
    tmp.replace(path)
    return config
