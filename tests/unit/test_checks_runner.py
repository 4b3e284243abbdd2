"""The checks runner (fake clock), cloud-init 22.4 console texts, local probes, addresses."""

import http.server
import socket
import threading
from types import SimpleNamespace

import pytest

from ivc_tasks import probes
from ivc_tasks.console_log import (
    FinalMessageError,
    boot_state,
    final_message_pattern,
    host_keys,
    last_boot,
)
from ivc_tasks.resources.console import pick_address
from ivc_tasks.steps.checks import FAIL, PASS, SKIP, WAIT, Probe, run_probes

ED = "AAAAC3NzaC1lZDI1NTE5AAAAIHkm6Y7mZkR0c1H4cVqvVn0l8m7m1o2aQ3n6q8kT5yXb"
EC = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBKe4"
START = ("[    4.120000] cloud-init[211]: Cloud-init v. 22.4.2 running 'init-local' at Fri, 04 Dec "
         "2026 14:00:01 +0000. Up 4.12 seconds.\n"
         "Cloud-init v. 22.4.2 running 'init' at Fri, 04 Dec 2026 14:00:02 +0000. Up 5.01 seconds.\n"
         "ci-info: ++++++++++++++++++++++Net device info+++++++++++++++++++++++\n"
         "Cloud-init v. 22.4.2 running 'modules:config' at Fri, 04 Dec 2026 14:00:03 +0000. "
         "Up 6.00 seconds.\n"
         "Cloud-init v. 22.4.2 running 'modules:final' at Fri, 04 Dec 2026 14:00:03 +0000. "
         "Up 6.20 seconds.\n")
KEYS = ("<14>Dec  4 14:00:04 cloud-init: #############################################################\n"
        "<14>Dec  4 14:00:04 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
        "<14>Dec  4 14:00:04 cloud-init: 256 SHA256:q0Pz root@web1 (ED25519)\n"
        "<14>Dec  4 14:00:04 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----\n"
        "-----BEGIN SSH HOST KEY KEYS-----\n"
        f"ecdsa-sha2-nistp256 {EC} root@web1\n"
        f"ssh-ed25519 {ED} root@web1\n"
        "-----END SSH HOST KEY KEYS-----\n")
FINAL = ("Cloud-init v. 22.4.2 finished at Fri, 04 Dec 2026 14:00:04 +0000. Datasource "
         "DataSourceConfigDrive [net,ver=2][source=/dev/sr0].  Up 7.02 seconds")
RUNCMD_FAILED = (
    "2026-12-04 14:00:04,123 - cc_scripts_user.py[WARNING]: Failed to run module scripts-user "
    "(scripts in /var/lib/cloud/instance/scripts)\n"
    "2026-12-04 14:00:04,124 - util.py[WARNING]: Running module scripts-user (<module "
    "'cloudinit.config.cc_scripts_user' from '/usr/lib/python3/dist-packages/cloudinit/config/"
    "cc_scripts_user.py'>) failed\n")
LOCALE_FAILED = ("2026-12-04 14:00:03,001 - util.py[WARNING]: Running module locale (<module "
                 "'cloudinit.config.cc_locale' from '/usr/lib/python3/dist-packages/cloudinit/"
                 "config/cc_locale.py'>) failed\n")


def test_console_booting_done_failed_and_rebooted():
    assert boot_state("").started is False
    booting = boot_state(START)
    assert (booting.started, booting.final, booting.failure) == (True, None, None)
    done = boot_state(START + KEYS + FINAL + "\n")
    assert (done.final, done.failure) == (FINAL, None)
    failed = boot_state(START + RUNCMD_FAILED + KEYS + FINAL)
    assert failed.failure == RUNCMD_FAILED.splitlines()[0]
    assert "Failed to run module scripts-user" in failed.failure and failed.final == FINAL
    assert boot_state(START + LOCALE_FAILED).failure.endswith("config/cc_locale.py'>) failed")
    # a second boot (the old server started again): only its own lines count
    again = boot_state(START + RUNCMD_FAILED + FINAL + "\n" + START)
    assert (again.started, again.final, again.failure) == (True, None, None)
    assert last_boot(START + "x\n" + START)[0] == START.rstrip("\n")


def test_console_window_without_boot_start_is_not_started():
    window = "ci-info: +----+\n" + FINAL
    state = boot_state(window)
    assert (state.started, state.final) == (False, FINAL)


