"""The checks as gates, against the in-memory fake cloud: rotate's ready and healthy gates
(rollback, no outage), deploy's gate, status --check, --skip-checks, a cloud that refuses the
console, a resumed rotation running its gates again, and the known_hosts file they write."""

from __future__ import annotations

import textwrap

import pytest
from declared import DEFAULTS, WEB1
from fakecloud import FINISHED_CONSOLE, FakeConnection, ticking_cloud
from test_rotate_unit import ENV, assert_serving, deployed, mid_rotation, web1_servers

from ivc_tasks.errors import ConfigError, RolledBack
from ivc_tasks.known_hosts import entries, known_hosts_path, record, rewrite
from ivc_tasks.spec import load_spec
from ivc_tasks.steps.deploy import DeployFailed, deploy
from ivc_tasks.steps.gates import StatusChecksFailed, status_with_checks
from ivc_tasks.steps.rotate import RotateOptions, rotate

ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkm6Y7mZkR0c1H4cVqvVn0l8m7m1o2aQ3n6q8kT5yXb"
FAILED_RUNCMD = FINISHED_CONSOLE.replace(
    "-----BEGIN SSH", "2026-12-04 14:00:04,123 - cc_scripts_user.py[WARNING]: Failed to run "
    "module scripts-user (scripts in /var/lib/cloud/instance/scripts)\n-----BEGIN SSH", 1)
NEVER_FINISHES = FINISHED_CONSOLE.split("-----BEGIN SSH")[0]
SPEC = DEFAULTS + WEB1 + """
[servers.web1.checks]
timeout = 3
interval = 1
{checks}
"""


@pytest.fixture
def world(tmp_path):
    (tmp_path / "t.j2").write_text("#cloud-config\nhostname: {{ server }}\n")
    conn = FakeConnection()
    conn.add_volume("web1-data")
    conn.add_volume("web1-logs")

    def spec(checks=""):
        path = tmp_path / "spec.toml"
        path.write_text(textwrap.dedent(SPEC).format(checks=checks))
        return load_spec(path, env_name=ENV)

    return conn, spec, tmp_path


def cloud_of(conn, tmp_path):
    cloud = ticking_cloud(conn, ENV)
    cloud.shared.known_hosts = known_hosts_path(tmp_path, ENV)
    return cloud


def new_servers(conn, old):
    return [s for s in web1_servers(conn) if s.id != old.id]


def test_ready_gate_failure_deletes_the_new_server_and_never_touches_the_old(world):
    conn, spec_of, tmp = world
    spec = spec_of()
    old, _ = deployed(conn, spec)
    conn.consoles[old.id] = FINISHED_CONSOLE.format(name="web1")
    conn.console_default = FAILED_RUNCMD
    with pytest.raises(RolledBack) as info:
        rotate(cloud_of(conn, tmp), spec, ["web1"])
    message = str(info.value)
    assert info.value.exit_code == 3
    for words in ("failed in phase ready-gate", "check cloud_init failed",
                  "Failed to run module scripts-user", "rolled back"):
        assert words in message, (words, message)
    assert_serving(conn, old.id, gen=1)
    assert conn.count("compute.stop_server") == 0 and conn.count("compute.start_server") == 0
    assert len(conn.deleted) == 1 and conn.deleted[0] != old.id


def test_ready_gate_times_out_on_a_cloud_init_that_never_finishes(world):
    conn, spec_of, tmp = world
    spec = spec_of()
    old, _ = deployed(conn, spec)
    conn.console_default = NEVER_FINISHES
    with pytest.raises(RolledBack, match=r"check cloud_init timed out after [\d.]+ s; last "
                                         r"answer: no final line yet"):
        rotate(cloud_of(conn, tmp), spec, ["web1"])
    assert conn.count("compute.stop_server") == 0
    assert_serving(conn, old.id, gen=1)


def test_healthy_gate_failure_rolls_back_and_rechecks_the_old_server(world):
    conn, spec_of, tmp = world
    marks = tmp / "up"
    marks.mkdir()
    spec = spec_of(f'command = ["test -e {marks}/{{id}}-{{address}}"]')
    old, fip = deployed(conn, spec)
    (marks / f"{old.id}-{fip.floating_ip_address}").touch()  # only the old one "serves"
    with pytest.raises(RolledBack) as info:
        rotate(cloud_of(conn, tmp), spec, ["web1"])
    message = str(info.value)
    for words in ("failed in phase healthy-gate", f"check command test -e {marks}/{{id}}-"
                  "{address} timed out", "last answer: exit 1", "its checks pass again"):
        assert words in message, (words, message)
    assert_serving(conn, old.id, gen=1)
    assert conn.count("compute.stop_server") == 1 and conn.count("compute.start_server") == 1


