"""Reading a server's console log (Nova's os-getConsoleOutput text) as cloud-init 22.4 writes it.

Pure functions on the text. The lines recognised are cloud-init's own (``cloudinit/cmd/main.py``,
``config/modules.py``, ``config/cc_scripts_user.py``, ``config/cc_final_message.py`` and
``/usr/lib/cloud-init/write-ssh-key-fingerprints`` of Debian 12's cloud-init 22.4.2); its
console handler prints WARNING and above as ``<time> - <file>[WARNING]: <message>``:

  boot start  ``Cloud-init v. 22.4.2 running 'init-local' at ...`` (each boot prints it again)
  done        ``Cloud-init v. 22.4.2 finished at <time>. Datasource <ds>.  Up <n> seconds``
  failed      ``util.py[WARNING]: Running module runcmd (<module ...>) failed``
              ``cc_scripts_user.py[WARNING]: Failed to run module scripts-user (scripts in ...)``
              (a ``runcmd`` or user script that exited non-zero), ``failed stage <stage>``,
              ``failed run of stage <stage>``
  host keys   between ``-----BEGIN SSH HOST KEY KEYS-----`` and ``-----END SSH HOST KEY KEYS-----``

Only the last boot counts: a server started again prints a second boot after the first.

A cloud-config's ``final_message`` replaces the "done" line: ``final_message_pattern`` builds
a matcher from its literal parts, as ``cc_final_message`` renders it (``templater.render_string``:
a ``## template: jinja`` first line means jinja, ``## template: basic`` is dropped, then
``$name`` and ``${name}`` are substituted with ``version``, ``timestamp``, ``datasource``,
``uptime`` or the same names in capitals; any other name makes the rendering fail, and
cloud-init then prints no final line at all).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

BOOT_START = re.compile(r"Cloud-init v\. \S+ running '(init-local|init)'")
FINAL = re.compile(r"Cloud-init v\. (\S+) finished at ")
FAILURES = (
    re.compile(r"Running module \S+ \(.*\) failed"),
    re.compile(r"Failed to run module \S+"),
    re.compile(r"\bfailed (run of )?stage \S+"),
)
# cloud-init 22.4's templater: TYPE_MATCHER and BASIC_MATCHER; cc_final_message's names
TEMPLATE_TYPE = re.compile(r"##\s*template:(.*)", re.I)
BASIC_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.]+)\}|\$([A-Za-z0-9_.]+)")
FINAL_NAMES = ("version", "timestamp", "datasource", "uptime")
BEGIN_KEYS = "-----BEGIN SSH HOST KEY KEYS-----"
END_KEYS = "-----END SSH HOST KEY KEYS-----"
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-", "ssh-dss", "sk-ssh-ed25519@",
             "sk-ecdsa-sha2-")


@dataclass(frozen=True)
class BootState:
    """What the console says about cloud-init's last boot.

    ``started``: the window holds the boot's first line (so it holds the whole boot);
    ``final``: cloud-init's final line (None: not yet); ``failure``: the first failure line.
    """

    started: bool
    final: str | None
    failure: str | None


class FinalMessageError(ValueError):
    """A declared ``final_message`` whose printed line cannot be recognised; says why."""


@functools.cache
def final_message_pattern(template: str | None) -> re.Pattern[str] | None:
    """A matcher of the lines cloud-init 22.4 prints for a declared ``final_message`` (None:
    cloud-init's own line, ``FINAL``). Placeholders match any text on their line; every
    literal part must be there, each line of the message a whole console line (trailing
    blanks aside).

    :raises FinalMessageError: a message cloud-init renders with jinja, one it cannot render
        (an unknown template type or placeholder: no final line at all), or one without a
        literal word to recognise.
    """
    text = (template or "").strip()  # cc_final_message strips; empty means its own line
    if not text:
        return None
    first, _, rest = text.partition("\n")
    header = TEMPLATE_TYPE.match(first)
    if header:
        kind = header.group(1).lower().strip()
        if kind == "jinja":
            raise FinalMessageError("it starts with '## template: jinja': cloud-init renders "
                                    "it with jinja at boot, from values ivc cannot know")
        if kind != "basic":
            raise FinalMessageError(f"cloud-init 22.4 knows no template type {kind!r} (jinja "
                                    "or basic): it prints no final line at all")
        text = rest
    names = FINAL_NAMES + tuple(n.upper() for n in FINAL_NAMES)
    lines, literal = [], ""
    for line in text.split("\n"):
        parts, pos = [], 0
        line = line.rstrip()
        for match in BASIC_PLACEHOLDER.finditer(line):
            name = match.group(1) or match.group(2)
            if name not in names:
                dotted = name.rstrip(".")
                hint = (f" (a '.' after a name is part of it: write ${{{dotted}}}.)"
                        if dotted in names else
                        "; cloud-init substitutes only $version, $timestamp, $datasource and "
                        "$uptime (or in capitals)")
                raise FinalMessageError(f"cloud-init cannot render its placeholder "
                                        f"{match.group(0)!r} and then prints no final line"
                                        + hint)
            parts += [re.escape(line[pos:match.start()]), r"[^\n]*?"]
            literal += line[pos:match.start()]
            pos = match.end()
        parts.append(re.escape(line[pos:]))
        literal += line[pos:]
        lines.append("".join(parts))
    if not re.search(r"\w", literal):
        raise FinalMessageError("it has no literal word (only placeholders, blanks or "
                                "punctuation): its line cannot be told from any other")
    return re.compile(r"^[ \t]*" + "\n".join(lines) + r"[ \t]*$", re.M)


def last_boot(text: str) -> tuple[str, bool]:
    """The text of the last boot, and whether its start is in ``text`` (a window from the end
    may have cut it off)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if BOOT_START.search(line)]
    if not starts:
        return text, False
    # init-local then init: the boot starts at the init-local line before the last init line
    last = starts[-1]
    if "'init'" in lines[last] and len(starts) > 1 and "init-local" in lines[starts[-2]]:
        last = starts[-2]
    return "\n".join(lines[last:]), True


