"""Declared checks against the local cloud: the cloud-config schema (exit 2, zero requests),
deploy's and create-instance's gate, rotate's ready and healthy gates (exit 3, the old server
untouched or given everything back), status --check, inventory from Neutron, a declared
final_message, a user refused the console log (the devcloud's role ``ivc-no-console``). Checks
that need no guest use what the test itself runs: an HTTP listener on 127.0.0.1 and local
commands on ``{id}``.

The tests that need real guests (cloud-init's final line, ssh with the host keys ivc wrote,
``ssh -F <inventory ssh-config>``, a new server that never serves) name their servers ``g-...``
(the ``givc`` fixture), for which the local cloud boots guests; a server without one, or no
ssh client, is a failure saying so (the local cloud always has guests).
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from .conftest import CLOUDS_YAML, cloud_state

pytestmark = pytest.mark.cloud
CLOUDS_DIR = CLOUDS_YAML.parent

FAKE_CONSOLE = "FAKE CONSOLE OUTPUT"
HEAD = """[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
keypair = "ivc-demo"
userdata = "templates/ci.j2"
userdata_vars = { greeting = "hello" }

[servers.PREFIX-web]
networks = ["private"]
floating_ip = true
volumes = ["PREFIX-data"]

[servers.PREFIX-web.checks]
timeout = 4
interval = 0.5
"""


class Listener:
    """An HTTP server on 127.0.0.1 answering 200 on /health while ``healthy``, else 503."""

    def __init__(self):
        owner = self
        self.healthy = True
        self.seen: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.seen.append(self.path)
                self.send_response(200 if owner.healthy else 503)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    made = Listener()
    yield made
    made.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def web(ivc):
    (server,) = [s for s in ivc.servers() if s.status != "DELETED"]
    return server


def fip_of(conn, server_id):
    ports = {p.id for p in conn.network.ports(device_id=server_id)}
    return next((f.floating_ip_address for f in conn.network.ips() if f.port_id in ports), None)


def has_guests(conn, server_id, wait=120.0) -> bool:
    """Whether the server runs a real guest: its console shows cloud-init (the fake driver's is
    a fixed text, known at the first look)."""
    deadline = time.monotonic() + wait
    while True:
        text = conn.compute.get_server_console_output(server_id, length=50).get("output") or ""
        if FAKE_CONSOLE in text:
            return False
        if "Cloud-init v." in text or time.monotonic() > deadline:
            return "Cloud-init v." in text
        time.sleep(1)


def test_a_cloud_config_refused_by_the_schema_is_exit_2_with_zero_requests(ivc):
    (ivc.root / "env" / "templates" / "bad.j2").write_text(
        "#cloud-config\nhostname: {{ server }}\nwrite_file:\n  - path: /etc/x\n    content: x\n")
    ivc.write_spec(HEAD.replace("templates/ci.j2", "templates/bad.j2") + "cloud_init = false\n")
    run = ivc.run("deploy", "--json")
    assert run.code == 2, run
    assert run.data["requests"] == 0 and run.data["mutating_requests"] == 0
    for words in (f"servers.{ivc.prefix}-web.userdata", "cloud-config key write_file",
                  "line 3 of the rendered user_data", "bad.j2", "did you mean 'write_files'?"):
        assert words in run.data["error"], (words, run.data["error"])
    (ivc.root / "env" / "templates" / "bad.j2").write_text("#cloud-config\nruncmd: echo hi\n")
    run = ivc.run("rotate", "--name", f"{ivc.prefix}-web", "--json")
    assert run.code == 2 and run.data["requests"] == 0
    assert "cloud-config key runcmd (line 2" in run.data["error"]
    assert "'echo hi' is not of type 'array'" in run.data["error"]
    assert ivc.servers() == []


def test_gates_of_deploy_rotate_and_status_with_a_local_listener(ivc, conn, listener, tmp_path):
    ivc.volume("data")
    marks = tmp_path / "ready"
    marks.mkdir()
    checks = (f'cloud_init = false\nhttp = ["http://127.0.0.1:{listener.port}/health?n={{name}}'
              f'&id={{id}}"]\ncommand = ["test -e {marks}/{{id}}"]\n')
    ivc.write_spec(HEAD + checks)
    name = f"{ivc.prefix}-web"

    # deploy: the new server is not done until its checks pass; a failed check is exit 1
    # naming the server, the check and its last answer, and the server stays for inspection
    run = ivc.run("deploy", "--json")
    assert run.code == 1, run
    first = web(ivc)
    for words in (f"deploy stopped at check {name}", f"check command test -e {marks}/{{id}} "
                  "timed out", "last answer: exit 1", "left as it is for inspection"):
        assert words in run.data["error"], (words, run.data["error"])
    assert first.status == "ACTIVE"
    (marks / first.id).touch()
    run = ivc.run("status", "--check", "--json")
    assert run.code == 0, run
    assert [(c["check"], c["outcome"]) for c in run.data["checks"][0]["checks"]] == [
        (f"http http://127.0.0.1:{listener.port}/health?n={{name}}&id={{id}}", "passed"),
        (f"command test -e {marks}/{{id}}", "passed")]
    assert f"/health?n={name}&id={first.id}" in listener.seen

    # rotate, ready gate fails (the new server's id has no mark): exit 3, the old server
    # never stopped, the new one deleted
    run = ivc.run("rotate", "--name", name, "--json")
    assert run.code == 3, run
    phases = [p["phase"] for p in run.data["rotations"][0]["phases"]]
    assert phases[:3] == ["preflight", "create", "ready-gate"] and "stop" not in phases
    assert "failed in phase ready-gate" in run.data["error"]
    assert web(ivc).id == first.id and web(ivc).status == "ACTIVE"
    assert fip_of(conn, first.id) is not None

    # rotate, healthy gate fails (the listener answers 503 once everything moved): the
    # address and volume go back, the old server starts, its own checks run again
    listener.healthy = False
    (marks / "any").touch()
    ivc.write_spec(HEAD + checks.replace(f"test -e {marks}/{{id}}", f"test -d {marks}"))
    run = ivc.run("rotate", "--name", name, "--json")
    assert run.code == 3, run
    assert "failed in phase healthy-gate" in run.data["error"]
    assert "last answer: HTTP 503" in run.data["error"]
    assert "ITS OWN CHECKS FAIL TOO" in run.data["error"]  # the listener is down for both
    back = web(ivc)
    assert back.id == first.id and back.status == "ACTIVE" and fip_of(conn, first.id)
    assert ivc.run("status", "--check", "--json").code == 1

    # healthy: the rotation passes both gates, the inventory shows the new server at once
    listener.healthy = True
    run = ivc.run("rotate", "--name", name, "--json")
    assert run.code == 0, run
    gates = {p["phase"]: p for p in run.data["rotations"][0]["phases"] if "checks" in p}
    assert [c["outcome"] for c in gates["healthy-gate"]["checks"]] == ["passed", "passed"]
    new = web(ivc)
    assert new.id != first.id
    inventory = ivc.run("inventory", "--format", "json")
    assert inventory.code == 0, inventory
    (host,) = inventory.data["hosts"]
    assert (host["name"], host["id"], host["address"]) == (name, new.id, fip_of(conn, new.id))
    assert host["known_hosts"] == str(ivc.root / ".ivc" / f"known_hosts.{ivc.env}")
    config = ivc.run("inventory", "--format", "ssh-config")
    assert config.out.startswith(f"Host {name}\n  HostName {fip_of(conn, new.id)}\n")


def test_dry_run_shows_both_gates_and_skip_checks_is_loud(ivc, conn):
    ivc.volume("data")
    ivc.write_spec(HEAD + 'cloud_init = false\ncommand = ["false"]\n')
    assert ivc.run("deploy", "--skip-checks", "--json").code == 0
    name = f"{ivc.prefix}-web"
    dry = ivc.run("rotate", "--name", name, "--dry-run", "--json")
    assert dry.code == 0, dry
    notes = {p["phase"]: p.get("note", "") for p in dry.data["rotations"][0]["phases"]}
    assert notes["ready-gate"].startswith("command false (timeout 4 s, every 0.5 s)")
    assert notes["healthy-gate"].startswith("command false (timeout 4 s")
    run = ivc.run("rotate", "--name", name, "--skip-checks", "--json")
    assert run.code == 0, run
    assert "CHECKS SKIPPED (--skip-checks)" in run.err
    assert any("CHECKS SKIPPED" in w for w in run.data["warnings"])


# -- with real guests (issue 16) ----------------------------------------------------------------
GUEST_SPEC = """[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
keypair = "ivc-demo"
security_groups = ["PREFIX-sg"]

[secgroups.PREFIX-sg]
rules = [ { protocol = "tcp", ports = "22", remote_ip_prefix = "0.0.0.0/0" },
          { protocol = "tcp", ports = "8080", remote_ip_prefix = "0.0.0.0/0" } ]

[servers.PREFIX-web]
networks = ["private"]
floating_ip = true
userdata = "templates/guest.j2"

[servers.PREFIX-web.checks]
tcp = [22]
timeout = 60
interval = 1
"""
# a per-boot script: the old server started again by a rollback serves again (runcmd runs
# once per instance, scripts/per-boot at every boot)
SERVE = ("#cloud-config\nwrite_files:\n  - path: /var/lib/cloud/scripts/per-boot/serve.sh\n"
         "    permissions: '0755'\n    content: |\n      #!/bin/sh\n"
         "      cd /tmp && nohup python3 -m http.server 8080 >/dev/null 2>&1 &\n")
NEVER_SERVES = "#cloud-config\nruncmd:\n  - [sh, -c, 'exit 0']\n"
DEMO_KEY = os.path.join(os.environ.get("DEVCLOUD_DIR") or ".devcloud", "ivc-demo.key")


@pytest.fixture
def guest_world(givc, conn):
    """A server made with a real guest (named ``g-...``); none is a failure saying why."""
    ivc = givc
    (ivc.root / "env" / "templates" / "guest.j2").write_text(SERVE)
    ivc.write_spec(GUEST_SPEC.replace("tcp = [22]", 'tcp = [22]\nhttp = ["http://{address}:8080/"]')
                   , guests=True)
    run = ivc.run("deploy", "--json", "--skip-checks")
    assert run.code == 0, (run.data or {}).get("error") or run
    if not has_guests(conn, web(ivc).id):
        pytest.fail(f"server {ivc.prefix}-web runs no guest: its console shows no cloud-init "
                    "(the fake driver's fixed text, or nothing in 120 s); the local cloud boots a "
                    "guest for names starting 'g-' (`invoke devcloud.guests` shows the rules; "
                    "docs/guests.md)")
    check = ivc.run("status", "--check")
    assert check.code == 0, check
    return ivc


def ssh_key() -> str:
    if shutil.which("ssh") is None:
        pytest.fail("no ssh client on this machine: apt-get install -y openssh-client (the "
                    "local cloud's `invoke devcloud.up` installs it when run as root)")
    if not os.path.exists(DEMO_KEY):
        pytest.fail(f"no {DEMO_KEY}: the local cloud's seed writes the ivc-demo key there")
    return os.path.abspath(DEMO_KEY)


def test_ssh_strict_host_key_checking_right_after_a_rotate(guest_world, conn):
    ivc = guest_world
    name = f"{ivc.prefix}-web"
    key = ssh_key()
    assert ivc.run("rotate", "--name", name).code == 0
    address = fip_of(conn, web(ivc).id)
    known = ivc.root / ".ivc" / f"known_hosts.{ivc.env}"
    done = subprocess.run(["ssh", "-i", key, "-o", "StrictHostKeyChecking=yes", "-o",
                           f"UserKnownHostsFile={known}", "-o", "BatchMode=yes",
                           f"debian@{address}", "true"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    config = ivc.root / "ssh_config"
    config.write_text(ivc.run("inventory", "--format", "ssh-config",
                              env={"IVC_SSH_KEY": key}).out)
    done = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", name, "true"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_new_server_that_never_serves_is_rolled_back(guest_world, conn):
    ivc = guest_world
    name = f"{ivc.prefix}-web"
    old = web(ivc)
    (ivc.root / "env" / "templates" / "guest.j2").write_text(NEVER_SERVES)
    run = ivc.run("rotate", "--name", name, "--json")
    assert run.code == 3, run
    assert "failed in phase healthy-gate" in run.data["error"]
    assert "check http http://{address}:8080/" in run.data["error"]
    back = web(ivc)
    assert back.id == old.id and back.status == "ACTIVE" and fip_of(conn, old.id)
    assert "its checks pass again" in run.data["error"]


def test_a_check_that_never_answers_is_exit_1(ivc):
    """A deploy whose only check never answers (a closed port on 127.0.0.1): exit 1 in about
    the declared timeout, the check and its last answer named."""
    ivc.write_spec(HEAD.replace('volumes = ["PREFIX-data"]\n', "")
                   + f'cloud_init = false\nhttp = ["http://127.0.0.1:{free_port()}/"]\n')
    start = time.monotonic()
    run = ivc.run("deploy", "--json")
    assert run.code == 1, run
    assert "Connection refused" in run.data["error"] and "timed out after" in run.data["error"]
    assert time.monotonic() - start < 120


def test_a_new_server_whose_cloud_init_fails_or_never_finishes_never_stops_the_old(
        guest_world, conn):
    """The ready gate: a runcmd that exits non-zero fails at once, quoting cloud-init's own
    line; a cloud-init that never finishes fails at the timeout; either way the old server was
    never stopped (no stop phase, same server ACTIVE with its floating IP)."""
    ivc = guest_world
    name = f"{ivc.prefix}-web"
    old = web(ivc)
    template = ivc.root / "env" / "templates" / "guest.j2"
    for userdata, words in (
            ("#cloud-config\nruncmd:\n  - [sh, -c, 'echo broken; exit 3']\n",
             ["check cloud_init failed", "Failed to run module scripts-user"]),
            ("#cloud-config\nruncmd:\n  - [sleep, '3600']\n",
             ["check cloud_init timed out", "no final line yet"])):
        template.write_text(userdata)
        run = ivc.run("rotate", "--name", name, "--json")
        assert run.code == 3, run
        phases = [p["phase"] for p in run.data["rotations"][0]["phases"]]
        assert "failed in phase ready-gate" in run.data["error"] and "stop" not in phases
        for word in words:
            assert word in run.data["error"], (word, run.data["error"])
        back = web(ivc)
        assert back.id == old.id and back.status == "ACTIVE" and fip_of(conn, old.id)


FINAL_MESSAGE_SPEC = """[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
keypair = "ivc-demo"
userdata = "templates/final.j2"

[servers.PREFIX-fm]
networks = ["private"]

[servers.PREFIX-fm.checks]
timeout = 240
interval = 1
"""


def test_a_declared_final_message_is_the_line_the_gate_waits_for(givc, conn):
    """cloud-init prints the declared final_message instead of its own "finished at" line: the
    gate recognises it (deploy passes in seconds, not at the timeout); a final_message it
    could not recognise is refused before any request."""
    ivc = givc
    template = ivc.root / "env" / "templates" / "final.j2"
    template.write_text('#cloud-config\nfinal_message: "ivc {{ server }} up after $uptime s '
                        '(cloud-init ${version})"\n')
    ivc.write_spec(FINAL_MESSAGE_SPEC, guests=True)
    name = f"{ivc.prefix}-fm"
    start = time.monotonic()
    run = ivc.run("deploy", "--json")
    took = time.monotonic() - start
    assert run.code == 0, (run.data or {}).get("error") or run
    check = next(s for s in run.data["steps"] if s["step"] == "check")["info"]["checks"]
    (cloud_init,) = check["checks"]
    assert cloud_init["outcome"] == "passed", check
    assert cloud_init["answer"].startswith(f"ivc {name} up after "), cloud_init
    assert "(cloud-init 22.4" in cloud_init["answer"] and "$" not in cloud_init["answer"]
    assert cloud_init["seconds"] < 120 and took < 200, (cloud_init, took)
    log = conn.compute.get_server_console_output(web(ivc).id)["output"]
    assert not [line for line in log.splitlines() if " finished at " in line], log[-2000:]

    template.write_text('#cloud-config\nfinal_message: "$version $uptime"\n')
    run = ivc.run("rotate", "--name", name, "--json")
    assert run.code == 2 and run.data["requests"] == 0, run
    for words in (f"servers.{name}.userdata: final_message", "no literal word",
                  "set checks.cloud_init = false"):
        assert words in run.data["error"], (words, run.data["error"])


def test_create_instance_is_gated_as_deploy_is(ivc, tmp_path):
    """create-instance alone: the new server is done only when its checks pass; a failing
    check is exit 1 naming the server, the check and its last answer, the server left."""
    marks = tmp_path / "ready"
    marks.mkdir()
    ivc.write_spec(HEAD.replace('volumes = ["PREFIX-data"]\n', "")
                   + f'cloud_init = false\ncommand = ["test -e {marks}/{{id}}"]\n')
    name = f"{ivc.prefix}-web"
    dry = ivc.run("create-instance", "--name", name, "--dry-run")
    assert dry.code == 0 and f"check {name}: would wait for command test -e" in dry.out, dry
    run = ivc.run("create-instance", "--name", name, "--json")
    assert run.code == 1, run
    server = web(ivc)
    for words in (f"server {name} ({server.id})", f"check command test -e {marks}/{{id}} "
                  "timed out", "last answer: exit 1", "left as it is for inspection"):
        assert words in run.data["error"], (words, run.data["error"])
    assert server.status == "ACTIVE"
    (marks / server.id).touch()
    assert ivc.run("status", "--check").code == 0


# -- a cloud that refuses the console log -------------------------------------------------------
@pytest.fixture
def no_console(ivc, admin_conn, tmp_path):
    """ivc run as a user of project ivc who holds the devcloud's ``ivc-no-console`` role: Nova
    refuses them the console log (403, the devcloud's nova policy.yaml), as some clouds do."""
    import secrets

    import yaml

    from ivc_tasks.devcloud.configs import NO_CONSOLE_ROLE, NOVA_POLICY

    policy = CLOUDS_DIR / "etc" / "nova" / "policy.yaml"
    if not policy.exists() or policy.read_text() != NOVA_POLICY:
        pytest.fail(f"{policy} does not refuse the console to role {NO_CONSOLE_ROLE}: the "
                    "devcloud's configs.write_all writes it (`invoke devcloud.up`)")
    identity = admin_conn.identity
    # (listings, not find_*: their ignore_missing is deprecated, an error in this session)
    role = next(iter(identity.roles(name=NO_CONSOLE_ROLE)), None) \
        or identity.create_role(name=NO_CONSOLE_ROLE)
    (member,) = identity.roles(name="member")
    (project,) = identity.projects(name="ivc", domain_id="default")
    password = secrets.token_urlsafe(16)
    user = identity.create_user(name=f"{ivc.prefix}-user", password=password,
                                default_project_id=project.id, domain_id="default")
    try:
        for each in (member, role):
            identity.assign_project_role_to_user(project, user, each)
        clouds = yaml.safe_load((CLOUDS_DIR / "clouds.yaml").read_text())
        entry = clouds["clouds"]["ivc-local"]
        entry["auth"] = {**entry["auth"], "username": user.name, "password": password}
        path = tmp_path / "clouds-no-console.yaml"
        path.write_text(yaml.safe_dump({"clouds": {"ivc-no-console": entry}}))
        path.chmod(0o600)
        ivc.env_file.write_text(f"OS_CLOUD=ivc-no-console\nOS_CLIENT_CONFIG_FILE={path}\n"
                                "IVC_POLL_INTERVAL=0.5\n")
        yield ivc
    finally:
        identity.delete_user(user, ignore_missing=True)


def test_a_cloud_that_refuses_the_console(no_console):
    """cloud_init falls back to the other checks (said once); with cloud_init the only check,
    a rotate is exit 2 before any change (asked on the existing server)."""
    ivc = no_console
    spec = (HEAD.replace('keypair = "ivc-demo"\n', "").replace('volumes = ["PREFIX-data"]\n', "")
            .replace("timeout = 4", "timeout = 30"))
    ivc.write_spec(spec + 'command = ["true"]\n')
    name = f"{ivc.prefix}-web"
    run = ivc.run("deploy", "--json")
    assert run.code == 0, run
    checks = next(s for s in run.data["steps"] if s["step"] == "check")["info"]["checks"]
    assert [(c["check"], c["outcome"]) for c in checks["checks"]] == [
        ("cloud_init", "skipped"), ("command true", "passed")], checks
    assert "console refused (HTTP 403)" in checks["checks"][0]["answer"]
    assert run.err.count("refuses the console log") == 1, run.err
    before = cloud_state(ivc.conn, ivc.prefix, ivc.env)

    ivc.write_spec(spec)  # cloud_init, the only check
    run = ivc.run("rotate", "--name", name, "--json")
    assert run.code == 2, run
    assert run.data["mutating_requests"] == 0
    for words in ("refuses the console log", "HTTP 403", f"{name} declare no other check",
                  "set cloud_init = false"):
        assert words in run.data["error"], (words, run.data["error"])
    assert cloud_state(ivc.conn, ivc.prefix, ivc.env) == before