def test_healthy_rotation_reports_each_gate_and_writes_the_host_keys(world):
    conn, spec_of, tmp = world
    spec = spec_of('command = ["test -n {address}"]')
    old, fip = deployed(conn, spec)
    path = known_hosts_path(tmp, ENV)
    record(path, ["web1", fip.floating_ip_address, "other"], ["ssh-ed25519 OLDKEY"])
    result = rotate(cloud_of(conn, tmp), spec, ["web1"])
    (report,) = result.rotations
    gates = {p.name: p.to_dict() for p in report.phases if p.name.endswith("-gate")}
    assert [c["check"] for c in gates["ready-gate"]["checks"]] == ["cloud_init"]
    assert [(c["check"], c["outcome"]) for c in gates["healthy-gate"]["checks"]] == [
        ("cloud_init", "passed"), ("command test -n {address}", "passed")]
    assert_serving(conn, report.new_id, gen=2)
    assert entries(path.read_text()) == {"web1": [ED], fip.floating_ip_address: [ED]}
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_skip_checks_is_loud_and_runs_no_gate(world):
    conn, spec_of, tmp = world
    spec = spec_of()
    deployed(conn, spec)
    conn.console_default = FAILED_RUNCMD
    result = rotate(cloud_of(conn, tmp), spec, ["web1"], options=RotateOptions(skip_checks=True))
    (report,) = result.rotations
    assert any(w.startswith("CHECKS SKIPPED (--skip-checks): server web1") for w in report.warnings)
    assert [p.note for p in report.phases if p.name.endswith("-gate")] == \
        ["SKIPPED (--skip-checks)"] * 2
    assert_serving(conn, report.new_id, gen=2)


def test_console_refused_with_only_cloud_init_is_exit_2_before_any_change(world):
    conn, spec_of, tmp = world
    spec = spec_of()
    deployed(conn, spec)
    conn.console_refused = 403
    conn.calls.clear()
    with pytest.raises(ConfigError, match=r"refuses the console log .*HTTP 403.*web1 declare no "
                                          r"other check") as info:
        rotate(cloud_of(conn, tmp), spec, ["web1"])
    assert info.value.exit_code == 2 and conn.mutations() == []


def test_console_refused_falls_back_to_the_other_checks_told_once(world, caplog):
    conn, spec_of, tmp = world
    spec = spec_of('command = ["true"]')
    old, _ = deployed(conn, spec)
    conn.console_refused = 501
    result = rotate(cloud_of(conn, tmp), spec, ["web1"])
    (report,) = result.rotations
    healthy = next(p.to_dict() for p in report.phases if p.name == "healthy-gate")
    assert [(c["check"], c["outcome"]) for c in healthy["checks"]] == [
        ("cloud_init", "skipped"), ("command true", "passed")]
    assert conn.count("compute.get_server_console_output") == 1  # told once, then remembered
    assert_serving(conn, report.new_id, gen=2)


def test_a_rotation_resumed_after_a_crash_in_a_gate_runs_the_gates_again(world):
    conn, spec_of, tmp = world
    spec = spec_of()
    old, fip = deployed(conn, spec)
    new = mid_rotation(conn, spec, old, fip)  # what a crash during the ready gate leaves
    result = rotate(cloud_of(conn, tmp), spec, ["web1"])
    (report,) = result.rotations
    assert [p.name for p in report.phases][1:3] == ["ready-gate", "stop"]
    assert "healthy-gate" in [p.name for p in report.phases]
    assert_serving(conn, new.id, gen=2)


def test_dry_run_shows_both_gates(world):
    conn, spec_of, tmp = world
    spec = spec_of('tcp = [22]\ncommand = ["true {id}", "curl {address}"]')
    deployed(conn, spec)
    conn.calls.clear()
    (report,) = rotate(cloud_of(conn, tmp), spec, ["web1"], dry_run=True).rotations
    notes = {p.name: p.note for p in report.phases}
    assert notes["ready-gate"].startswith("cloud_init (console: 'Cloud-init v. ... finished'), "
                                          "command true {id} (timeout 3 s, every 1 s)")
    assert notes["healthy-gate"].startswith("cloud_init (console: 'Cloud-init v. ... finished'), "
                                            "tcp 22, command true {id}, command curl {address}")
    assert conn.mutations() == []


