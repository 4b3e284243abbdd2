"""cloud.py: request counting, the retried call (and the create that is not blindly re-sent),
polling, redaction, and the connection's configuration errors. No cloud is contacted."""

import os
from types import SimpleNamespace

import pytest
import tenacity
from fakecloud import http_error
from keystoneauth1 import exceptions as ksa

from ivc_tasks.cloud import Cloud, CloudCallError, RequestCounter, _environment, connect, scrub
from ivc_tasks.errors import CloudError, ConfigError
from ivc_tasks.settings import Settings, load_settings, make_settings


def make_cloud(**kw):
    """A Cloud with no connection; ``kw``: Settings fields (``retry_attempts=2``) or Cloud
    fields (``sleep=...``)."""
    settings = {k: kw.pop(k) for k in list(kw) if k in Settings.__dataclass_fields__}
    fields = dict(conn=None, settings=make_settings(**({"env": "test", "poll_interval": 0.5}
                                                        | settings)),
                  sleep=lambda s: None, retry_overrides={"wait": tenacity.wait_none()})
    return Cloud(**(fields | kw))


def response(method, url):
    return SimpleNamespace(request=SimpleNamespace(method=method, url=url))


def test_counter_counts_every_request_and_tells_auth_from_changes():
    counter = RequestCounter()
    for method, url in [("GET", "http://k:5000/"), ("POST", "http://k:5000/v3/auth/tokens"),
                        ("GET", "http://n/v2.0/security-groups"), ("post", "http://n/v2.0/x"),
                        ("DELETE", "http://n/v2.0/x/1"), ("PUT", "http://c/v2.1/y")]:
        counter.hook(response(method, url))
    assert counter.snapshot() == {
        "requests": 6, "requests_by_method": {"DELETE": 1, "GET": 2, "POST": 2, "PUT": 1},
        "auth_requests": 1, "mutating_requests": 3}
    # the console log is a POST action that only reads; any other action changes something
    counter.hook(SimpleNamespace(request=SimpleNamespace(
        method="POST", url="http://c/v2.1/servers/1/action",
        body=b'{"os-getConsoleOutput": {"length": 200}}')))
    counter.hook(SimpleNamespace(request=SimpleNamespace(
        method="POST", url="http://c/v2.1/servers/1/action", body='{"os-stop": null}')))
    assert counter.snapshot()["mutating_requests"] == 4


def test_call_retries_transient_errors_then_succeeds():
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise http_error(503, "busy")
        return "ok"

    assert make_cloud().call("list things", flaky) == "ok"
    assert len(attempts) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_call_fails_fast_on_client_errors_with_the_request_id(status):
    attempts = []

    def bad():
        attempts.append(1)
        raise http_error(status, "you did it wrong", **{"x-openstack-request-id": "req-42"})

    with pytest.raises(CloudCallError) as info:
        make_cloud().call("create thing", bad)
    assert len(attempts) == 1
    assert info.value.status == status
    assert info.value.exit_code == 1
    assert str(info.value) == (f"create thing failed: HTTP {status}: you did it wrong "
                               "(request id req-42)")


def test_call_wraps_connection_failures_after_the_last_attempt():
    cloud = make_cloud(retry_attempts=2)
    with pytest.raises(CloudCallError) as info:
        cloud.call("list servers", lambda: (_ for _ in ()).throw(ksa.ConnectFailure("refused")))
    assert info.value.status is None
    assert str(info.value) == "list servers failed: ConnectFailure: refused"


def test_conflict_is_transient_only_when_asked():
    calls = []

    def conflict():
        calls.append(1)
        if len(calls) == 1:
            raise http_error(409, "task_state is set")
        return "attached"

    with pytest.raises(CloudCallError):
        make_cloud().call("attach", conflict)
    calls.clear()
    assert make_cloud().call("attach", conflict, conflict_is_transient=True) == "attached"


def test_a_create_is_not_resent_when_the_lookup_finds_what_the_lost_attempt_made():
    made = []

    def create():
        made.append("server")
        raise http_error(502, "bad gateway")  # the server was made, the response lost

    found = make_cloud().call("create server", create, done_already=lambda: made and "found it")
    assert found == "found it"
    assert made == ["server"]


def test_a_create_is_resent_when_the_lookup_finds_nothing():
    attempts = []

    def create():
        attempts.append(1)
        if len(attempts) == 1:
            raise http_error(503, "unavailable")
        return "created"

    lookups = []
    assert make_cloud().call("create", create, done_already=lambda: lookups.append(1)) == "created"
    assert len(attempts) == 2 and len(lookups) == 1


