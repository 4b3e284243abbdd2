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
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BOOT_START = re.compile(r"Cloud-init v\. \S+ running '(init-local|init)'")
FINAL = re.compile(r"Cloud-init v\. (\S+) finished at ")
FAILURES = (
    re.compile(r"Running module \S+ \(.*\) failed"),
    re.compile(r"Failed to run module \S+"),
    re.compile(r"\bfailed (run of )?stage \S+"),
)
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


def boot_state(text: str) -> BootState:
    """Read the last boot of a console window (see the module's docstring)."""
    boot, started = last_boot(text)
    final = failure = None
    for line in boot.splitlines():
        if failure is None and any(p.search(line) for p in FAILURES):
            failure = line.strip()
        if FINAL.search(line):
            final = line.strip()
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
