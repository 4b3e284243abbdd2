"""The known_hosts file of an environment: each server's host keys under its name and address.

``<IVC_ROOT>/.ivc/known_hosts.<env>`` unless ``IVC_KNOWN_HOSTS`` names another file. ivc writes
the keys a new server printed on its console (``console_log.host_keys``) after create and
rotate, replacing the entries of that name and of that address (the old server's keys), so that
``ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=<file> debian@<address>`` works with no
prompt and no "REMOTE HOST IDENTIFICATION HAS CHANGED". Lines ivc did not write stay as they
are. The rewrite is atomic (a temporary file renamed over the old one).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

STATE_FOLDER = ".ivc"


def known_hosts_path(root: Path, env: str, values: Mapping[str, str] | None = None) -> Path:
    """The environment's known_hosts file (``IVC_KNOWN_HOSTS`` wins; relative to the root)."""
    chosen = (values or {}).get("IVC_KNOWN_HOSTS", "").strip()
    if chosen:
        path = Path(chosen)
        return path if path.is_absolute() else root / path
    return root / STATE_FOLDER / f"known_hosts.{env}"


def host_field(names: Iterable[str]) -> str:
    """The first field of a known_hosts line: the names, comma-separated (an IPv6 address in
    brackets only with a port, so plain here)."""
    return ",".join(dict.fromkeys(n for n in names if n))


def rewrite(text: str, names: Iterable[str], keys: Iterable[str]) -> str:
    """``text`` without any line naming one of ``names`` (a hashed line is kept), plus one line
    per key for ``names``."""
    wanted = [n for n in dict.fromkeys(names) if n]
    drop = set(wanted)
    kept = []
    for line in text.splitlines():
        fields = line.split()
        if fields and not line.lstrip().startswith("#") and \
                drop & set(fields[0].split(",")):
            continue
        kept.append(line)
    lines = [*kept, *(f"{host_field(wanted)} {key}" for key in keys)]
    return "\n".join(lines) + "\n" if lines else ""


def entries(text: str) -> dict[str, list[str]]:
    """``{name: [key, ...]}`` of a known_hosts text (for reports and tests)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.lstrip().startswith("#"):
            for name in fields[0].split(","):
                out.setdefault(name, []).append(f"{fields[1]} {fields[2]}")
    return out


def record(path: Path, names: Iterable[str], keys: list[str]) -> None:
    """Write ``keys`` for ``names`` into the file at ``path`` (made with its folder, mode
    0600), replacing those names' old entries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    new = rewrite(text, names, keys)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(new)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
