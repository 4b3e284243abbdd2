"""Settings: env file + environment -> one validated, frozen Settings."""

import dataclasses
import re
from pathlib import Path

import pytest

from ivc_tasks.errors import ConfigError
from ivc_tasks.settings import _NUMBERS, Settings, find_root, load_settings


@pytest.fixture
def root(tmp_path):
    (tmp_path / "env").mkdir()
    return tmp_path


def write_env(root: Path, name: str, text: str) -> Path:
    path = root / "env" / f"{name}.env"
    path.write_text(text)
    return path


def test_defaults(root):
    env_file = write_env(root, "local", "OS_CLOUD=devcloud\n")
    settings = load_settings(root=root, environ={})
    assert settings == Settings(
        env="local", root=root, env_file=env_file, spec_path=root / "env" / "local.toml",
        os_cloud="devcloud", boot_timeout=300.0, volume_timeout=120.0, delete_timeout=120.0,
        stop_timeout=120.0, poll_interval=0.5, retry_attempts=6, retry_max_seconds=120.0,
    )
    assert dict(settings.os_vars) == {"OS_CLOUD": "devcloud"}
    assert type(settings.retry_attempts) is int


def test_values_from_the_file(root):
    write_env(root, "local", "\n".join([
        "OS_CLOUD=c1", "IVC_BOOT_TIMEOUT=42.5", "IVC_VOLUME_TIMEOUT=7", "IVC_DELETE_TIMEOUT=8",
        "IVC_STOP_TIMEOUT=9", "IVC_POLL_INTERVAL=0.1", "IVC_RETRY_ATTEMPTS=3",
        "IVC_RETRY_MAX_SECONDS=30", "IVC_SPEC=decl/other.toml", "OTHER=x",
    ]))
    s = load_settings(root=root, environ={})
    assert (s.boot_timeout, s.volume_timeout, s.delete_timeout, s.stop_timeout, s.poll_interval,
            s.retry_attempts, s.retry_max_seconds) == (42.5, 7.0, 8.0, 9.0, 0.1, 3, 30.0)
    assert s.spec_path == root / "decl" / "other.toml"
    assert s.values["OTHER"] == "x"


def test_environment_wins_over_the_file(root):
    write_env(root, "local", "OS_CLOUD=from-file\nIVC_BOOT_TIMEOUT=10\nOS_REGION_NAME=r1\nOTHER=f\n")
    environ = {"OS_CLOUD": "from-env", "IVC_BOOT_TIMEOUT": "20", "OS_INTERFACE": "public",
               "HOME": "/root", "OTHER": "e"}
    s = load_settings(root=root, environ=environ)
    assert (s.os_cloud, s.boot_timeout, s.values["OTHER"]) == ("from-env", 20.0, "e")
    assert dict(s.os_vars) == {"OS_CLOUD": "from-env", "OS_REGION_NAME": "r1",
                               "OS_INTERFACE": "public"}
    assert "HOME" not in s.values


@pytest.mark.parametrize(("env_arg", "environ", "expected"), [
    (None, {}, "local"),
    (None, {"IVC_ENV": "staging"}, "staging"),
    ("prod", {"IVC_ENV": "staging"}, "prod"),  # an explicit argument wins
])
def test_which_env(root, env_arg, environ, expected):
    for name in ("local", "staging", "prod"):
        write_env(root, name, f"OS_CLOUD={name}-cloud\n")
    s = load_settings(env_arg, root=root, environ=environ)
    assert (s.env, s.os_cloud, s.env_file) == (expected, f"{expected}-cloud",
                                               root / "env" / f"{expected}.env")


def test_root_from_ivc_root(root):
    write_env(root, "local", "")
    assert load_settings(environ={"IVC_ROOT": str(root)}).root == root


@pytest.mark.parametrize(("folders", "start", "expected"), [
    (["env"], ".", "."),                                    # the folder itself
    (["env", "a/b/c"], "a/b/c", "."),                       # the nearest one upward
    (["env", "a/env", "a/b"], "a/b", "a"),                  # the nearest wins over a farther one
    (["a/b", "c/env"], "a/b", "a/b"),                       # none upward (a sibling's does not count)
])
def test_find_root(tmp_path, folders, start, expected):
    base = tmp_path / "repo"
    for folder in folders:
        (base / folder).mkdir(parents=True)
    assert find_root(base / start) == (base / expected).resolve()