def test_host_keys_from_the_keys_block_only():
    assert host_keys(START + KEYS + FINAL) == [f"ecdsa-sha2-nistp256 {EC}", f"ssh-ed25519 {ED}"]
    assert host_keys(START + FINAL) == []
    assert host_keys(START + KEYS.rsplit("-----END", 1)[0]) == []  # cut off: no keys


class Clock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def scripted(*answers):
    answers = list(answers)

    def look(_left):
        return answers.pop(0) if len(answers) > 1 else answers[0]
    return look


def test_runner_waits_until_each_check_passes():
    clock = Clock()
    items = [Probe("tcp 22", scripted((WAIT, "refused"), (WAIT, "refused"), (PASS, "connected"))),
             Probe("cloud_init", scripted((PASS, FINAL)))]
    out = run_probes(items, label="t", timeout=60, interval=5, clock=clock, sleep=clock.sleep)
    assert [(o.name, o.outcome, o.answer, o.looks, o.seconds) for o in out] == [
        ("tcp 22", "passed", "connected", 3, 10.0), ("cloud_init", "passed", FINAL, 1, 0.0)]
    assert clock.sleeps == [5, 5]


def test_runner_times_out_with_the_last_answer():
    clock = Clock()
    out = run_probes([Probe("http x", scripted((WAIT, "HTTP 503")))], label="t", timeout=12,
                     interval=5, clock=clock, sleep=clock.sleep)
    assert [(o.outcome, o.answer, o.looks) for o in out] == [("timed out", "HTTP 503", 4)]
    assert clock.sleeps == [5, 5, 2] and clock.now == 12


def test_runner_fails_fast_and_stops_the_others():
    clock = Clock()
    out = run_probes([Probe("tcp 22", scripted((WAIT, "refused"))),
                      Probe("cloud_init", scripted((WAIT, "no final"), (FAIL, "Failed to run")))],
                     label="t", timeout=300, interval=5, clock=clock, sleep=clock.sleep)
    assert [(o.name, o.outcome) for o in out] == [("tcp 22", "stopped"),
                                                  ("cloud_init", "failed")]
    assert clock.now == 5


def test_runner_skipped_counts_as_ok():
    clock = Clock()
    out = run_probes([Probe("cloud_init", scripted((SKIP, "console refused")))], label="t",
                     timeout=1, interval=1, clock=clock, sleep=clock.sleep)
    assert out[0].outcome == "skipped" and out[0].ok


def test_tcp_and_http_probes_against_local_listeners():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        assert probes.tcp("127.0.0.1", port, 2) == (True, f"connected to 127.0.0.1:{port}")
        assert probes.http(f"http://127.0.0.1:{port}/health", 2) == (True, "HTTP 200")
        assert probes.http(f"http://127.0.0.1:{port}/moved", 2)[0] is True  # 3xx: it answers
        passed, answer = probes.http(f"http://127.0.0.1:{port}/broken", 2)
        assert (passed, answer.startswith("HTTP 500")) == (False, True)
    finally:
        server.shutdown()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    passed, answer = probes.tcp("127.0.0.1", free, 2)
    assert (passed, answer) == (False, f"127.0.0.1:{free}: Connection refused")
    assert probes.http(f"http://127.0.0.1:{free}/", 2)[0] is False


def test_command_probe_no_shell():
    assert probes.command("true", 5) == (True, "exit 0")
    assert probes.command("sh -c 'echo nope >&2; exit 3'", 5) == (False, "exit 3: nope")
    assert probes.command("echo $HOME", 5) == (True, "exit 0: $HOME")  # no shell expansion
    assert probes.command("no-such-command-ivc", 5) == (False, "no-such-command-ivc: command not "
                                                        "found")
    assert probes.command("sleep 5", 0.2) == (False, "still running after 0.2 s (stopped)")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = {"/health": 200, "/moved": 302, "/broken": 500}.get(self.path, 404)
        self.send_response(code)
        if code == 302:
            self.send_header("Location", "/elsewhere")
        self.end_headers()

    def log_message(self, *args):
        pass


def port(pid, net, ip):
    return SimpleNamespace(id=pid, network_id=net, fixed_ips=[{"ip_address": ip}])


