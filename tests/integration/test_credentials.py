"""The first run on a real cloud (issue 9), against the local cloud: credentials, transient
failures of authentication, and invalid declarations that must change nothing.

Every run is a subprocess (`python -m invoke ...`) with stdin not a terminal and ``--json``:
each failure prints exactly one parseable JSON object, names what to fix, and shows no traceback
and no secret.
"""

import subprocess
import sys

import pytest
import yaml

from .conftest import CLOUDS_YAML, ROOT, cloud_state
from .faultproxy import FaultProxy, proxied_clouds_yaml, start_proxies

pytestmark = pytest.mark.cloud

KEYSTONE = "http://127.0.0.1:5000"
GROUP = """
[secgroups.PREFIX-web]
description = "issue 9"
rules = [ { protocol = "tcp", ports = "22" } ]
"""
SERVER = GROUP + """
[servers.PREFIX-app]
image = "ivc-tiny"
flavor = "m1.tiny"
networks = ["private"]
security_groups = ["PREFIX-web"]
"""


def local_entry(cloud="ivc-local"):
    return dict(yaml.safe_load(CLOUDS_YAML.read_text())["clouds"][cloud])


def write_clouds(path, name, entry):
    path.write_text(yaml.safe_dump({"clouds": {name: entry}}))
    path.chmod(0o600)
    return path


def run(ivc, *args, env=None):
    result = ivc.run(*args, "--json", env=env)
    assert "Traceback" not in result.out + result.err, result.err
    assert result.data is not None, (result.out, result.err)  # one parseable JSON object
    return result


def no_secret(result, *secrets):
    for secret in secrets:
        assert secret not in result.out + result.err


def test_a_clouds_yaml_without_password_is_exit_2_naming_the_entry_and_the_file(
        ivc, conn, tmp_path):
    entry = local_entry()
    entry["auth"] = {k: v for k, v in entry["auth"].items() if k != "password"}
    path = write_clouds(tmp_path / "horizon.yaml", "from-horizon", entry)
    ivc.write_spec(GROUP)
    before = cloud_state(conn, ivc.prefix)
    result = run(ivc, "ensure-secgroups",
                 env={"OS_CLOUD": "from-horizon", "OS_CLIENT_CONFIG_FILE": str(path)})
    assert result.code == 2, result
    for words in ("'from-horizon'", str(path), "no password", "OS_PASSWORD", "auth.password",
                  "application credential"):
        assert words in result.data["error"] and words in result.err
    assert result.data["exit_code"] == 2 and result.data["requests"] == 0
    assert cloud_state(conn, ivc.prefix) == before


def test_os_password_completes_the_entry(ivc, tmp_path):
    entry = local_entry()
    password = entry["auth"].pop("password")
    path = write_clouds(tmp_path / "horizon.yaml", "from-horizon", entry)
    ivc.write_spec(GROUP)
    result = run(ivc, "ensure-secgroups", env={
        "OS_CLOUD": "from-horizon", "OS_CLIENT_CONFIG_FILE": str(path), "OS_PASSWORD": password})
    assert result.code == 0, result
    assert "credentials: password, password from OS_PASSWORD (the environment)" in result.err
    assert result.err.count("cloud: cloud entry 'from-horizon'") == 1
    no_secret(result, password)


def test_a_wrong_password_is_exit_2_naming_the_entry_and_the_file(ivc, conn, tmp_path):
    entry = local_entry()
    entry["auth"]["password"] = "wrong-password-for-the-test"
    path = write_clouds(tmp_path / "clouds.yaml", "wrong", entry)
    ivc.write_spec(GROUP)
    before = cloud_state(conn, ivc.prefix)
    result = run(ivc, "ensure-secgroups",
                 env={"OS_CLOUD": "wrong", "OS_CLIENT_CONFIG_FILE": str(path)})
    assert result.code == 2, result
    assert "'wrong'" in result.data["error"] and str(path) in result.data["error"]
    assert "HTTP 401" in result.data["error"] and "refused the credentials" in result.data["error"]
    assert "attempt 1 of" not in result.err  # a 401 is not retried
    no_secret(result, "wrong-password-for-the-test", local_entry()["auth"]["password"])
    assert cloud_state(conn, ivc.prefix) == before


