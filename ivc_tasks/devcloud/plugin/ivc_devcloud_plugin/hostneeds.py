"""The addresses this machine itself talks to, which no route into the local cloud may capture.

A host route must overlap no route the host has (``ranges.clash``, ``netmodel.overlapping``),
but that is not enough: the package registries the machine reaches may sit inside a
documentation range too (seen here: pypi.org, deb.debian.org and registry.npmjs.org all resolve
to 203.0.113.80, inside the seed's old ``public`` range 203.0.113.0/24, reached through the
default route). Routing such a range into the cloud's namespace cut the machine off its package
registries. So every address the host uses counts as a /32 "route" of its own: the name servers,
the hosts of the apt sources and of pip's indexes, the usual registries, and the peers of the
host's established TCP connections.

Stand-alone (no nova or neutron import): the network agent and the seed (``ranges.py``) load it.
"""

from __future__ import annotations

import configparser
import ipaddress
import re
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

REGISTRIES = ("pypi.org", "files.pythonhosted.org", "registry.npmjs.org", "deb.debian.org",
              "security.debian.org")
CACHE_SECONDS = 60.0
_cache: tuple[float, list[tuple[str, str]]] | None = None


def _apt_hosts(apt: Path = Path("/etc/apt")) -> set[str]:
    hosts = set()
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        hosts |= {urlparse(url).hostname or "" for url in re.findall(r"[a-z+]+://\S+", text)}
    return {h for h in hosts if h}


def _pip_hosts() -> set[str]:
    hosts = set()
    parser = configparser.ConfigParser()
    parser.read(["/etc/pip.conf", "/etc/xdg/pip/pip.conf", str(Path.home() / ".pip/pip.conf"),
                 str(Path.home() / ".config/pip/pip.conf")])
    for section in parser.sections():
        for key in ("index-url", "extra-index-url"):
            for url in parser.get(section, key, fallback="").split():
                hosts.add(urlparse(url).hostname or "")
    return {h for h in hosts if h}


def _nameservers(path: Path = Path("/etc/resolv.conf")) -> set[str]:
    try:
        text = path.read_text()
    except OSError:
        return set()
    return set(re.findall(r"^\s*nameserver\s+(\S+)", text, flags=re.M))


def _peers() -> set[str]:
    try:
        out = subprocess.run(["ss", "-Htn4", "state", "established"], capture_output=True,
                             text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    peers = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            peers.add(fields[3].rsplit(":", 1)[0])
    return peers


def _resolve(host: str) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None, socket.AF_INET)}
    except OSError:
        return set()


def destinations(now: float | None = None) -> list[tuple[str, str]]:
    """Every IPv4 address the host uses off the machine, as (``addr/32``, why) "routes" for the
    overlap checks; loopback and the cloud's own link-local addresses are left out. Cached for a
    minute (name look-ups)."""
    global _cache
    now = time.monotonic() if now is None else now
    if _cache and now - _cache[0] < CACHE_SECONDS:
        return _cache[1]
    found: dict[str, str] = {}
    for host in sorted(set(REGISTRIES) | _apt_hosts() | _pip_hosts()):
        for addr in _resolve(host):
            found.setdefault(addr, f"(address of {host})")
    for addr in _nameservers():
        found.setdefault(addr, "(a name server of this machine)")
    for addr in _peers():
        found.setdefault(addr, "(a peer this machine is connected to)")
    out = []
    for addr, why in sorted(found.items()):
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            continue
        if ip.version == 4 and not (ip.is_loopback or ip.is_link_local):
            out.append((f"{addr}/32", why))
    _cache = (now, out)
    return out