def test_other_exceptions_are_not_wrapped():
    with pytest.raises(KeyError):
        make_cloud().call("x", lambda: {}["missing"])


def test_redacted_user_data_never_reaches_the_message():
    secret = "I2Nsb3VkLWNvbmZpZwpwYXNzd29yZDogaHVudGVyMgo="
    exc = http_error(400, f"Invalid input for field/attribute user_data. Value: {secret[:30]}")
    with pytest.raises(CloudCallError) as info:
        make_cloud().call("create server", lambda: (_ for _ in ()).throw(exc), redact=secret)
    assert str(info.value) == ("create server failed: HTTP 400: Invalid input for "
                               "field/attribute user_data. Value: <redacted user_data>")


def test_scrub_keeps_unrelated_text():
    assert scrub("id 0123456789abcdef0123 is bad", "c2VjcmV0c2VjcmV0c2VjcmV0") == \
        "id 0123456789abcdef0123 is bad"
    assert scrub("anything", None) == "anything"


def test_poll_waits_poll_interval_between_fetches_until_done(clock):
    states = iter(["BUILD", "BUILD", "ACTIVE"])
    cloud = make_cloud(sleep=clock.sleep, clock=clock)
    out = cloud.poll("server a", lambda: next(states), str, done=lambda s: s == "ACTIVE",
                     failed=lambda s: None, timeout=10)
    assert out == "ACTIVE" and clock.now == 1.5


def test_a_retry_waits_through_the_clouds_sleep(clock):
    outcomes = iter([http_error(503, "busy"), http_error(503, "busy"), "ok"])

    def flaky():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    cloud = make_cloud(sleep=clock.sleep, clock=clock,
                       retry_overrides={"wait": tenacity.wait_fixed(1.5)})
    assert cloud.call("list things", flaky) == "ok"
    assert clock.sleeps == [1.5, 1.5]  # two waits, on the injected clock, none in real time


def test_a_429_pause_is_kept_by_every_worker_on_the_clouds_clock(clock):
    clock.now = 100.0
    cloud = make_cloud(sleep=clock.sleep, clock=clock)
    answers = iter([http_error(429, "Too Many Requests", **{"Retry-After": "3"}), "ok"])

    def throttled():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert cloud.call("list servers", throttled) == "ok"
    assert clock.now == 103.0  # the pause, waited out before the retry (its own wait: none)
    clock.now = 101.0  # a call made while the pause still runs, e.g. by another worker
    assert cloud.call("list flavors", lambda: "flavors") == "flavors"
    assert clock.now == 103.0  # waited out the 2 s left of the pause before sending
    assert clock.sleeps == [0.0, 3.0, 2.0]  # the retry's own wait (none), the pause, its rest


def test_poll_fails_on_a_failed_state_and_on_timeout(clock):
    cloud = make_cloud(sleep=clock.sleep, clock=clock)
    with pytest.raises(CloudError, match="volume v: went to error_attaching"):
        cloud.poll("volume v", lambda: "error_attaching", str, done=lambda s: False,
                   failed=lambda s: f"went to {s}", timeout=10)
    with pytest.raises(CloudError, match=r"still attaching after 2 s"):
        cloud.poll("volume v", lambda: "attaching", str, done=lambda s: False,
                   failed=lambda s: None, timeout=2)
    assert clock.now == pytest.approx(0.5 + 2.0)


def test_environment_is_restored(monkeypatch):
    monkeypatch.setenv("OS_KEEP", "1")
    monkeypatch.delenv("OS_TEMP_IVC", raising=False)
    with _environment({"OS_KEEP": "2", "OS_TEMP_IVC": "x"}):
        assert os.environ["OS_KEEP"] == "2" and os.environ["OS_TEMP_IVC"] == "x"
    assert os.environ["OS_KEEP"] == "1" and "OS_TEMP_IVC" not in os.environ


def test_unknown_cloud_is_a_config_error_and_makes_no_request(tmp_path, monkeypatch):
    (tmp_path / "env").mkdir()
    (tmp_path / "clouds.yaml").write_text(
        "clouds:\n  other:\n    auth:\n      auth_url: http://127.0.0.1:9/\n")
    (tmp_path / "env" / "x.env").write_text("OS_CLOUD=nope\nOS_CLIENT_CONFIG_FILE=clouds.yaml\n")
    for key in list(os.environ):
        if key.startswith("OS_"):
            monkeypatch.delenv(key)
    settings = load_settings("x", root=tmp_path, environ={})
    no_request(monkeypatch)
    with pytest.raises(ConfigError) as info:
        connect(settings)
    assert str(info.value) == (
        f"{tmp_path}/env/x.env: OS_CLOUD='nope': no such cloud entry in {tmp_path}/clouds.yaml "
        "(it has: other); fix OS_CLOUD or the clouds.yaml entry")