def test_a_malformed_clouds_yaml_names_the_yaml_problem_and_its_line(ivc, tmp_path):
    path = tmp_path / "clouds.yaml"
    path.write_text("clouds:\n  broken:\n\tauth: {}\n")
    ivc.write_spec(GROUP)
    result = run(ivc, "ensure-secgroups", env={"OS_CLOUD": "broken",
                                               "OS_CLIENT_CONFIG_FILE": str(path)})
    assert result.code == 2, result
    assert str(path) in result.data["error"] and "line 3" in result.data["error"]
    assert "not valid YAML" in result.data["error"]


@pytest.fixture
def keystone_proxy():
    proxy = FaultProxy(KEYSTONE)
    yield proxy
    proxy.close()


def test_identity_discovery_answered_503_once_is_retried(ivc, keystone_proxy, tmp_path):
    """The first request of the run: the unversioned auth_url's discovery (GET /)."""
    entry = local_entry()
    entry["auth"]["auth_url"] = keystone_proxy.url  # unversioned: keystoneauth must discover
    path = write_clouds(tmp_path / "clouds.yaml", "proxied", entry)
    keystone_proxy.add("GET", r"^/$", 503)
    ivc.write_spec(GROUP)
    result = run(ivc, "ensure-secgroups",
                 env={"OS_CLOUD": "proxied", "OS_CLIENT_CONFIG_FILE": str(path)})
    assert result.code == 0, result
    assert keystone_proxy.seen[0] == ("GET", "/", "injected 503")
    assert "authenticate to cloud proxied failed (attempt 1 of" in result.err
    assert result.data["changed"] is True


@pytest.mark.parametrize("fault", [503, "reset"])
def test_a_token_request_answered_503_or_reset_once_is_retried(ivc, keystone_proxy, tmp_path,
                                                               fault):
    entry = local_entry()
    entry["auth_type"] = "v3password"  # no discovery: the token request goes through the proxy
    entry["auth"]["auth_url"] = keystone_proxy.url + "/v3"
    path = write_clouds(tmp_path / "clouds.yaml", "proxied", entry)
    keystone_proxy.add("POST", r"/v3/auth/tokens", fault)
    ivc.write_spec(GROUP)
    result = run(ivc, "ensure-secgroups",
                 env={"OS_CLOUD": "proxied", "OS_CLIENT_CONFIG_FILE": str(path)})
    assert result.code == 0, result
    tokens = [s for s in keystone_proxy.seen if s[1] == "/v3/auth/tokens"]
    assert len(tokens) == 2 and tokens[1][2] == "201", keystone_proxy.seen
    if fault == "reset":  # keystoneauth sends the token request again itself (cloud.py:
        assert "Retrying in 0.5s" in result.err  # retry_discovery), after half a second
    else:
        assert "authenticate to cloud proxied failed (attempt 1 of" in result.err
    assert result.data["auth_requests"] >= 1


@pytest.mark.parametrize("fault,times", [("reset", 1), ("reset", 3), (503, 2)])
def test_faults_during_the_image_services_version_discovery_are_retried(ivc, tmp_path, fault,
                                                                         times):
    """Resets or 503s while openstacksdk discovers the image service's versions: keystoneauth
    swallows them, and openstacksdk raised NotSupported (ServiceDiscoveryException with an
    endpoint override), never retried. A reset is now sent again by ivc's session (up to 3
    times); what still fails is retried by ivc's policy like any transient failure."""
    proxies = start_proxies("image")
    try:
        path = proxied_clouds_yaml(CLOUDS_YAML, tmp_path / "clouds.yaml", proxies)
        proxies["image"].add("GET", r"^/$", fault, times=times)
        ivc.write_spec(GROUP)
        result = run(ivc, "status", env={"OS_CLOUD": "ivc-proxied",
                                         "OS_CLIENT_CONFIG_FILE": str(path)})
    finally:
        proxies["image"].close()
    assert result.code == 0, result
    seen = proxies["image"].seen
    injected = "reset before forwarding" if fault == "reset" else f"injected {fault}"
    discovery = [s[2] for s in seen if s[1] == "/"]
    assert discovery[:times] == [injected] * times and discovery[times] != injected, seen
    assert any(s[1].startswith("/v2/images") for s in seen), seen
    if fault == 503:  # swallowed by keystoneauth: ivc's policy retried the listing
        assert "list images failed (attempt 1 of" in result.err, result.err


