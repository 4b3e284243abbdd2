"""Bring the local cloud up from the test session, before any test runs, when a test to run
is marked ``cloud``.

The cloud is used as it is when it answers (``lifecycle.ready``: the check a second
``invoke devcloud.up`` makes, well under a second). Otherwise this runs what ``devcloud.up``
runs (``lifecycle.up``: install on first use, start, seed), its progress lines shown in pytest's
output although pytest captures it. When the cloud cannot come up (not root, a port held by
another program) the session stops at once with ``devcloud.up``'s own reason and exit code 1,
instead of every cloud test failing on its own.

Tests that are not marked ``cloud`` never get here: ``pytest -m "not cloud"`` touches nothing.
The cloud is left running at the end, for the next run.
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext

import pytest

from ivc_tasks.devcloud import lifecycle

EXIT_CODE = 1  # devcloud.up's own exit code when it fails
_state = pytest.StashKey[str]()


class _Say:
    """Progress lines through pytest's terminal (stderr when there is none), timed like up's."""

    def __init__(self, config: pytest.Config):
        self.terminal = config.pluginmanager.get_plugin("terminalreporter")
        self.t0 = time.monotonic()

    def __call__(self, message: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f}s] devcloud: {message}"
        if self.terminal is not None:
            self.terminal.write_line(line)
        else:
            print(line, file=sys.__stderr__, flush=True)


def up_failure(exc: BaseException) -> str:
    """The line `invoke devcloud.up` prints when it fails (ivc_tasks/tasks/devcloud.py)."""
    if isinstance(exc, lifecycle.DevcloudError):
        return f"devcloud.up failed: {exc}"
    return f"devcloud.up failed: {type(exc).__name__}: {exc}"


def ensure_cloud(config: pytest.Config) -> str:
    """Make sure the local cloud is up, once per session: ``"answering"`` or ``"started"``.

    :raises pytest.exit: it could not come up (the whole session stops with that reason).
    """
    if _state in config.stash:
        return config.stash[_state]
    capture = config.pluginmanager.get_plugin("capturemanager")
    say = _Say(config)
    with capture.global_and_fixture_disabled() if capture else nullcontext():
        t0 = time.monotonic()
        if lifecycle.ready():
            say(f"answering; using it as it is (checked in {time.monotonic() - t0:.2f}s)")
            config.stash[_state] = "answering"
            return "answering"
        say("not answering; running what `invoke devcloud.up` runs")
        try:
            lifecycle.up(say=say)
        except Exception as exc:  # noqa: BLE001 (any failure of up: its one-line reason, no test runs)
            pytest.exit(up_failure(exc), returncode=EXIT_CODE)
    config.stash[_state] = "started"
    return "started"


@pytest.hookimpl(trylast=True)  # after "collected N items"
def pytest_collection_finish(session: pytest.Session) -> None:
    """Once the tests to run are known (after ``-m``/``-k``), before any of them or any fixture
    runs: the cloud is needed only when one of them is marked ``cloud``."""
    if session.config.option.collectonly:
        return
    if any(item.get_closest_marker("cloud") is not None for item in session.items):
        ensure_cloud(session.config)
