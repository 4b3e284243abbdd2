"""The local cloud's pure pieces: masking, configs, the service table, process recognition."""

import configparser
import os
import subprocess
import sys
from datetime import UTC
from types import SimpleNamespace

import pytest

from ivc_tasks.devcloud import configs, procs
from ivc_tasks.devcloud.bootstrap import shown
from ivc_tasks.devcloud.layout import Layout
from ivc_tasks.devcloud.services import all_services, process_env

SECRETS = {"admin": "adm-SECRET", "demo": "demo-SECRET", "service": "svc-SECRET",
           "database": "db-SECRET", "rabbit": "mq-SECRET"}


@pytest.mark.parametrize("argv, expected", [
    (["keystone-manage", "bootstrap", "--bootstrap-password", "s3cret"],
     "keystone-manage bootstrap --bootstrap-password ***"),
    (["nova-manage", "--database_connection", "mysql+pymysql://devcloud:pw@127.0.0.1/nova"],
     "nova-manage --database_connection mysql+pymysql://devcloud:***@127.0.0.1/nova"),
    (["neutron-db-manage", "upgrade", "heads"], "neutron-db-manage upgrade heads"),
])
def test_shown_masks_passwords(argv, expected):
    assert shown(argv) == expected


def _fake_venv(tmp_path):
    layout = Layout(tmp_path / "cache")
    for service, name in (("nova", "api-paste.ini"), ("neutron", "api-paste.ini"),
                          ("cinder", "api-paste.ini"), ("cinder", "resource_filters.json"),
                          ("glance", "glance-api-paste.ini")):
        path = layout.venv / "etc" / service / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("[x]\n")
    return layout


def _read(path):
    parser = configparser.RawConfigParser()
    parser.read(path)
    return parser


def test_configs_carry_the_options_that_matter(tmp_path):
    layout = _fake_venv(tmp_path)
    configs.write_all(layout, SECRETS)
    nova = _read(layout.etc / "nova/nova.conf")
    assert nova["DEFAULT"]["compute_driver"] == "ivc_fake.FakeDriver"
    assert nova["DEFAULT"]["vif_plugging_timeout"] == "0"
    assert nova["database"]["connection"] == \
        "mysql+pymysql://devcloud:db-SECRET@127.0.0.1/nova?charset=utf8"
    assert nova["DEFAULT"]["transport_url"] == "rabbit://devcloud:mq-SECRET@127.0.0.1:5672/devcloud"
    ml2 = _read(layout.etc / "neutron/plugins/ml2/ml2_conf.ini")
    assert ml2["ml2"]["mechanism_drivers"] == "ivc_fake"
    cinder = _read(layout.etc / "cinder/cinder.conf")
    assert cinder["fake"]["volume_driver"] == "ivc_devcloud_plugin.fake_volume.FakeVolumeDriver"
    assert _read(layout.etc / "keystone/keystone.conf")["token"]["provider"] == "fernet"
    # Nova refuses the console log to the role the console-refused tests give their own user
    import yaml
    policy = yaml.safe_load((layout.etc / "nova/policy.yaml").read_text())
    assert policy == {"os_compute_api:os-console-output":
                      "rule:project_member_or_admin and not role:ivc-no-console"}
    assert configs.write_nova_policy(layout.etc / "nova/policy.yaml") is False  # unchanged
    for conf in layout.etc.rglob("*.conf"):
        assert oct(conf.stat().st_mode & 0o777) == "0o600", conf


def test_every_listener_is_on_loopback_and_ports_are_unique(tmp_path):
    services = all_services(Layout(tmp_path))
    ports = [s.port for s in services if s.port]
    assert len(ports) == len(set(ports))
    for service in services:
        if "--bind" in service.argv:
            assert service.argv[service.argv.index("--bind") + 1].startswith("127.0.0.1:")
        if service.name == "mariadb":
            assert "--bind-address=127.0.0.1" in service.argv
        if service.name == "rabbitmq":
            assert service.env["RABBITMQ_NODE_IP_ADDRESS"] == "127.0.0.1"
    assert [s.name for s in services][:4] == ["mariadb", "epmd", "rabbitmq", "keystone"]


