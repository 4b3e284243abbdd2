"""docs/ci.md's CI jobs, run against the local cloud (issue 18): the GitHub workflow's `run:`
steps with its environment, the secrets mapped to an application credential of the local
cloud's ivc user (no password anywhere); the GitLab job runs the same commands."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from tests.integration.rotateworld import CLOUDS_YAML, ROOT, connection

pytestmark = pytest.mark.cloud
DOC = ROOT / "docs" / "ci.md"
SECRET = re.compile(r"\$\{\{\s*secrets\.(\w+)\s*\}\}")


def blocks() -> list[dict]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)]


def test_the_gitlab_job_runs_the_same_commands_and_keeps_the_json():
    github, gitlab = blocks()
    job = gitlab["converge"]
    steps = github["jobs"]["converge"]["steps"]
    converge = next(s["run"] for s in steps if s.get("name") == "converge")
    script = " ".join(job["script"])
    assert "python -m invoke converge --json > converge.json" in converge
    assert "python -m invoke converge --json > converge.json" in script
    assert "python -m ivc_tasks.ci_report converge.json" in script
    assert job["artifacts"] == {"when": "always", "paths": ["converge.json"],
                                "expire_in": "30 days"}
    assert {r["if"] for r in job["rules"]} == {'$CI_PIPELINE_SOURCE == "schedule"',
                                               '$CI_PIPELINE_SOURCE == "web"'}
    assert "PASSWORD" not in json.dumps(gitlab) and "PASSWORD" not in json.dumps(github)
    assert github[True] == {"schedule": [{"cron": "17 3 * * *"}], "workflow_dispatch": {}}


@pytest.fixture
def credential():
    conn = connection()
    made = conn.identity.create_application_credential(
        user=conn.current_user_id, name=f"ivc-ci-test-{uuid.uuid4().hex[:6]}")
    try:
        yield made
    finally:
        conn.identity.delete_application_credential(conn.current_user_id, made.id)


def run_workflow(root: Path, env_name: str, secrets: dict[str, str]) -> list[tuple]:
    """Every `run:` step of the GitHub job, in order, as Actions runs it (bash -eo pipefail),
    until one fails; [(name, returncode, stdout, stderr)]."""
    github = blocks()[0]
    job = github["jobs"]["converge"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "IVC_"))}
    for key, value in job["env"].items():
        environ[key] = SECRET.sub(lambda m: secrets[m.group(1)], str(value))
    environ.update(IVC_ENV=env_name, IVC_ROOT=str(root), PYTHONPATH=str(ROOT))
    out = []
    for step in job["steps"]:
        if "run" not in step or step.get("name") == "install":  # ivc is installed already
            continue
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                               step["run"]], cwd=root, env=environ, capture_output=True,
                              text=True, timeout=600)
        out.append((step.get("name"), proc.returncode, proc.stdout, proc.stderr))
        if proc.returncode != 0:
            break
    return out


def test_the_github_workflow_converges_with_an_application_credential(tmp_path, credential):
    env_name = f"ci-{uuid.uuid4().hex[:6]}"
    server = f"{env_name}-web"
    conn = connection()
    auth_url = yaml.safe_load(CLOUDS_YAML.read_text())["clouds"]["ivc-local"]["auth"]["auth_url"]
    secrets = {"OS_AUTH_URL": auth_url, "OS_APPLICATION_CREDENTIAL_ID": credential.id,
               "OS_APPLICATION_CREDENTIAL_SECRET": credential.secret,
               "OS_REGION_NAME": "RegionOne"}
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / f"{env_name}.env").write_text(f"IVC_SPEC=env/{env_name}.toml\n")
    spec = (f'[servers."{server}"]\nimage = "ivc-tiny"\nflavor = "m1.tiny"\n'
            'networks = ["private"]\n')
    (tmp_path / "env" / f"{env_name}.toml").write_text(spec)
    (tmp_path / "tasks.py").write_text((ROOT / "tasks.py").read_text())
    try:
        steps = run_workflow(tmp_path, env_name, secrets)
        assert [(name, code) for name, code, _, _ in steps] == [("converge", 0)], steps
        _, _, stdout, stderr = steps[0]
        data = json.loads((tmp_path / "converge.json").read_text())
        assert [(s["name"], s["outcome"]) for s in data["servers"]] == [(server, "created")]
        assert stdout.strip().endswith("converge: exit 0; 1 created; changed: true")
        assert credential.secret not in stdout + stderr
        again = run_workflow(tmp_path, env_name, secrets)
        assert again[0][1] == 0
        assert json.loads((tmp_path / "converge.json").read_text())["changed"] is False
        # a declaration the cloud cannot satisfy: the job fails, naming why
        (tmp_path / "env" / f"{env_name}.toml").write_text(spec.replace("m1.tiny", "m9.none"))
        failed = run_workflow(tmp_path, env_name, secrets)
        assert failed[0][1] == 2
        assert failed[0][2].startswith("::error::converge: ") and "m9.none" in failed[0][2]
    finally:
        for found in conn.compute.servers(details=True):
            if (found.metadata or {}).get("ivc_env") == env_name:
                conn.compute.delete_server(found)
                conn.compute.wait_for_delete(found, wait=120)
