"""The local cloud's guests, seen from ivc's side: the shared Debian root, the switch, exec,
and clean-up at ``down``/``reset`` (``cleanup.py``).

The guests themselves are booted by the fake virt driver (plugin ``guest.py``, which this
module loads from the plugin folder: it imports nothing of OpenStack's).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from . import cleanup
from .bootstrap import DevcloudError, Say, run
from .layout import Layout, plugin_module

SUITE = "bookworm"
# Debian's own packages: cloud-init and what a cloud image has for it. python3-cffi-backend:
# debootstrap does not resolve the virtual package python3-cryptography needs.
ROOT_PACKAGES = ["cloud-init", "python3-cffi-backend", "python3", "iproute2", "openssh-server",
                 "e2fsprogs"]
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror the machine's own apt sources name (the one reachable here)."""
    texts = sorted((sources_dir / "sources.list.d").glob("*.sources")) + \
        [sources_dir / "sources.list"]
    for path in texts:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":  # deb822 stanzas
            for stanza in re.split(r"\n\s*\n", text):
                uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
                if uris and suites and SUITE in suites.group(1).split():
                    return uris.group(1).rstrip("/")
        else:  # one-line style: deb [options] URI SUITE COMPONENTS
            for line in text.splitlines():
                words = line.split()
                uri = next((i for i, w in enumerate(words) if "://" in w), None)
                if words and words[0] == "deb" and uri is not None and \
                        words[uri + 1:uri + 2] == [SUITE]:
                    return words[uri].rstrip("/")
    return DEFAULT_MIRROR


def root_path(layout: Layout) -> Path:
    return layout.root / "guest-root" / SUITE


