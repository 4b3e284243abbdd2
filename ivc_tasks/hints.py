"""The "did you mean" hint of every message about an unknown name (pure)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ivc_tasks.errors import clip_repr


def did_you_mean(name: str, choices: Iterable[str], *, otherwise: str, n: int = 1,
                 cutoff: float = 0.6) -> str:
    """``did you mean 'x'?`` when ``name`` is close to one of ``choices``; else ``otherwise``.

    Only the choices whose length allows difflib's ratio (2 * matches / total length) to reach
    ``cutoff`` are compared: a 10 MB name is answered at once, not after seconds of difflib.
    """
    reachable = [c for c in choices
                 if 2 * min(len(name), len(c)) >= cutoff * (len(name) + len(c))]
    close = difflib.get_close_matches(name, reachable, n=n, cutoff=cutoff) if reachable else []
    return f"did you mean {', '.join(clip_repr(c) for c in close)}?" if close else otherwise


def listed(names: Iterable[str], *, none: str = "none", most: int = 10) -> str:
    """``a, b, c`` (at most ``most`` of them, then ``...``), or ``none`` when empty."""
    names = list(names)
    if not names:
        return none
    return ", ".join(names[:most]) + (" ..." if len(names) > most else "")


def type_name(value: object) -> str:
    """``a string``, ``a table``...: what a TOML value is, in a message."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)