def test_env_as_a_file_is_not_a_root(tmp_path):
    (tmp_path / "env").write_text("")
    (tmp_path / "sub").mkdir()
    assert find_root(tmp_path / "sub") == tmp_path / "sub"


def test_default_root_is_found_from_the_current_folder(root, monkeypatch):
    write_env(root, "prod", "OS_CLOUD=prod-cloud\n")
    (root / "decl" / "teams").mkdir(parents=True)
    monkeypatch.chdir(root / "decl" / "teams")
    s = load_settings("prod", environ={})
    assert (s.root, s.env_file, s.spec_path, s.os_cloud) == (
        root, root / "env" / "prod.env", root / "env" / "prod.toml", "prod-cloud")
    assert find_root() == root


def test_ivc_root_wins_over_the_search(root, tmp_path_factory, monkeypatch):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "env").mkdir()
    (elsewhere / "env" / "local.env").write_text("OS_CLOUD=elsewhere\n")
    write_env(root, "local", "OS_CLOUD=here\n")
    monkeypatch.chdir(root)
    assert load_settings(environ={"IVC_ROOT": str(elsewhere)}).os_cloud == "elsewhere"
    assert load_settings(environ={}).os_cloud == "here"


def test_no_env_folder_anywhere_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_settings(environ={})
    assert str(info.value) == (
        f"{tmp_path}/env/local.env: IVC_ENV: no env/ folder in {tmp_path} or any folder above it; "
        "run ivc from the folder that holds env/local.env (or below it), or set IVC_ROOT to that "
        "folder")
    assert info.value.exit_code == 2


def test_the_repository_is_its_own_root_when_run_from_it(monkeypatch):
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo / "tests" / "unit")
    assert load_settings("example", environ={}).root == repo


@pytest.mark.parametrize(("given", "expected"), [
    ("secrets/clouds.yaml", "{root}/secrets/clouds.yaml"),
    ("/etc/openstack/clouds.yaml", "/etc/openstack/clouds.yaml"),
])
def test_client_config_file_resolved_against_root(root, given, expected):
    write_env(root, "local", f"OS_CLIENT_CONFIG_FILE={given}\n")
    s = load_settings(root=root, environ={})
    assert s.os_vars["OS_CLIENT_CONFIG_FILE"] == expected.format(root=root)


@pytest.mark.parametrize(("given", "expected"), [
    ("env/x.toml", "{root}/env/x.toml"), ("/abs/spec.toml", "/abs/spec.toml"),
])
def test_spec_path(root, given, expected):
    write_env(root, "local", "")
    assert str(load_settings(root=root, environ={"IVC_SPEC": given}).spec_path) == expected.format(root=root)


def test_empty_values_mean_default(root):
    write_env(root, "local", "IVC_BOOT_TIMEOUT=\nIVC_RETRY_ATTEMPTS=\nOS_CLOUD=\nBARE_KEY\n")
    s = load_settings(root=root, environ={})
    assert (s.boot_timeout, s.retry_attempts, s.os_cloud) == (300.0, 6, None)


def test_redacted_masks_secrets_and_repr_hides_them(root):
    write_env(root, "local", "\n".join([
        "OS_CLOUD=c", "OS_PASSWORD=hunter2", "OS_APPLICATION_CREDENTIAL_SECRET=s3cret",
        "OS_AUTH_TOKEN=tok", "OS_USERNAME=alice", "my_secret_thing=x", "Api_Token=y",
    ]))
    s = load_settings(root=root, environ={})
    red = s.redacted()
    assert red["os_vars"] == {
        "OS_APPLICATION_CREDENTIAL_SECRET": "***", "OS_AUTH_TOKEN": "***", "OS_CLOUD": "c",
        "OS_PASSWORD": "***", "OS_USERNAME": "alice",
    }
    assert red["values"]["my_secret_thing"] == "***"
    assert red["values"]["Api_Token"] == "***"
    assert red["boot_timeout"] == 300.0 and red["env"] == "local"
    printed = repr(s) + str(red)
    for secret in ("hunter2", "s3cret", "tok"):
        assert secret not in printed
    assert s.os_vars["OS_PASSWORD"] == "hunter2"  # the real value is still there to use


