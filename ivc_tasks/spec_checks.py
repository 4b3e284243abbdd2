"""Reading the declared checks (``[servers.NAME.checks]``, ``[defaults.checks]``): a part of
``spec_loader.Loader``, like ``spec_rules.SecGroupReader``.

Keys: ``cloud_init`` (bool), ``tcp`` (ports 1-65535), ``http`` (http:// or https:// URLs),
``command`` (command lines, split with ``shlex``; no shell unless written ``sh -c '...'``),
``timeout`` and ``interval`` (seconds). Texts may hold the placeholders ``{address}``,
``{name}`` and ``{id}`` only (``{{`` and ``}}`` for braces). A server's checks table merges
over the defaults' key by key (a server's ``tcp`` replaces the defaults' ``tcp``).
"""

from __future__ import annotations

import shlex
import string
from typing import Any
from urllib.parse import urlsplit

from ivc_tasks.errors import clip_repr as _r
from ivc_tasks.hints import type_name
from ivc_tasks.spec_model import Checks

CHECK_KEYS = ("cloud_init", "tcp", "http", "command", "timeout", "interval")
PLACEHOLDERS = ("address", "name", "id")
DEFAULT_TIMEOUT = 300.0
DEFAULT_INTERVAL = 5.0


def placeholders(text: str) -> list[str]:
    """The placeholder names used in ``text`` (``str.format`` syntax).

    :raises ValueError: unbalanced braces, a format spec or a conversion.
    """
    names = []
    for _, field, spec, conversion in string.Formatter().parse(text):
        if field is None:
            continue
        if spec or conversion:
            raise ValueError(f"{{{field}}} has a format spec or conversion")
        names.append(field)
    return names


def fill(text: str, values: dict[str, str]) -> str:
    """``text`` with its placeholders replaced (already validated by the loader)."""
    return text.format(**values)


class ChecksReader:
    """The checks half of the loader (``fail``, ``table``, ``keys``, ``boolean`` come from
    ``spec_loader.Loader``)."""

    def checks_table(self, raw: Any, entry: str) -> dict[str, Any]:
        """Validate one checks table; returns the keys it sets, parsed."""
        self.keys(self.table(raw, entry), entry, CHECK_KEYS)
        out: dict[str, Any] = {}
        for key, value in raw.items():
            where = f"{entry}.{key}"
            if key == "cloud_init":
                out[key] = self.boolean(value, where)
            elif key == "tcp":
                out[key] = tuple(self.check_port(v, f"{where}[{i}]")
                                 for i, v in enumerate(self.check_list(value, where, "[22, 443]")))
            elif key == "http":
                out[key] = tuple(self.check_url(v, f"{where}[{i}]") for i, v in
                                 enumerate(self.check_list(
                                     value, where, '["http://{address}:8080/health"]')))
            elif key == "command":
                out[key] = tuple(self.check_command(v, f"{where}[{i}]") for i, v in
                                 enumerate(self.check_list(value, where, '["true"]')))
            else:
                out[key] = self.check_seconds(value, where)
        return out

    def merged_checks(self, defaults: dict[str, Any] | None, own: dict[str, Any] | None
                      ) -> Checks:
        merged = {**(defaults or {}), **(own or {})}
        return Checks(cloud_init=merged.get("cloud_init"), tcp=merged.get("tcp", ()),
                      http=merged.get("http", ()), command=merged.get("command", ()),
                      timeout=merged.get("timeout", DEFAULT_TIMEOUT),
                      interval=merged.get("interval", DEFAULT_INTERVAL))

    def check_list(self, value: Any, entry: str, example: str) -> list[Any]:
        if not isinstance(value, list):
            self.fail(entry, f"expected a list, got {type_name(value)}", f"write it as {example}")
        return value

    def check_port(self, value: Any, entry: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            self.fail(entry, f"{_r(value)} is not a port from 1 to 65535",
                      "write a whole number without quotes, e.g. tcp = [22, 443]")
        return value

    def check_text(self, value: Any, entry: str, example: str) -> str:
        if not isinstance(value, str) or not value.strip():
            got = "an empty string" if isinstance(value, str) else type_name(value)
            self.fail(entry, f"expected a non-empty string, got {got}", f"write e.g. {example}")
        try:
            names = placeholders(value)
        except ValueError as exc:
            self.fail(entry, f"{_r(value)}: {exc}",
                      "use {address}, {name} or {id}; write {{ and }} for literal braces")
        for name in names:
            if name not in PLACEHOLDERS:
                self.fail(entry, f"unknown placeholder {{{name}}} in {_r(value)}",
                          "use {address}, {name} or {id}; write {{ and }} for literal braces")
        return value.strip()

    def check_url(self, value: Any, entry: str) -> str:
        url = self.check_text(value, entry, '"http://{address}:8080/health"')
        parts = urlsplit(fill(url, {k: "x" for k in PLACEHOLDERS}))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            self.fail(entry, f"{_r(url)} is not an http:// or https:// URL",
                      'write e.g. "http://{address}:8080/health"')
        return url

    def check_command(self, value: Any, entry: str) -> str:
        line = self.check_text(value, entry, '"ssh debian@{address} true"')
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            self.fail(entry, f"{_r(line)} cannot be split into words: {exc}", "balance the quotes")
        if not argv:
            self.fail(entry, "is empty", "write a command line")
        return line

    def check_seconds(self, value: Any, entry: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            self.fail(entry, f"{_r(value)} is not a number of seconds above 0",
                      "write e.g. timeout = 300 (no quotes)")
        return float(value)