def boot_state(text: str, final_message: str | None = None) -> BootState:
    """Read the last boot of a console window (see the module's docstring); ``final_message``
    is the declared one (see ``final_message_pattern``), None for cloud-init's own line.

    :raises FinalMessageError: see ``final_message_pattern`` (the loader refused it already).
    """
    boot, started = last_boot(text)
    pattern = final_message_pattern(final_message)
    final = failure = None
    for line in boot.splitlines():
        if failure is None and any(p.search(line) for p in FAILURES):
            failure = line.strip()
        if pattern is None and FINAL.search(line):
            final = line.strip()
    if pattern is not None:
        found = list(pattern.finditer("\n".join(line.rstrip() for line in boot.splitlines())))
        final = " / ".join(found[-1].group(0).strip().split("\n")) if found else None
    return BootState(started=started, final=final, failure=failure)


def host_keys(text: str) -> list[str]:
    """The public host keys of the last boot's ``BEGIN SSH HOST KEY KEYS`` block, each
    ``<type> <base64>`` (comments dropped); [] when there is no complete block."""
    boot, _ = last_boot(text)
    keys: list[str] = []
    inside = found = False
    for line in boot.splitlines():
        line = line.strip()
        if line.endswith(BEGIN_KEYS):
            inside, keys = True, []
        elif line.endswith(END_KEYS) and inside:
            inside, found = False, True
        elif inside:
            parts = line.split()
            # tolerate a console prefix (a timestamp) before the key
            for i, part in enumerate(parts[:-1]):
                if part.startswith(KEY_TYPES):
                    keys.append(f"{part} {parts[i + 1]}")
                    break
    return keys if found else []