def unable(layout: Layout) -> str | None:
    """Why this machine cannot run guests (one line), or None when it can."""
    if os.geteuid() != 0:
        return "not root, so no namespaces"
    probe = subprocess.run(["unshare", "--mount", "--pid", "--uts", "--ipc", "--net", "--fork",
                            "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare failed: {probe.stderr.strip()[:120]}"
    return None


def ensure_root(layout: Layout, say: Say) -> bool:
    """Build the shared read-only Debian root once (debootstrap); True if it built it now.

    :raises DevcloudError: debootstrap failed (its last lines are in the message).
    """
    target = root_path(layout)
    if (target / "usr/bin/cloud-init").exists():
        return False
    why = unable(layout)
    if why:
        say(f"guests: off, this machine cannot make them ({why}); servers boot without a guest")
        return False
    if not shutil.which("debootstrap"):
        raise DevcloudError("debootstrap is missing: apt-get install -y debootstrap")
    source = mirror()
    tmp = target.with_name(f"{SUITE}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    say(f"guests: building the shared Debian 12 root with debootstrap from {source} "
        f"(once; about a minute, ~250 MB; log: {layout.log('guest-root')})")
    t0 = time.monotonic()
    run(["debootstrap", "--variant=minbase", f"--include={','.join(ROOT_PACKAGES)}", SUITE,
         str(tmp), source], log=layout.log("guest-root"))
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (tmp / junk).glob("*"):
            if path.is_file():
                path.unlink()
    tmp.rename(target)
    size = subprocess.run(["du", "-sm", str(target)], capture_output=True, text=True).stdout
    say(f"guests: Debian root ready in {time.monotonic() - t0:.0f}s "
        f"({size.split()[0] if size else '?'} MB, {target})")
    return True


def ensure_root_or_say(layout: Layout, say: Say) -> bool:
    """``ensure_root`` for ``up``: a root that cannot be built (no mirror reachable) leaves the
    servers without guests, said in one line, rather than the cloud down."""
    try:
        return ensure_root(layout, say)
    except DevcloudError as exc:
        say(f"guests: off, the Debian root could not be built ({str(exc)[:300]}); servers boot "
            "without a guest; the next `up` tries again")
        return False


# -- the switch --------------------------------------------------------------------------------

def set_mode(mode: str, only: str | None = None, layout: Layout | None = None) -> dict:
    """``devcloud.guests --mode on|off [--only PREFIX]``; read by the driver at each spawn.

    :raises ValueError: a mode other than on or off.
    """
    switch = plugin_module("guest_mode")
    return switch.write(switch.updated(switch.read(layout.root), mode, only), layout.root)


def mode(layout: Layout) -> dict:
    return plugin_module("guest_mode").read(layout.root) or {"mode": "on", "rules": []}


def describe_mode(config: dict) -> str:
    text = f"guests: {config.get('mode', 'on')} by default"
    for rule in config.get("rules", []):
        text += f"; {rule['mode']} for names starting {rule['prefix']!r}"
    return text


# -- exec ----------------------------------------------------------------------------------------

def find_server_uuid(conn, name: str, project: str) -> str:
    """The id of the one server called ``name`` in ``project`` (admin connection).

    :raises DevcloudError: no such project or server, or several servers of that name.
    """
    found = _project(conn, project)
    if found is None:
        raise DevcloudError(f"no project {project!r} in the local cloud")
    servers = [s for s in conn.compute.servers(all_projects=True, project_id=found.id,
                                                 name=f"^{re.escape(name)}$")
               if s.name == name]
    if not servers:
        raise DevcloudError(f"no server {name!r} in project {project!r}")
    if len(servers) > 1:
        raise DevcloudError(f"{len(servers)} servers called {name!r} in project {project!r}: "
                            + ", ".join(s.id for s in servers))
    return servers[0].id


def volume_disk_path(volume: str, project: str = "ivc", layout: Layout | None = None) -> str:
    """Where a guest sees the volume called ``volume`` of ``project``: its by-id path.

    :raises DevcloudError: no such volume.
    """
    from .layout import default_layout, load_secrets
    from .seed import admin_connection
    conn = admin_connection(load_secrets(layout or default_layout()))
    found = _project(conn, project)
    matches = [v for v in conn.block_storage.volumes(all_projects=True, name=volume,
                                                     project_id=found.id if found else None)
               if v.name == volume]
    if not matches:
        raise DevcloudError(f"no volume {volume!r} in project {project!r}")
    return f"/dev/disk/by-id/{plugin_module('guest').by_id_name(matches[0].id)}"


def exec_in(layout: Layout, uuid: str, argv: list[str]) -> int:
    """Run ``argv`` inside the running guest ``uuid`` (stdin/stdout/stderr passed through);
    return its exit status.

    :raises DevcloudError: the server has no running guest.
    """
    guest = plugin_module("guest")
    pid = guest.init_pid(uuid, layout.root)
    if pid is None:
        why = "it is stopped" if guest.state_dir(uuid, layout.root).exists() else \
            "it has none (guests were off for it, or this machine cannot make them)"
        raise DevcloudError(f"server {uuid} has no running guest: {why}")
    return subprocess.run(guest.exec_argv(pid, argv or ["sh"])).returncode


# -- clean-up ------------------------------------------------------------------------------------

def stop_all(layout: Layout, say: Say, label: str = "guests") -> list[str]:
    """Stop every guest of this cloud and remove what they hold on the host (processes,
    overlay mounts, network namespaces, loop devices: ``cleanup.py``); their disks stay.
    Return the uuids of the guests that were running."""
    return cleanup.remove_guests(layout.root, say, label)


def remove_disks(layout: Layout, say: Say) -> None:
    """``reset``: every guest stopped, then their disks and the volumes' files removed."""
    stop_all(layout, say)
    for sub in ("guests", "volumes"):
        shutil.rmtree(layout.data / sub, ignore_errors=True)


def _project(conn, name: str):
    """The project called ``name`` (None when absent; find_* with ignore_missing=True is
    deprecated in openstacksdk 4.x)."""
    from openstack import exceptions

    try:
        return conn.identity.find_project(name, ignore_missing=False)
    except exceptions.NotFoundException:
        return None