@pytest.mark.parametrize(("fips", "expected"), [
    ([SimpleNamespace(port_id="p2", floating_ip_address="203.0.113.9")], "203.0.113.9"),
    ([SimpleNamespace(port_id="other", floating_ip_address="203.0.113.9")], "192.0.2.20"),
    ([], "192.0.2.20"),
])
def test_address_is_the_floating_ip_else_the_public_port(fips, expected):
    ports = [port("p1", "private", "10.0.0.5"), port("p2", "public", "192.0.2.20")]
    networks = [SimpleNamespace(id="public", is_router_external=True, is_shared=False),
                SimpleNamespace(id="private", is_router_external=False, is_shared=False)]
    assert pick_address(ports, fips, networks) == expected
    assert pick_address(ports[:1], [], networks) == "10.0.0.5"
    assert pick_address([], [], networks) is None


REAL = (__import__("pathlib").Path(__file__).parent / "data" / "console-cloud-init-22.4.2.txt"
        ).read_text()  # a local-cloud guest's whole console log (Debian 12, cloud-init 22.4.2)


def test_a_real_cloud_init_22_4_console():
    state = boot_state(REAL)
    assert state.started and state.failure is None  # a resizefs WARNING is not a failure
    assert state.final.startswith("Cloud-init v. 22.4.2 finished at Fri, 04 Dec 2026 15:39:08")
    keys = host_keys(REAL)
    assert [k.split()[0] for k in keys] == ["ecdsa-sha2-nistp256", "ssh-ed25519", "ssh-rsa"]
    assert all(len(k.split()) == 2 for k in keys)  # "root@web1" dropped
    # the same boot with a runcmd that exited 3 (cloud-init's lines, as its console handler
    # formats them): failed, quoting the first line
    broken = REAL.replace("-----BEGIN SSH HOST KEY KEYS-----", RUNCMD_FAILED +
                          "-----BEGIN SSH HOST KEY KEYS-----")
    assert boot_state(broken).failure == RUNCMD_FAILED.splitlines()[0]
    # only the head of the boot in the window: not started, the reader asks for more
    assert boot_state(REAL.splitlines()[-1]).started is False


# final_message: what cloud-init 22.4 prints for it (templater.render_string with
# cc_final_message's names, checked against Debian 12's cloudinit package)
@pytest.mark.parametrize(("template", "printed"), [
    ("ivc done v$version up ${uptime}s", "ivc done v22.4.2 up 7.02s"),
    ("## template: basic\nok $UPTIME", "ok 7.02"),
    ("  web ready at $timestamp  \n", "web ready at Fri, 04 Dec 2026 14:00:04 +0000"),
    ("cost $$version", "cost $22.4.2"),
    ("ivc: $datasource\nsecond line ${VERSION}",
     "ivc: DataSourceConfigDrive [net,ver=2][source=/dev/sr0]\nsecond line 22.4.2"),
    ("100% done!", "100% done!"),
])
def test_final_message_line_is_recognised(template, printed):
    text = START + KEYS + printed.replace("\n", " \r\n") + "\n[ivc-init] boot done\n"
    state = boot_state(text, template)
    assert state.final == " / ".join(printed.split("\n"))
    # cloud-init's own line does not count when the user_data declares its own
    assert boot_state(START + KEYS + FINAL + "\n", template).final is None
    # nor a line that only contains the message, or the message without its first letter
    assert boot_state(START + "echo: " + printed + "\n", template).final is None
    assert boot_state(START + printed[1:] + "\n", template).final is None
    # only the last boot counts
    assert boot_state(START + printed + "\n" + START, template).final is None


def test_blank_final_message_waits_for_cloud_init_own_line():
    assert final_message_pattern("  \n ") is None and final_message_pattern(None) is None
    assert boot_state(START + FINAL + "\n", "  ").final == FINAL


@pytest.mark.parametrize(("template", "words"), [
    ("$version $uptime", "no literal word"),
    ("${timestamp}: -- $uptime", "no literal word"),
    ("## template: basic\n", "no literal word"),
    ("## template: jinja\nDone {{ v1.instance_id }}", "jinja"),
    ("## template: mustache\ndone", "no template type 'mustache'"),
    ("done on $HOSTNAME", "'$HOSTNAME'"),
    ("done, up $uptime.", "write ${uptime}."),
    ("done $Version", "'$Version'"),
    ("done ${version.major}", "'${version.major}'"),
])
def test_final_message_that_cannot_be_recognised_is_refused(template, words):
    with pytest.raises(FinalMessageError) as info:
        final_message_pattern(template)
    assert words in str(info.value), str(info.value)
