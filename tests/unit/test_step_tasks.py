"""The step tasks as a user runs them (invoke's Program): flags, output, exit codes, redaction.

The cloud is the in-memory fake; settings and the spec are real files under tmp_path.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from invoking import run

from ivc_tasks.errors import CloudError, ConfigError
from ivc_tasks.result import Action, StepResult

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("ensure-secgroups", "create-instance", "attach-volume", "deploy")
SPEC = """
[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
keypair = "ivc-demo"

[secgroups.web]
rules = [ { protocol = "tcp", ports = "22" } ]

[secgroups.db]
rules = [ { protocol = "tcp", ports = "5432" } ]

[servers.app]
networks = ["private"]
security_groups = ["web"]
volumes = ["data", "logs"]
userdata = "t.j2"
userdata_vars = { secret_word = "swordfish-7" }
"""


TEMPLATE = "#cloud-config\nhostname: {{ secret_word }}\n"


@pytest.fixture
def conn(task_env):
    """The fake cloud behind the tasks (conftest's task_env: settings, SPEC and TEMPLATE under
    tmp_path)."""
    return task_env


def test_list_shows_every_step_with_a_one_line_summary(capsys):
    assert run("--list") == 0
    out = capsys.readouterr().out
    for step in STEPS:
        line = next(line for line in out.splitlines() if line.strip().startswith(step))
        assert len(line.split(step, 1)[1].strip()) > 10


@pytest.mark.parametrize("step", STEPS + ("rotate-instance", "status", "destroy"))
def test_every_flag_has_help(step, capsys, monkeypatch):
    # invoke pops each help entry off the task when it builds the parser (Task.arg_opts), so a
    # task object that served one Program.run shows no help the next time: import the task
    # modules afresh for this run (the originals are put back afterwards)
    import ivc_tasks.tasks

    monkeypatch.setattr(ivc_tasks, "tasks", ivc_tasks.tasks)
    for module in [m for m in sys.modules if m.startswith("ivc_tasks.tasks")]:
        monkeypatch.delitem(sys.modules, module)
    assert run("--help", step) == 0
    out = capsys.readouterr().out
    options = out.split("Options:", 1)[1].strip().splitlines()
    flags = [line.strip() for line in options if line.strip().startswith("-")]
    # a flag line is `--flag[=TYPE]   help`; with no help invoke prints the flag alone
    helps = {line: re.split(r"\s{2,}", line, maxsplit=1)[1:] for line in flags}
    missing = [line for line, rest in helps.items() if not rest or len(rest[0].strip()) <= 5]
    assert flags and not missing, f"flags without help: {missing}"
    assert "--json" in out
    assert "--dry-run" in out or step == "status"


def test_listing_and_help_do_not_import_openstacksdk():
    code = ("import sys; from invoke import Program; import importlib.util as u;"
            f"s = u.spec_from_file_location('t', {str(ROOT / 'tasks.py')!r}); m = u.module_from_spec(s);"
            "s.loader.exec_module(m); Program(namespace=m.ns).run(['invoke', '--list'], exit=False);"
            "Program(namespace=m.ns).run(['invoke', '--help', 'deploy'], exit=False);"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in "
            "('openstack', 'keystoneauth1', 'jinja2', 'dotenv', 'tenacity', 'requests')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def record(monkeypatch, target, result=None, error=None):
    calls = []

    def fake(*args, **kwargs):
        calls.append((args[2:], kwargs))
        if error is not None:
            raise error
        return result or StepResult(step="x")

    monkeypatch.setattr(target, fake)
    return calls


def test_repeatable_flags_and_switches_reach_the_ops_function(conn, monkeypatch):
    calls = record(monkeypatch, "ivc_tasks.steps.secgroups.ensure_secgroups")
    assert run("ensure-secgroups", "--name", "web", "--name", "db", "--prune", "--dry-run") == 0
    assert calls == [((["web", "db"],), {"prune": True, "dry_run": True})]
    calls = record(monkeypatch, "ivc_tasks.steps.volumes.attach_volume")
    assert run("attach-volume", "--name", "app", "--volume", "data", "--timeout", "30") == 0
    assert calls == [(("app", ["data"]), {"dry_run": False, "timeout": 30.0})]
    calls = record(monkeypatch, "ivc_tasks.steps.instances.create_instance")
    assert run("create-instance", "-n", "app") == 0
    assert calls == [(("app",), {"dry_run": False, "timeout": None, "skip_checks": False})]
    calls = record(monkeypatch, "ivc_tasks.steps.instances.create_instance")
    assert run("create-instance", "-n", "app", "--skip-checks") == 0
    assert calls == [(("app",), {"dry_run": False, "timeout": None, "skip_checks": True})]


@pytest.mark.parametrize(("error", "code"), [
    (ConfigError("spec.toml: servers.app.image: no image named 'x'; fix it"), 2),
    (CloudError("create server app failed: HTTP 500: boom (request id req-1)"), 1),
])
def test_errors_map_to_exit_codes_and_json(conn, monkeypatch, capsys, error, code):
    record(monkeypatch, "ivc_tasks.steps.instances.create_instance", error=error)
    assert run("create-instance", "--name", "app", "--json") == code
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["exit_code"] == code and data["error"] == str(error)
    assert data["changed"] is False and data["actions"] == []
    assert str(error) in captured.err


@pytest.mark.parametrize(("argv", "message"), [
    (["create-instance"], "--name is required: the declared server to create"),
    (["attach-volume"], "--name is required: the declared server to attach volumes to"),
    (["create-instance", "--name", "app", "--timeout", "x"],
     "--timeout: 'x' is not a number of seconds"),
    (["deploy", "--timeout", "-1"], "--timeout: '-1' must be greater than 0"),
    (["create-instance", "--name", "nope"],
     "create-instance: invalid input: {root}/env/unit.toml: --name 'nope': not a declared server "
     "(servers.nope); declared: app"),
    (["attach-volume", "--name", "app", "--volume", "other"],
     "attach-volume: invalid input: {root}/env/unit.toml: --volume 'other': not a volume of "
     "servers.app.volumes; declared: data, logs"),
    (["ensure-secgroups", "--name", "x"],
     "ensure-secgroups: invalid input: {root}/env/unit.toml: --name 'x': not a declared security "
     "group (secgroups.x); declared: web, db"),
])
def test_invalid_arguments_exit_2_and_touch_nothing(conn, argv, message, capsys, tmp_path):
    assert run(*argv) == 2
    assert capsys.readouterr().err == message.replace("{root}", str(tmp_path)) + "\n"
    assert conn.mutations() == []


def test_a_bad_env_file_exits_2(conn, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("IVC_ENV", "missing")
    assert run("deploy") == 2
    assert capsys.readouterr().err == (
        f"deploy: invalid input: {tmp_path}/env/missing.env: IVC_ENV: no env file for environment "
        "'missing'; create it or pick one of: unit\n")


def test_json_is_one_object_with_the_agreed_keys(conn, capsys):
    assert run("ensure-secgroups", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["changed"] is True
    assert {"requests", "requests_by_method", "mutating_requests", "elapsed_seconds"} <= set(data)
    web, db = (g.id for g in conn.groups)  # the fake's ids count across tests
    assert data["actions"] == [
        {"action": "create", "kind": "security_group", "name": "web", "id": web},
        {"action": "tag", "kind": "security_group", "name": "web", "id": web,
         "summary": "ivc:unit"},
        {"action": "create", "kind": "security_group", "name": "db", "id": db},
        {"action": "tag", "kind": "security_group", "name": "db", "id": db,
         "summary": "ivc:unit"},
        {"action": "create", "kind": "security_group_rule", "name": "web",
         "summary": "ingress IPv4 tcp 22"},
        {"action": "create", "kind": "security_group_rule", "name": "db",
         "summary": "ingress IPv4 tcp 5432"},
    ]


def test_human_output_goes_to_stdout_and_progress_to_stderr(conn, monkeypatch, capsys):
    result = StepResult(step="create-instance", target="app",
                        actions=[Action("create", "server", "app", "image ivc-tiny")])
    record(monkeypatch, "ivc_tasks.steps.instances.create_instance", result=result)
    assert run("create-instance", "--name", "app") == 0
    out = capsys.readouterr().out
    assert "create-instance app: did create server app: image ivc-tiny" in out


def test_user_data_is_never_printed(conn, capsys):
    conn.add_volume("data")
    conn.add_volume("logs")
    conn.network_create_security_group("web")
    assert run("create-instance", "--name", "app", "--dry-run", "--json") == 0
    dry = capsys.readouterr()
    assert run("deploy", "--json") == 0
    real = capsys.readouterr()
    rendered = b"#cloud-config\nhostname: swordfish-7\n"
    encoded = __import__("base64").b64encode(rendered).decode()
    for text in (dry.out, dry.err, real.out, real.err):
        assert "swordfish" not in text and encoded not in text
    request = next(a for a in json.loads(dry.out)["actions"] if a["kind"] == "server")["request"]
    assert request["user_data"]["bytes"] == len(rendered)
    assert len(request["user_data"]["sha256"]) == 64


def test_deploy_failure_reports_the_steps_done_in_json(conn, capsys):
    conn.add_volume("data")
    conn.add_volume("logs")
    from fakecloud import http_error
    conn.fail_next("compute.create_server", http_error(403, "Quota exceeded for instances",
                                                       **{"x-openstack-request-id": "req-9"}))
    assert run("deploy", "--json") == 1
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["exit_code"] == 1 and data["changed"] is True
    assert [s["step"] for s in data["steps"]] == ["ensure-secgroups"]
    assert "deploy stopped at create-instance app" in data["error"] and "req-9" in data["error"]
    assert "req-9" in captured.err


def test_missing_credentials_never_prompt(tmp_path):
    """No password in clouds.yaml, CI=true, stdin closed: invalid configuration (exit 2) naming
    the entry, the file and the fix, never a prompt."""
    (tmp_path / "env").mkdir()
    (tmp_path / "clouds.yaml").write_text(
        "clouds:\n  c:\n    auth:\n      auth_url: http://127.0.0.1:9/\n      username: u\n"
        "      project_name: p\n      user_domain_name: Default\n"
        "      project_domain_name: Default\n")
    (tmp_path / "env" / "x.env").write_text("OS_CLOUD=c\nOS_CLIENT_CONFIG_FILE=clouds.yaml\n")
    (tmp_path / "env" / "x.toml").write_text("[secgroups.a]\nrules = []\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "IVC_"))}
    environ.update(CI="true", IVC_ROOT=str(tmp_path), IVC_ENV="x", IVC_RETRY_ATTEMPTS="1")
    proc = subprocess.run([sys.executable, "-m", "invoke", "ensure-secgroups", "--json"],
                          cwd=ROOT, env=environ, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Password:" not in proc.stderr
    data = json.loads(proc.stdout)
    assert data["exit_code"] == 2 and data["mutating_requests"] == 0
    assert "'c'" in data["error"] and str(tmp_path / "clouds.yaml") in data["error"]
    assert "OS_PASSWORD" in data["error"]
