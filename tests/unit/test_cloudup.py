"""The test session's cloud bring-up (tests/integration/cloudup.py), run in a pytest of its own.

Each case runs pytest in a subprocess on a small test directory whose conftest uses the real
hook, with ``lifecycle.ready`` and ``lifecycle.up`` replaced there (and only there): the running
cloud is never touched and no port is occupied. The refused case goes through devcloud's own
port check (``_check_ports``) with the port's holder faked, so the reason is devcloud.up's own.
"""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CONFTEST = """
import os
from pathlib import Path

from ivc_tasks.devcloud import lifecycle, procs
from ivc_tasks.devcloud.layout import Layout
from tests.integration.cloudup import pytest_collection_finish  # the real hook

MODE = os.environ["CLOUDUP_MODE"]
CALLS = Path(os.environ["CLOUDUP_CALLS"])


def record(what):
    with open(CALLS, "a") as out:
        out.write(what + "\\n")


def ready(layout=None, services=None):
    record("ready")
    return MODE == "answering"


def up(layout=None, say=None):
    record("up")
    say("installing Debian packages: (pretend)")
    if MODE == "refused":
        layout = Layout(Path(os.environ["CLOUDUP_DIR"]))  # an empty cache folder: nothing ours
        keystone = [s for s in lifecycle.all_services(layout) if s.name == "keystone"]
        # keystone's port "held" by this very process: devcloud's check names it and refuses
        procs.listener_pid = lambda port: os.getpid() if port == keystone[0].port else None
        lifecycle._check_ports(layout, keystone)
    if MODE == "crash":
        raise OSError("no space left on device")
    say("devcloud up: 12 started, 0 already running (pretend)")


lifecycle.ready = ready
lifecycle.up = up
"""

TESTS = """
import pytest


def test_unit_first():
    pass


@pytest.mark.cloud
@pytest.mark.parametrize("n", range(8))
def test_cloud(n):
    pass


class TestMore:
    pytestmark = pytest.mark.cloud

    def test_a(self):
        pass

    def test_b(self):
        pass
"""


def run(tmp_path, mode, *args):
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\naddopts = -ra --strict-markers\nmarkers =\n    cloud: needs the local cloud\n")
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_some.py").write_text(textwrap.dedent(TESTS))
    calls = tmp_path / "calls"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CLOUDUP_MODE": mode,
           "CLOUDUP_CALLS": str(calls), "CLOUDUP_DIR": str(tmp_path / "devcloud")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    called = calls.read_text().split() if calls.exists() else []
    return proc, called


def assert_stopped_before_any_test(out):
    """No test ran, failed or errored: the session stopped, the reason on its last line."""
    assert re.search(r"^=+ no tests ran in [\d.]+s =+$", out, re.M), out
    assert not re.search(r"^(FAILED|ERROR) |Traceback|test_some\.py", out, re.M), out
    assert out.rstrip().splitlines()[-1].startswith("!"), out


def test_a_refused_cloud_stops_the_session_with_one_reason(tmp_path):
    proc, called = run(tmp_path, "refused")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert called == ["ready", "up"], out
    reasons = re.findall(r"devcloud\.up failed: port \d+ \(keystone\) is held by pid \d+: "
                         r"[^\n]*pytest[^\n]*\(nothing was started\)", out)
    assert len(reasons) == 1, out  # said once, on one line
    assert_stopped_before_any_test(out)


def test_any_other_failure_of_up_stops_the_session_the_same_way(tmp_path):
    proc, called = run(tmp_path, "crash")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert called == ["ready", "up"], out
    assert out.count("devcloud.up failed: OSError: no space left on device") == 1, out
    assert_stopped_before_any_test(out)


def test_a_cloud_that_answers_is_used_as_it_is(tmp_path):
    proc, called = run(tmp_path, "answering")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert called == ["ready"], out  # checked once for the whole session, never brought up
    assert "devcloud: answering; using it as it is" in out, out
    assert "11 passed" in out, out


def test_a_cloud_that_does_not_answer_is_brought_up_with_visible_progress(tmp_path):
    proc, called = run(tmp_path, "start")  # pytest's default output capture is on
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert called == ["ready", "up"], out
    for line in ("devcloud: not answering; running what `invoke devcloud.up` runs",
                 "devcloud: installing Debian packages: (pretend)",
                 "devcloud: devcloud up: 12 started"):
        assert line in proc.stdout, out
    assert "11 passed" in out, out


@pytest.mark.parametrize("args,summary", [(("-m", "not cloud"), "1 passed, 10 deselected"),
                                          (("--collect-only", "-q"), "11 tests collected")])
def test_not_cloud_and_collect_only_never_touch_the_cloud(tmp_path, args, summary):
    proc, called = run(tmp_path, "refused", *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert called == [], out
    assert summary in out, out