@pytest.mark.parametrize("key,value", [("image", "x" * 10_000_000),
                                       ("networks", ["private", "n" * 256])],
                         ids=["image of 10 MB", "network of 256 characters"])
def test_a_name_longer_than_the_cloud_takes_is_exit_2_with_zero_requests(ivc, conn, key, value):
    """A 10 MB image name used to reach Glance and come back as HTTP 414 (exit 1)."""
    toml_value = '"' + value + '"' if isinstance(value, str) else \
        "[" + ", ".join(f'"{v}"' for v in value) + "]"
    declared = 'image = "ivc-tiny"' if key == "image" else 'networks = ["private"]'
    ivc.write_spec(SERVER.replace(declared, f"{key} = {toml_value}"))
    before = cloud_state(conn, ivc.prefix)
    result = run(ivc, "deploy")
    assert result.code == 2, result
    assert result.data["requests"] == 0 and result.data["mutating_requests"] == 0, result.data
    service = "Glance" if key == "image" else "Neutron"
    assert f"longer than the 255 characters {service} takes" in result.data["error"]
    assert cloud_state(conn, ivc.prefix) == before


BROKEN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBroken\n"  # type matches, data truncated


@pytest.mark.parametrize("declaration,words", [
    ('metadata = { "role/web" = "1" }\n', ["Nova refuses this metadata key", "'/'"]),
    ('keypair = "PREFIX-key"\n\n[keypairs.PREFIX-key]\npublic_key_file = "broken.pub"\n',
     ["public_key_file", "not a valid OpenSSH public key"]),
    ('userdata = "templates/bad.j2"\n', ["bad.j2 line 2 raised ZeroDivisionError"]),
    (f'metadata = {{ note = "{"n" * 10_000_000}" }}\n', ["10000000 characters"]),
], ids=["metadata key", "public key", "template raising", "10 MB value"])
def test_a_declaration_the_cloud_would_refuse_changes_nothing(ivc, conn, declaration, words):
    """deploy would first create the security group, then get Nova's 400: a half-made change.
    Validated before any cloud call, nothing is made, the security group included."""
    (ivc.root / "env" / "broken.pub").write_text(BROKEN_KEY)
    (ivc.root / "env" / "templates" / "bad.j2").write_text("#cloud-config\nx: {{ 1 // 0 }}\n")
    ivc.write_spec(SERVER + declaration)
    before = cloud_state(conn, ivc.prefix)
    result = run(ivc, "deploy")
    assert result.code == 2, result
    for word in words:
        assert word in result.data["error"], result.data["error"]
    assert result.data["mutating_requests"] == 0 and result.data["requests"] == 0
    assert len(result.out) < 5000 and len(result.err) < 5000  # a long value is cut
    after = cloud_state(conn, ivc.prefix)
    assert after == before and after["groups"] == []  # no security group was made either


def test_an_unknown_flag_is_exit_2_with_one_json_object(ivc):
    result = run(ivc, "deploy", "--dryrun")
    assert result.code == 2 and result.data["exit_code"] == 2
    assert "--dryrun" in result.data["error"]


def test_the_ivc_console_script_exits_2_on_an_unknown_core_flag(ivc):
    proc = subprocess.run([sys.executable, "-m", "ivc_tasks.cli", "--dryrun", "deploy"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--dryrun" in proc.stderr
    assert "Traceback" not in proc.stderr