def test_deploy_gate_failure_is_exit_1_and_leaves_the_server(world):
    conn, spec_of, tmp = world
    spec = spec_of('command = ["false"]')
    with pytest.raises(DeployFailed) as info:
        deploy(cloud_of(conn, tmp), spec)
    message = str(info.value)
    assert info.value.exit_code == 1
    for words in ("deploy stopped at check web1", "check command false timed out",
                  "last answer: exit 1", "left as it is for inspection"):
        assert words in message, (words, message)
    assert len(web1_servers(conn)) == 1 and web1_servers(conn)[0].status == "ACTIVE"


def test_deploy_gate_passes_and_records_host_keys_or_says_there_are_none(world):
    conn, spec_of, tmp = world
    conn.console_default = FINISHED_CONSOLE.split("-----BEGIN SSH")[0] + \
        FINISHED_CONSOLE.split("-----END SSH HOST KEY KEYS-----\n")[1]
    result = deploy(cloud_of(conn, tmp), spec_of())
    check = next(s for s in result.steps if s.step == "check")
    assert check.info["checks"]["ok"] is True
    assert check.warnings and "console shows no SSH host keys" in check.warnings[0]
    assert check.lines()[0].startswith("check web1: check cloud_init: passed")


def test_status_check_exit_1_when_a_check_fails(world):
    conn, spec_of, tmp = world
    spec = spec_of()
    old, _ = deployed(conn, spec)
    assert status_with_checks(cloud_of(conn, tmp), spec).checks[0].ok
    conn.consoles[old.id] = FAILED_RUNCMD.format(name="web1")
    with pytest.raises(StatusChecksFailed, match="check cloud_init failed") as info:
        status_with_checks(cloud_of(conn, tmp), spec)
    assert info.value.exit_code == 1
    assert info.value.result.to_dict()["checks_ok"] is False


def test_known_hosts_rewrite_replaces_name_and_address_only():
    text = ("web1,203.0.113.5 ssh-ed25519 OLD\n203.0.113.5 ssh-rsa OLDRSA\n"
            "# a comment web1\n|1|hashed= ssh-ed25519 KEEP\ndb1,203.0.113.6 ssh-ed25519 DB\n")
    out = rewrite(text, ["web1", "203.0.113.9"], ["ssh-ed25519 NEW", "ecdsa-sha2-nistp256 E"])
    assert out == ("203.0.113.5 ssh-rsa OLDRSA\n# a comment web1\n|1|hashed= ssh-ed25519 KEEP\n"
                   "db1,203.0.113.6 ssh-ed25519 DB\nweb1,203.0.113.9 ssh-ed25519 NEW\n"
                   "web1,203.0.113.9 ecdsa-sha2-nistp256 E\n")
    again = rewrite(out, ["web1", "203.0.113.5"], ["ssh-ed25519 NEWER"])
    assert entries(again) == {"db1": ["ssh-ed25519 DB"], "203.0.113.6": ["ssh-ed25519 DB"],
                              "web1": ["ssh-ed25519 NEWER"], "203.0.113.5": ["ssh-ed25519 NEWER"],
                              "|1|hashed=": ["ssh-ed25519 KEEP"]}


def test_known_hosts_path_default_and_chosen(tmp_path):
    assert known_hosts_path(tmp_path, "prod") == tmp_path / ".ivc" / "known_hosts.prod"
    assert known_hosts_path(tmp_path, "prod", {"IVC_KNOWN_HOSTS": "kh"}) == tmp_path / "kh"
    assert known_hosts_path(tmp_path, "p", {"IVC_KNOWN_HOSTS": "/x/kh"}) == \
        __import__("pathlib").Path("/x/kh")


def test_deploy_dry_run_says_what_the_gate_would_check(world):
    conn, spec_of, tmp = world
    result = deploy(cloud_of(conn, tmp), spec_of('tcp = [22]'), dry_run=True)
    check = next(s for s in result.steps if s.step == "check")
    assert check.lines() == ["check web1: would wait for cloud_init (console: 'Cloud-init v. "
                             "... finished'), tcp 22 (timeout 3 s, every 1 s)"]
    assert conn.mutations() == []