def test_process_env_marks_and_drops_client_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("OS_PASSWORD", "leak")
    layout = Layout(tmp_path)
    keystone = next(s for s in all_services(layout) if s.name == "keystone")
    env = process_env(layout, keystone)
    assert "OS_PASSWORD" not in env
    assert env["IVC_DEVCLOUD_DIR"] == str(layout.root)
    assert env["IVC_DEVCLOUD_SERVICE"] == "keystone"
    assert env["IVC_WSGI_MODULE"] == "keystone.wsgi.api"


def test_spawned_process_is_recognised_recorded_and_stopped(tmp_path):
    layout = Layout(tmp_path / "cache")
    layout.make_dirs()
    service = next(s for s in all_services(layout) if s.name == "nova-scheduler")
    env = {**process_env(layout, service), "PATH": os.environ["PATH"]}
    proc = procs.spawn([sys.executable, "-c", "import time; time.sleep(60)"], env=env,
                       log=layout.log("x"), pidfile=layout.pidfile("x"), cwd=layout.root)
    try:
        assert procs.read_pidfile(layout.pidfile("x")) == proc
        assert procs.alive(proc)
        assert procs.marked_processes()[proc.pid] == (str(layout.root), "nova-scheduler")
        assert not procs.alive(procs.Proc(proc.pid, "1"))  # a reused PID is not ours
    finally:
        procs.stop(proc, timeout=5)
    assert not procs.alive(proc)


def test_listener_pid_finds_the_listening_process():
    server = subprocess.Popen([sys.executable, "-c",
                               "import socket,time;s=socket.socket();s.bind(('127.0.0.1',0));"
                               "s.listen();print(s.getsockname()[1],flush=True);time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        assert procs.listener_pid(port) == server.pid
        assert procs.tcp_open(port)
    finally:
        server.kill()
        server.wait()  # reaped: its sockets were closed when it exited, no need to wait more
    assert procs.listener_pid(port) is None


def _record(state, updated_at):
    return SimpleNamespace(state=state, updated_at=updated_at)


def test_a_service_counts_as_started_only_once_it_reported_since_its_start():
    from datetime import datetime

    from ivc_tasks.devcloud.readiness import reported_since

    started = datetime(2026, 11, 25, 13, 1, 25, 600000, tzinfo=UTC).timestamp()
    # the predecessor's heartbeat, still "up" for a minute: not this process
    assert not reported_since([_record("up", "2026-11-25T13:01:03.000000")], started)
    # the database keeps whole seconds: a record of the same second counts
    assert reported_since([_record("up", "2026-11-25T13:01:25.000000")], started)
    assert reported_since([_record("up", "2026-11-25T13:01:36.000000")], started)
    assert not reported_since([_record("down", "2026-11-25T13:01:36.000000")], started)
    assert not reported_since([_record("up", None)], started)
    assert reported_since([_record("up", "2026-11-25T13:00:00"),
                           _record("up", "2026-11-25T13:01:40Z")], started)


@pytest.mark.parametrize("missing, installs", [
    ({"ssh"}, True),  # a bare Debian machine: no ssh client to reach the guests
    ({"iptables-restore"}, True),
    (set(), False),
])
def test_debian_packages_install_the_ssh_client_when_ssh_is_missing(monkeypatch, missing,
                                                                   installs):
    from ivc_tasks.devcloud import bootstrap

    monkeypatch.setattr(bootstrap.shutil, "which",
                        lambda name: None if name in missing else f"/usr/bin/{name}")
    monkeypatch.setattr(bootstrap.os, "geteuid", lambda: 0)
    ran = []
    monkeypatch.setattr(bootstrap, "run", lambda argv, **kw: ran.append(argv))
    bootstrap.ensure_debian_packages(lambda text: None)
    installed = [argv for argv in ran if argv[:2] == ["apt-get", "install"]]
    assert bool(installed) == installs
    if installs:
        assert "openssh-client" in installed[0]