def test_connect_hooks_the_counter_before_any_request(tmp_path, monkeypatch):
    (tmp_path / "env").mkdir()
    (tmp_path / "clouds.yaml").write_text(
        "clouds:\n  c:\n    auth:\n      auth_url: http://127.0.0.1:9/\n      username: u\n"
        "      password: p\n      project_name: p\n      user_domain_name: Default\n"
        "      project_domain_name: Default\n")
    (tmp_path / "env" / "x.env").write_text("OS_CLOUD=c\nOS_CLIENT_CONFIG_FILE=clouds.yaml\n")
    settings = load_settings("x", root=tmp_path, environ={})
    cloud = connect(settings, authenticate=False)
    hooks = cloud.conn.session.session.hooks["response"]
    assert cloud.counter.hook in hooks
    assert cloud.counter.total == 0 and cloud.settings is settings and cloud.env == "x"
    assert "OS_CLIENT_CONFIG_FILE" not in os.environ or \
        os.environ["OS_CLIENT_CONFIG_FILE"] != str(tmp_path / "clouds.yaml")


# -- credentials and the clouds file (issue 9) ---------------------------------------------------
@pytest.mark.parametrize("tty,ci,expected", [(True, None, True), (True, "true", False),
                                             (False, None, False)])
def test_ivc_asks_only_at_a_terminal_outside_ci(monkeypatch, tty, ci, expected):
    from ivc_tasks.credentials import interactive

    monkeypatch.setattr("sys.stdin", SimpleNamespace(isatty=lambda: tty))
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    assert interactive() is expected


def _clouds_settings(tmp_path, text):
    (tmp_path / "env").mkdir()
    if text is not None:
        (tmp_path / "clouds.yaml").write_text(text)
    (tmp_path / "env" / "x.env").write_text("OS_CLOUD=c\nOS_CLIENT_CONFIG_FILE=clouds.yaml\n")
    return load_settings("x", root=tmp_path, environ={})


def no_request(monkeypatch):
    """Fail the test at the first HTTP request (keystoneauth sends through requests)."""
    monkeypatch.setattr("requests.Session.send",
                        lambda *args, **kwargs: pytest.fail("an HTTP request was sent"))


@pytest.mark.parametrize("text,message", [
    (None, "{root}/env/x.env: OS_CLIENT_CONFIG_FILE: the clouds file {root}/clouds.yaml does not "
           "exist; create it or fix the path"),
    ("clouds:\n  c:\n   auth: {}\n  - x\n",
     "{root}/clouds.yaml: not valid YAML: expected <block end>, but found '-' at line 4, column 3; "
     "fix the clouds file (openstacksdk would skip it)"),
    ("just a string\n", "{root}/clouds.yaml: not a clouds file (expected a mapping with a 'clouds' "
                        "key of cloud entries); fix the file"),
    ("clouds:\n  other: {}\n", "{root}/env/x.env: OS_CLOUD='c': no such cloud entry in "
                               "{root}/clouds.yaml (it has: other); fix OS_CLOUD or the "
                               "clouds.yaml entry"),
], ids=["missing", "malformed", "not a mapping", "no such entry"])
def test_a_clouds_file_problem_is_named_before_any_request(tmp_path, monkeypatch, text,
                                                           message):
    for key in list(os.environ):
        if key.startswith("OS_"):
            monkeypatch.delenv(key)
    settings = _clouds_settings(tmp_path, text)
    no_request(monkeypatch)
    with pytest.raises(ConfigError) as info:
        connect(settings)
    assert str(info.value) == message.replace("{root}", str(tmp_path))


def test_no_clouds_file_at_all_says_so(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("OS_"):
            monkeypatch.delenv(key)
    monkeypatch.setattr("openstack.config.loader.CONFIG_FILES", [str(tmp_path / "none.yaml")])
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "x.env").write_text("OS_CLOUD=c\n")
    settings = load_settings("x", root=tmp_path, environ={})
    no_request(monkeypatch)
    with pytest.raises(ConfigError) as info:
        connect(settings)
    assert str(info.value) == (
        f"{tmp_path}/env/x.env: OS_CLOUD='c': no clouds file found (looked for "
        f"{tmp_path}/none.yaml); create one with that entry, or set OS_CLIENT_CONFIG_FILE")
