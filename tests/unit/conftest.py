"""Fixtures the unit tests share.

A test module declares what its world holds, as module constants; the fixtures read them:

- ``SPEC`` (required by ``spec_of``, ``spec`` and ``task_env``): the declarations (TOML),
  composed from the shared pieces of ``declared.py`` (``DEFAULTS``, ``WEB1``) plus the module's
  own lines, or imported from the module whose world it shares.
- ``ENV`` (default ``"test"``): the environment's name the declarations are loaded for.
- ``VOLUMES`` (default none): the volumes the fake cloud holds before the test (``conn``).
- ``TEMPLATE`` (default ``hostname: {{ server }}``): the user_data template ``t.j2``.

The fixtures:

- ``spec_of(text=SPEC, name="a.toml")``: load declarations written under ``tmp_path/env/``
  beside the template ``t.j2`` and a public key ``key.pub`` (``public_key``); ``spec`` is
  ``spec_of()``.
- ``conn``: a fresh in-memory fake cloud (``fakecloud.FakeConnection``) holding ``VOLUMES``.
  Each test builds its run with ``fakecloud.ticking_cloud(conn, env)``: no sleeping, retries
  without waiting, a clock that ticks at every look.
- ``task_env``: for tests that run tasks as a user does (``invoking.run``, invoke's Program):
  ``IVC_ROOT`` is ``tmp_path`` with ``env/unit.env`` and ``env/unit.toml`` (``SPEC``),
  ``IVC_ENV=unit``, no other ``IVC_*``/``OS_*`` variable, and ``connect`` hands out a
  ticking cloud on the returned fake.
- ``clock``: a fake monotonic clock for ``Cloud(clock=clock, sleep=clock.sleep)``: ``now``
  moves only when something sleeps; ``sleeps`` lists every sleep.
- ``ivc_logger`` (every test): the tasks set up the ``ivc`` logger (stderr, no propagation);
  it is put back afterwards, so that other tests' caplog still sees its records.
"""

from __future__ import annotations

import logging
import os
import textwrap

import pytest
from fakecloud import FakeConnection, ticking_cloud

from ivc_tasks.spec import load_spec

PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkm6Y7mZkR0c1H4cVqvVn0l8m7m1o2aQ3n6q8kT5yXb x@y"
TEMPLATE = "#cloud-config\nhostname: {{ server }}\n"


def _module(request, name, default=None):
    return getattr(request.module, name, default)


class FakeClock:
    """A monotonic clock that moves only when the code under test sleeps."""

    def __init__(self, now: float = 0.0):
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture(autouse=True)
def ivc_logger():
    log = logging.getLogger("ivc")
    saved = (list(log.handlers), log.propagate, log.level)
    yield
    log.handlers[:], log.propagate = saved[0], saved[1]
    log.setLevel(saved[2])


def _write_env_folder(folder, request):
    folder.mkdir(exist_ok=True)
    (folder / "t.j2").write_text(_module(request, "TEMPLATE", TEMPLATE))
    (folder / "key.pub").write_text(PUBLIC_KEY + "\n")


@pytest.fixture
def spec_of(tmp_path, request):
    folder = tmp_path / "env"
    _write_env_folder(folder, request)

    def make(text=None, name="a.toml"):
        path = folder / name
        path.write_text(textwrap.dedent(_module(request, "SPEC") if text is None else text))
        return load_spec(path, env_name=_module(request, "ENV", "test"))

    return make


@pytest.fixture
def public_key():
    """The public key in ``key.pub`` (as the cloud's keypair holds it)."""
    return PUBLIC_KEY


@pytest.fixture
def spec(spec_of):
    return spec_of()


@pytest.fixture
def conn(request):
    fake = FakeConnection()
    for name in _module(request, "VOLUMES", ()):
        fake.add_volume(name)
    return fake


@pytest.fixture
def task_env(tmp_path, monkeypatch, request):
    _write_env_folder(tmp_path / "env", request)
    (tmp_path / "env" / "unit.env").write_text("OS_CLOUD=fake\n")
    (tmp_path / "env" / "unit.toml").write_text(_module(request, "SPEC"))
    for key in list(os.environ):
        if key.startswith(("OS_", "IVC_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("IVC_ROOT", str(tmp_path))
    monkeypatch.setenv("IVC_ENV", "unit")
    fake = FakeConnection()
    monkeypatch.setattr("ivc_tasks.cloud.connect",
                        lambda settings: ticking_cloud(fake, settings.env))
    return fake
