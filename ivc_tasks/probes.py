"""One look of a declared check from this machine: a TCP connection, an HTTP request, a local
command. Each returns ``(passed, answer)``, the answer a short text for progress lines and
failure messages; none raises.

ivc probes whatever address the user's cloud gives (on a real cloud it is off this machine by
design); the tests and the local cloud only ever probe addresses the local cloud made (or a
listener a test runs on 127.0.0.1).
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import urllib.error
import urllib.request

from ivc_tasks.errors import clip

ANSWER_LIMIT = 160


def tcp(address: str, port: int, timeout: float) -> tuple[bool, str]:
    """Whether ``address:port`` accepts a connection within ``timeout`` seconds."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True, f"connected to {address}:{port}"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError) or reason == "timed out":
            reason = f"no answer in {timeout:g} s"
        return False, f"{address}:{port}: {reason}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is an answer (the service runs), not something to follow."""

    def redirect_request(self, *args, **kwargs):
        return None


def http(url: str, timeout: float) -> tuple[bool, str]:
    """Whether ``url`` answers 2xx or 3xx within ``timeout`` seconds (no proxy, no redirect
    followed)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    try:
        with opener.open(urllib.request.Request(url, method="GET"), timeout=timeout) as reply:
            return 200 <= reply.status < 400, f"HTTP {reply.status}"
    except urllib.error.HTTPError as exc:
        return 300 <= exc.code < 400, f"HTTP {exc.code} {clip(str(exc.reason), 60)}"
    except urllib.error.URLError as exc:
        reason = exc.reason
        text = getattr(reason, "strerror", None) or str(reason)
        return False, clip(f"{url}: {text}", ANSWER_LIMIT)
    except (OSError, ValueError) as exc:
        return False, clip(f"{url}: {exc}", ANSWER_LIMIT)


def command(line: str, timeout: float) -> tuple[bool, str]:
    """Whether the local command ``line`` (split with shlex, no shell) exits 0 within
    ``timeout`` seconds; the answer is its exit status and last line of output."""
    argv = shlex.split(line)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        return False, f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return False, f"still running after {timeout:g} s (stopped)"
    except OSError as exc:
        return False, f"{argv[0]}: {exc.strerror or exc}"
    output = (done.stderr.strip() or done.stdout.strip()).splitlines()
    last = f": {clip(output[-1], ANSWER_LIMIT)}" if output else ""
    return done.returncode == 0, f"exit {done.returncode}{last}"