def test_settings_are_frozen(root):
    write_env(root, "local", "")
    s = load_settings(root=root, environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.boot_timeout = 1
    with pytest.raises(TypeError):
        s.os_vars["OS_CLOUD"] = "x"


# -- bad inputs: each raises ConfigError naming the file, the variable, the value and the fix ---
BAD_VALUES = [
    ("IVC_BOOT_TIMEOUT", "soon", "is not a number of seconds", "300"),
    ("IVC_BOOT_TIMEOUT", "5m", "is not a number of seconds", "300"),
    ("IVC_VOLUME_TIMEOUT", "0", "must be greater than 0", "120"),
    ("IVC_DELETE_TIMEOUT", "-1", "must be greater than 0", "120"),
    ("IVC_STOP_TIMEOUT", "inf", "must be greater than 0", "120"),
    ("IVC_POLL_INTERVAL", "nan", "must be greater than 0", "0.5"),
    ("IVC_RETRY_ATTEMPTS", "2.5", "is not a whole number", "6"),
    ("IVC_RETRY_ATTEMPTS", "many", "is not a whole number", "6"),
    ("IVC_RETRY_MAX_SECONDS", "1e", "is not a number of seconds", "120"),
]


@pytest.mark.parametrize(("key", "value", "problem", "example"), BAD_VALUES)
def test_bad_value_in_file(root, key, value, problem, example):
    env_file = write_env(root, "local", f"{key}={value}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(root=root, environ={})
    assert str(info.value) == (f"{env_file}: {key}: {value!r} {problem}; set it to e.g. {example} "
                               "or remove it")


def test_bad_value_in_environment_says_so(root):
    env_file = write_env(root, "local", "IVC_BOOT_TIMEOUT=30\n")
    with pytest.raises(ConfigError) as info:
        load_settings(root=root, environ={"IVC_BOOT_TIMEOUT": "later"})
    assert str(info.value) == (
        f"{env_file} (overridden by the environment): IVC_BOOT_TIMEOUT: 'later' is not a number "
        "of seconds; set it to e.g. 300 or remove it")


@pytest.mark.parametrize(("existing", "listed"), [
    (["local", "prod"], "local, prod"),
    ([], "none (env/ has no *.env file)"),
])
def test_missing_env_file(root, existing, listed):
    for name in existing:
        write_env(root, name, "")
    with pytest.raises(ConfigError) as info:
        load_settings("staging", root=root, environ={})
    assert str(info.value) == (
        f"{root}/env/staging.env: IVC_ENV: no env file for environment 'staging'; create it or "
        f"pick one of: {listed}")


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "-x", "with space"])
def test_bad_env_name(root, name):
    write_env(root, "local", "")
    with pytest.raises(ConfigError) as info:
        load_settings(root=root, environ={"IVC_ENV": name})
    path = f"{root}/env/{name}.env"  # shown as its first 80 characters and its length
    shown = path if len(path) <= 80 else f"{path[:80]}... ({len(path)} characters)"
    assert str(info.value) == (
        f"{shown}: IVC_ENV: {name!r} is not an environment name; use up to 64 "
        "letters, digits, '.', '_' or '-' (available: local)")


def test_exit_code_is_invalid_input(root):
    with pytest.raises(ConfigError) as info:
        load_settings("nope", root=root, environ={})
    assert info.value.exit_code == 2


def test_example_env_lists_every_setting_with_its_default():
    text = (Path(__file__).resolve().parents[2] / "env" / "example.env").read_text()
    written = dict(re.findall(r"^#? ?([A-Z_]+)=(\S*)", text, re.M))
    for key, (_attr, default, kind) in _NUMBERS.items():
        assert key in written, key
        assert kind(written[key]) == default, (key, written[key], default)
    missing = {"IVC_ENV", "IVC_ROOT", "IVC_SPEC", "IVC_FLOATING_NETWORK", "IVC_DEBUG", "OS_CLOUD",
               "OS_CLIENT_CONFIG_FILE"} - set(written)
    assert missing == set()