def test_deploy_gate_waits_for_the_declared_final_message(world):
    conn, spec_of, tmp = world
    (tmp / "t.j2").write_text("#cloud-config\nhostname: {{ server }}\n"
                              "final_message: \"{{ server }} is up after $uptime s\"\n")
    spec = spec_of()
    assert deploy(cloud_of(conn, tmp), spec, dry_run=True).steps[-1].lines() == [
        "check web1: would wait for cloud_init (console: final_message 'web1 is up after "
        "$uptime s') (timeout 3 s, every 1 s)"]
    # cloud-init's own line is not printed when the user_data declares its own: timed out
    with pytest.raises(DeployFailed, match="check cloud_init timed out"):
        deploy(cloud_of(conn, tmp), spec)
    conn = FakeConnection()  # a new world whose console prints the declared line
    conn.add_volume("web1-data")
    conn.add_volume("web1-logs")
    conn.console_default = FINISHED_CONSOLE.replace(FINISHED_CONSOLE.splitlines()[-1],
                                                    "web1 is up after 7.0 s")
    result = deploy(cloud_of(conn, tmp), spec)
    check = next(s for s in result.steps if s.step == "check")
    assert check.info["checks"]["ok"] is True
    assert check.lines()[0].startswith("check web1: check cloud_init: passed after ")
    assert check.lines()[0].endswith(" s (web1 is up after 7.0 s)")


def test_create_instance_is_gated_as_deploy_is(world):
    from ivc_tasks.steps.checks import ChecksFailed
    from ivc_tasks.steps.instances import create_instance

    conn, spec_of, tmp = world
    spec = spec_of('command = ["false"]')
    dry = create_instance(cloud_of(conn, tmp), spec, "web1", dry_run=True)
    assert dry.lines()[-1] == ("check web1: would wait for cloud_init (console: 'Cloud-init v. "
                               "... finished'), command false (timeout 3 s, every 1 s)")
    assert conn.mutations() == []
    with pytest.raises(ChecksFailed) as info:
        create_instance(cloud_of(conn, tmp), spec, "web1")
    message = str(info.value)
    assert info.value.exit_code == 1
    for words in ("server web1 (", "check command false timed out", "last answer: exit 1",
                  "left as it is for inspection"):
        assert words in message, (words, message)
    assert [s.status for s in web1_servers(conn)] == ["ACTIVE"]
    # a server that exists is not created again, nor checked
    again = create_instance(cloud_of(conn, tmp), spec, "web1")
    assert again.gate is None and "checks" not in again.info


def test_create_instance_passes_its_gate_or_skips_it_loudly(world):
    from ivc_tasks.steps.instances import create_instance

    conn, spec_of, tmp = world
    result = create_instance(cloud_of(conn, tmp), spec_of(), "web1")
    assert result.info["checks"]["ok"] is True
    assert any(line.startswith("check web1: check cloud_init: passed") for line in result.lines())
    conn2 = FakeConnection()
    conn2.add_volume("web1-data")
    conn2.add_volume("web1-logs")
    conn2.console_default = NEVER_FINISHES
    skipped = create_instance(cloud_of(conn2, tmp), spec_of(), "web1", skip_checks=True)
    assert skipped.info["checks"] == {"skipped": True}
    assert any("CHECKS SKIPPED (--skip-checks): server web1" in w for w in skipped.warnings)


def test_create_instance_refused_before_any_change_when_the_console_is(world):
    from ivc_tasks.steps.instances import create_instance

    conn, spec_of, tmp = world
    conn.add_server("other", metadata={}, networks=["net-priv"])  # a server of the project
    conn.console_refused = 403
    conn.calls.clear()
    with pytest.raises(ConfigError, match=r"refuses the console log .*HTTP 403.*web1 declare no "
                                          r"other check") as info:
        create_instance(cloud_of(conn, tmp), spec_of(), "web1")
    assert info.value.exit_code == 2 and conn.mutations() == []
    # another check declared: cloud_init is skipped (said once), the other decides
    result = create_instance(cloud_of(conn, tmp), spec_of('command = ["true"]'), "web1")
    assert [(c["check"], c["outcome"]) for c in result.info["checks"]["checks"]] == [
        ("cloud_init", "skipped"), ("command true", "passed")]
