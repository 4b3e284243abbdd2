"""Installed use: ivc built as a wheel, installed (not editable) in a fresh virtualenv, and run
from a user's own folder that holds env/<name>.env and the declarations, as a user runs it.

The wheel is built from a copy of what it ships (pyproject.toml, README.md, ivc_tasks/), so the
checkout gets no build/ or egg-info, by pip as a user's `pip install .` builds it (an isolated
build environment with pyproject's build requirements from the pip index). The virtualenv sees
the machine's site-packages for the dependencies that `.ci/run` installed from the pip index
(pip resolves the wheel's requirements against them, so nothing is fetched); ivc itself comes
from the wheel, and the test proves it (``ivc_tasks.__file__`` inside the virtualenv, not the
checkout). The venv is made once per session.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CLOUDS_YAML, ROOT

pytestmark = pytest.mark.cloud


def _clean_environ() -> dict[str, str]:
    """The environment of a user's shell: none of ivc's or the test session's own settings."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    environ = {k: v for k, v in os.environ.items()
               if k not in drop and not k.startswith(("IVC_", "OS_"))}
    environ.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
                   PIP_RETRIES="0")  # an index that does not answer: the next one, at once
    return environ


def _run(argv, cwd, timeout=300):
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=_clean_environ(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{argv} exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """A virtualenv with ivc's wheel installed: its folder."""
    base = tmp_path_factory.mktemp("installed")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "ivc_tasks", src / "ivc_tasks",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", base / "dist", src], cwd=base)
    (wheel,) = (base / "dist").glob("ivc-*.whl")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=base)
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheel], cwd=base)
    return venv


@pytest.fixture
def user_folder(tmp_path, unique):
    """A user's repository of declarations: env/local.env, env/local.toml, clouds.yaml beside."""
    (tmp_path / "env").mkdir()
    (tmp_path / "clouds.yaml").symlink_to(CLOUDS_YAML)
    (tmp_path / "env" / "local.env").write_text(
        "OS_CLOUD=ivc-local\nOS_CLIENT_CONFIG_FILE=clouds.yaml\n")  # relative: to the root
    (tmp_path / "env" / "local.toml").write_text(
        f'[servers.{unique}-app]\nimage = "ivc-tiny"\nflavor = "m1.tiny"\n'
        'networks = ["private"]\n')
    (tmp_path / "deploy" / "scripts").mkdir(parents=True)
    return tmp_path


def test_the_wheel_runs_from_the_package_it_installed(installed, user_folder):
    proc = _run([installed / "bin" / "python", "-c",
                 "import ivc_tasks, invoke; print(ivc_tasks.__file__)"], cwd=user_folder)
    where = Path(proc.stdout.strip())
    assert where.is_relative_to(installed), where
    assert not where.is_relative_to(ROOT), where
    assert (installed / "bin" / "ivc").is_file()


@pytest.mark.parametrize("where", [".", "deploy/scripts"])
def test_ivc_status_from_a_users_own_folder(installed, user_folder, unique, where):
    proc = _run([installed / "bin" / "ivc", "status", "--json"], cwd=user_folder / where,
                timeout=120)
    data = json.loads(proc.stdout)
    assert (data["step"], data["env"], data["changed"], data["mutating_requests"]) == (
        "status", "local", False, 0)
    assert [(s["name"], s["declared"], s["status"], s["managed"]) for s in data["servers"]] == [
        (f"{unique}-app", True, "missing", True)]
    assert data["rotate_due"] == [f"{unique}-app"]
    assert f"cloud: cloud entry 'ivc-local' in {user_folder.resolve()}/clouds.yaml;" in proc.stderr


def test_ivc_outside_any_declarations_folder_says_where_it_looked(installed, tmp_path):
    proc = subprocess.run([installed / "bin" / "ivc", "status", "--json"], cwd=tmp_path,
                          env=_clean_environ(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    data = json.loads(proc.stdout)
    assert data["exit_code"] == 2
    assert data["error"].endswith(
        f"IVC_ENV: no env/ folder in {tmp_path.resolve()} or any folder above it; run ivc from "
        "the folder that holds env/local.env (or below it), or set IVC_ROOT to that folder")
