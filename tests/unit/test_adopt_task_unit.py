"""rotate --adopt / --detach-undeclared and the twin refusal as a user runs them (invoke's
Program): the flags reach the ops function, and the refusals exit 2 with nothing changed."""

import json
import logging

import pytest
import tenacity
from fakecloud import FakeConnection
from invoking import run

from ivc_tasks.cloud import Cloud
from ivc_tasks.settings import make_settings
from ivc_tasks.result import StepResult

SPEC = """
[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
keypair = "ivc-demo"

[servers.app]
networks = ["private"]
"""


@pytest.fixture(autouse=True)
def ivc_logger():
    """The tasks set up the ``ivc`` logger (stderr, no propagation); put it back afterwards, so
    that other tests' caplog still sees its records."""
    log = logging.getLogger("ivc")
    saved = (list(log.handlers), log.propagate, log.level)
    yield
    log.handlers[:], log.propagate = saved[0], saved[1]
    log.setLevel(saved[2])


@pytest.fixture
def conn(tmp_path, monkeypatch):
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "unit.env").write_text("OS_CLOUD=fake\n")
    (tmp_path / "env" / "unit.toml").write_text(SPEC)
    monkeypatch.setenv("IVC_ROOT", str(tmp_path))
    monkeypatch.setenv("IVC_ENV", "unit")
    monkeypatch.delenv("IVC_SPEC", raising=False)
    fake = FakeConnection()

    def connect(settings):
        return Cloud(conn=fake, settings=make_settings(settings.env, poll_interval=0),
                     sleep=lambda s: None, retry_overrides={"wait": tenacity.wait_none()})

    monkeypatch.setattr("ivc_tasks.cloud.connect", connect)
    return fake


def test_the_flags_reach_rotate(conn, monkeypatch):
    calls = []

    def fake_rotate(cloud, spec, names, *, options, dry_run):
        calls.append((names, options.adopt, options.detach_undeclared, dry_run))
        return StepResult(step="rotate-instance")

    monkeypatch.setattr("ivc_tasks.steps.rotate.rotate", fake_rotate)
    assert run("rotate", "--name", "app", "--adopt", "srv-9", "--detach-undeclared") == 0
    assert run("rotate", "--name", "app") == 0
    assert calls == [(["app"], "srv-9", True, False), (["app"], None, False, False)]


def test_a_twin_exits_2_and_adopt_takes_it_over(conn, capsys):
    hand = conn.add_server("app", metadata={"made": "by hand"}, networks=["net-priv"])
    assert run("create-instance", "--name", "app", "--json") == 2
    out = json.loads(capsys.readouterr().out)
    assert f"--adopt {hand.id}" in out["error"] and out["exit_code"] == 2
    assert conn.mutations() == []
    assert run("rotate", "--name", "app", "--adopt", hand.id, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    (rotation,) = out["rotations"]
    assert rotation["decision"] == "adopt" and conn.server(hand.id) is None
    (server,) = conn.servers
    assert server.metadata["ivc_name"] == "app" and server.metadata["ivc_spec"] == "unit.toml"


def test_adopt_of_nothing_exits_2(conn, capsys):
    assert run("rotate", "--name", "app", "--adopt", "nothing-here") == 2
    assert "no server with that id or name" in capsys.readouterr().err
    assert conn.mutations() == []
