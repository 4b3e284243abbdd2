"""Bad inputs, grouped by kind: files, templates, declarations, settings, flags, credentials.

Each case runs a task as a user does (invoke's Program, with ``--json``) and asserts the exit
code, the message's key words (in the JSON object and on stderr), that no traceback appears,
that nothing was changed (the fake cloud saw no mutating call; the credential cases made no
request at all) and that no secret was printed. Validation precedes any connection, so the fake
cloud is enough here; tests/integration/test_credentials.py shows a sample against the local
cloud, unchanged.
"""

import json
import logging
import os
from pathlib import Path

import pytest
import tenacity
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from fakecloud import FakeConnection
from invoking import run

from ivc_tasks.cloud import Cloud
from ivc_tasks.credentials import resolve_credentials
from ivc_tasks.cloud import connect as REAL_CONNECT  # kept before any test replaces it
from ivc_tasks.errors import ConfigError
from ivc_tasks.settings import load_settings

SECRET = "swordfish-7-do-not-print"  # a template variable, never printed
PASSWORD = "hunter2-never-printed"  # a password in clouds.yaml, never printed
BASE = """
[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
networks = ["private"]

[secgroups.web]
description = "web"
rules = [ { protocol = "tcp", ports = "22" } ]

[servers.app]
security_groups = ["web"]
userdata = "t.j2"
userdata_vars = { secret_word = "SECRET" }
""".replace("SECRET", SECRET)


def public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH,
                            serialization.PublicFormat.OpenSSH).decode()


class World:
    """An env file, a spec and files under tmp_path; the fake cloud behind ``connect``."""

    def __init__(self, root: Path, monkeypatch):
        self.root, self.mp = root, monkeypatch
        self.env = root / "env"
        self.env.mkdir()
        self.env_file = self.env / "unit.env"
        self.env_file.write_text("OS_CLOUD=fake\n")
        self.spec = self.env / "unit.toml"
        self.spec.write_text(BASE)
        self.template = self.env / "t.j2"
        self.template.write_text("#cloud-config\nfinal_message: {{ secret_word }}\n")
        (self.env / "key.pub").write_text(public_key() + "\n")
        self.fake = FakeConnection()
        monkeypatch.setenv("IVC_ROOT", str(root))
        monkeypatch.setenv("IVC_ENV", "unit")
        monkeypatch.setenv("CI", "true")
        for key in list(os.environ):
            if key.startswith("OS_") or (key.startswith("IVC_") and key not in ("IVC_ROOT",
                                                                               "IVC_ENV")):
                monkeypatch.delenv(key)

        def connect(settings):
            return Cloud(conn=self.fake, env=settings.env, poll_interval=0,
                         sleep=lambda s: None, retry_overrides={"wait": tenacity.wait_none()})

        monkeypatch.setattr("ivc_tasks.cloud.connect", connect)

    def add(self, text: str) -> None:
        """Append declarations to the base spec."""
        self.spec.write_text(BASE + "\n" + text)

    def real_cloud(self, clouds_yaml: str | bytes | None, env: str = "OS_CLOUD=c\n",
                   config_file: Path | None = None) -> Path:
        """Use the real ``connect`` with this clouds.yaml (its services are never reached)."""
        self.mp.setattr("ivc_tasks.cloud.connect", REAL_CONNECT)
        path = self.root / "clouds.yaml"
        if clouds_yaml is not None:
            if isinstance(clouds_yaml, bytes):
                path.write_bytes(clouds_yaml)
            else:
                path.write_text(clouds_yaml.replace("PASSWORD", PASSWORD))
        self.env_file.write_text(f"{env}OS_CLIENT_CONFIG_FILE={config_file or path}\n"
                                 "IVC_RETRY_ATTEMPTS=1\n")
        return path


@pytest.fixture
def world(tmp_path, monkeypatch):
    return World(tmp_path, monkeypatch)


@pytest.fixture(autouse=True)
def ivc_logger():
    """The tasks set up the ``ivc`` logger (stderr, no propagation); put it back afterwards, so
    that other tests' caplog still sees its records."""
    log = logging.getLogger("ivc")
    saved = (list(log.handlers), log.propagate, log.level)
    yield
    log.handlers[:], log.propagate = saved[0], saved[1]
    log.setLevel(saved[2])


ENTRY = ("clouds:\n  c:\n    auth:\n      auth_url: http://127.0.0.1:9/v3\n      username: u\n"
         "      project_name: p\n      user_domain_name: Default\n"
         "      project_domain_name: Default\n")
LONG = "x" * 10_000_000  # 10 MB: messages show 80 characters and the length


# -- the cases: (kind, id, setup(world), argv, exit code, key words) ---------------------------
def spec_text(text):
    return lambda w: w.add(text)


def write(name, data):
    def setup(w):
        target = w.env / name
        if isinstance(data, bytes):
            target.write_bytes(data)
        else:
            target.write_text(data)
    return setup


def both(*setups):
    def setup(w):
        for s in setups:
            s(w)
    return setup


def keypair(pub_text):
    return both(write("bad.pub", pub_text),
                spec_text('[keypairs.k1]\npublic_key_file = "bad.pub"\n'))


GOOD_KEY = public_key()
OTHER_TYPE = "ssh-rsa " + GOOD_KEY.split()[1]

CASES = [
    # files
    ("files", "spec is a folder", lambda w: w.mp.setenv("IVC_SPEC", str(w.env)),
     ["deploy"], 2, ["is a folder"]),
    ("files", "spec missing", lambda w: w.spec.unlink(), ["deploy"], 2, ["file not found"]),
    ("files", "spec not UTF-8", write("unit.toml", b"[servers.\xff]\n"), ["deploy"], 2,
     ["not UTF-8"]),
    ("files", "spec not TOML", write("unit.toml", "[servers\n"), ["deploy"], 2, ["invalid TOML"]),
    ("files", "public key file missing", spec_text('[keypairs.k1]\npublic_key_file = "no.pub"\n'),
     ["deploy"], 2, ["public key file", "does not exist"]),
    ("files", "private key instead", keypair("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n"),
     ["deploy"], 2, ["PRIVATE key"]),
    ("files", "public key bad base64", keypair("ssh-ed25519 AAAA!!!notbase64 me@host\n"),
     ["deploy"], 2, ["not a valid OpenSSH public key", "Nova would refuse"]),
    ("files", "public key type mismatch", keypair(OTHER_TYPE + "\n"), ["deploy"], 2,
     ["not a valid OpenSSH public key"]),
    ("files", "public key truncated", keypair(GOOD_KEY[:40] + "\n"), ["deploy"], 2,
     ["not a valid OpenSSH public key"]),
    ("files", "two keys in one file", keypair(GOOD_KEY + "\n" + GOOD_KEY + "\n"), ["deploy"], 2,
     ["more than one line"]),
    ("files", "embedded file missing",
     spec_text('[servers.app2]\nfiles = [ { path = "/etc/x", source = "nope" } ]\n'),
     ["deploy"], 2, ["source file", "does not exist"]),
    ("files", "spec path too long", lambda w: w.mp.setenv("IVC_SPEC", "d/" + "y" * 5000),
     ["deploy"], 2, ["characters"]),
    # templates
    ("templates", "raises at render", write("t.j2", "#cloud-config\nx: {{ 1 // 0 }}\n"),
     ["deploy"], 2, ["t.j2", "line 2", "ZeroDivisionError"]),
    ("templates", "not UTF-8", write("t.j2", b"#cloud-config\nx: \xff\xfe\n"), ["deploy"], 2,
     ["t.j2", "not UTF-8"]),
    ("templates", "undefined variable", write("t.j2", "#cloud-config\nx: {{ nope }}\n"),
     ["deploy"], 2, ["undefined variable 'nope'"]),
    ("templates", "syntax error", write("t.j2", "#cloud-config\nx: {% if %}\n"), ["deploy"], 2,
     ["t.j2 line 2"]),
    ("templates", "iterates a number", write("t.j2", "{% for x in 5 %}{% endfor %}"),
     ["deploy"], 2, ["t.j2", "TypeError"]),
    ("templates", "missing include", write("t.j2", "{% include 'other.j2' %}"), ["deploy"], 2,
     ["cannot find 'other.j2'"]),
    ("templates", "files need cloud-config",
     both(write("t.j2", "#!/bin/sh\n"), write("motd", "hi"),
          spec_text('[servers.app2]\nuserdata = "t.j2"\n'
                    'files = [ { path = "/etc/motd", source = "motd" } ]\n')),
     ["deploy"], 2, ["#cloud-config"]),
    ("templates", "cloud-config not YAML", write("t.j2", "#cloud-config\nx: [\n"), ["deploy"], 2,
     ["not valid YAML"]),
    ("templates", "user_data too big", write("t.j2", "#!/bin/sh\n" + "#" * 70000), ["deploy"], 2,
     ["over Nova's limit"]),
    ("templates", "template missing", spec_text('[servers.app2]\nuserdata = "none.j2"\n'),
     ["deploy"], 2, ["userdata template", "does not exist"]),
    # declarations (the cloud's own rules)
    ("declarations", "metadata key with /", spec_text('[servers.app2]\nmetadata = { "a/b" = "1" }\n'),
     ["deploy"], 2, ["Nova refuses this metadata key", "'/'"]),
    ("declarations", "metadata key with ,", spec_text('[servers.app2]\nmetadata = { "a,b" = "1" }\n'),
     ["deploy"], 2, ["Nova refuses this metadata key"]),
    ("declarations", "metadata value 256", spec_text(f'[servers.app2]\nmetadata = {{ k = "{"v" * 256}" }}\n'),
     ["deploy"], 2, ["256 characters", "at most 255"]),
    ("declarations", "metadata value 10 MB", spec_text(f'[servers.app2]\nmetadata = {{ k = "{LONG}" }}\n'),
     ["deploy"], 2, ["10000000 characters"]),
    ("declarations", "metadata key 256", spec_text(f'[servers.app2]\nmetadata = {{ {"k" * 256} = "v" }}\n'),
     ["deploy"], 2, ["256 characters", "1-255"]),
    ("declarations", "keypair name with /", spec_text('[servers.app2]\nkeypair = "a/b"\n'),
     ["deploy"], 2, ["not a valid keypair name"]),
    ("declarations", "keypair name leading space", spec_text('[servers.app2]\nkeypair = "x "\n'
                                                             '[keypairs." x"]\npublic_key_file = "key.pub"\n'),
     ["deploy"], 2, ["not a valid keypair name"]),
    ("declarations", "keypair name with .", spec_text('[keypairs."a.b"]\npublic_key_file = "key.pub"\n'),
     ["deploy"], 2, ["not a valid keypair name"]),
    ("declarations", "group description 256", spec_text(f'[secgroups.g]\ndescription = "{"d" * 256}"\n'),
     ["deploy"], 2, ["256 characters", "Neutron's 255"]),
    ("declarations", "rule description 256",
     spec_text(f'[secgroups.g]\nrules = [ {{ protocol = "tcp", ports = "80", description = "{"d" * 256}" }} ]\n'),
     ["deploy"], 2, ["rules[0].description", "Neutron's 255"]),
    ("declarations", "group name 256", spec_text(f'[secgroups.{"g" * 256}]\n'), ["deploy"], 2,
     ["not a usable group name"]),
    ("declarations", "port 70000", spec_text('[secgroups.g]\nrules = [ { protocol = "tcp", ports = "70000" } ]\n'),
     ["deploy"], 2, ["outside 1-65535"]),
    ("declarations", "unknown protocol", spec_text('[secgroups.g]\nrules = [ { protocol = "tcpp" } ]\n'),
     ["deploy"], 2, ["protocol"]),
    ("declarations", "prefix with host bits",
     spec_text('[secgroups.g]\nrules = [ { remote_ip_prefix = "10.0.0.1/8" } ]\n'),
     ["deploy"], 2, ["host bits"]),
    ("declarations", "ethertype", spec_text('[secgroups.g]\nrules = [ { ethertype = "IPv5" } ]\n'),
     ["deploy"], 2, ["not an ethertype"]),
    ("declarations", "server name", spec_text("[servers.Web_1]\n"), ["deploy"], 2,
     ["not a valid server name"]),
    ("declarations", "server name 10 MB", spec_text(f"[servers.{LONG}]\n"), ["deploy"], 2,
     ["characters", "not a valid server name"]),
    # settings
    ("settings", "unknown environment", lambda w: w.mp.setenv("IVC_ENV", "nope"), ["deploy"], 2,
     ["no env file", "'nope'"]),
    ("settings", "environment name too long", lambda w: w.mp.setenv("IVC_ENV", "e" * 300),
     ["deploy"], 2, ["not an environment name", "up to 64"]),
    ("settings", "environment name with /", lambda w: w.mp.setenv("IVC_ENV", "../x"), ["deploy"],
     2, ["not an environment name"]),
    ("settings", "timeout not a number", lambda w: w.mp.setenv("IVC_BOOT_TIMEOUT", "abc"),
     ["deploy"], 2, ["IVC_BOOT_TIMEOUT", "not a number"]),
    ("settings", "attempts 0", lambda w: w.mp.setenv("IVC_RETRY_ATTEMPTS", "0"), ["deploy"], 2,
     ["IVC_RETRY_ATTEMPTS", "greater than 0"]),
    ("settings", "poll interval 10 MB", lambda w: w.mp.setenv("IVC_POLL_INTERVAL", LONG),
     ["deploy"], 2, ["IVC_POLL_INTERVAL", "characters"]),
    ("settings", "env file not UTF-8", lambda w: w.env_file.write_bytes(b"OS_CLOUD=\xff\n"),
     ["deploy"], 2, ["unit.env", "cannot read the settings"]),
    ("settings", "env file is a folder",
     lambda w: (w.env_file.unlink(), w.env_file.mkdir()), ["deploy"], 2, ["no env file"]),
    ("settings", "root folder too long", lambda w: w.mp.setenv("IVC_ROOT", "/" + "r" * 5000),
     ["deploy"], 2, ["characters"]),
    # flags
    ("flags", "unknown flag", None, ["deploy", "--dryrun"], 2, ["No idea what '--dryrun' is"]),
    ("flags", "flag without value", None, ["deploy", "--timeout"], 2, ["needed value"]),
    ("flags", "unknown task", None, ["deplo"], 2, ["No idea what 'deplo' is"]),
    ("flags", "name missing", None, ["create-instance"], 2, ["--name is required"]),
    ("flags", "timeout not a number", None, ["create-instance", "--name", "app", "--timeout", "x"],
     2, ["--timeout", "not a number"]),
    ("flags", "negative timeout", None, ["deploy", "--timeout", "-1"], 2, ["greater than 0"]),
    ("flags", "parallel 0", None, ["rotate", "--name", "app", "--parallel", "0"], 2,
     ["--parallel", "1 or more"]),
    ("flags", "destroy without --yes", None, ["destroy", "--name", "app"], 2, ["without --yes"]),
    ("flags", "undeclared server", None, ["create-instance", "--name", "nope"], 2, ["nope"]),
    ("flags", "server name of 10 MB", None, ["create-instance", "--name", LONG], 2,
     ["characters)", "declared: app"]),
    # credentials (the real connect; nothing listens at the auth_url)
    ("credentials", "no password, not a terminal", lambda w: w.real_cloud(ENTRY), ["deploy"], 2,
     ["cloud entry 'c'", "clouds.yaml", "no password", "OS_PASSWORD", "auth.password",
      "application credential"]),
    ("credentials", "OS_* without OS_PASSWORD",
     lambda w: w.real_cloud("clouds: {}\n", env="OS_AUTH_URL=http://127.0.0.1:9/v3\nOS_USERNAME=u\n"
                                                "OS_PROJECT_NAME=p\nOS_USER_DOMAIN_NAME=Default\n"
                                                "OS_PROJECT_DOMAIN_NAME=Default\n"),
     ["deploy"], 2, ["the OS_* variables", "no password", "OS_PASSWORD"]),
    ("credentials", "clouds file is a folder", lambda w: w.real_cloud(None, config_file=w.env),
     ["deploy"], 2, ["OS_CLIENT_CONFIG_FILE", "is not a file"]),
    ("credentials", "malformed clouds.yaml",
     lambda w: w.real_cloud("clouds:\n  c:\n\tauth:\n      password: PASSWORD\n"), ["deploy"], 2,
     ["clouds.yaml", "not valid YAML", "line 3"]),
    ("credentials", "clouds file missing",
     lambda w: (w.real_cloud(None), None)[1], ["deploy"], 2,
     ["OS_CLIENT_CONFIG_FILE", "does not exist"]),
    ("credentials", "no such entry", lambda w: w.real_cloud(ENTRY, env="OS_CLOUD=other\n"),
     ["deploy"], 2, ["OS_CLOUD='other'", "no such cloud entry", "it has: c"]),
    ("credentials", "application credential without secret",
     lambda w: w.real_cloud("clouds:\n  c:\n    auth_type: v3applicationcredential\n    auth:\n"
                            "      auth_url: http://127.0.0.1:9/v3\n"
                            "      application_credential_id: abc\n"), ["deploy"], 2,
     ["cloud entry 'c'", "no application credential secret"]),
    ("credentials", "unknown auth_type",
     lambda w: w.real_cloud("clouds:\n  c:\n    auth_type: magic\n    auth:\n"
                            "      auth_url: http://127.0.0.1:9/v3\n"), ["deploy"], 2,
     ["unknown auth_type"]),
    ("credentials", "clouds.yaml is a list", lambda w: w.real_cloud("- a\n- b\n"), ["deploy"], 2,
     ["not a clouds file"]),
    ("credentials", "clouds.yaml not UTF-8", lambda w: w.real_cloud(b"clouds:\n  \xff: {}\n"),
     ["deploy"], 2, ["not UTF-8"]),
    ("credentials", "no cloud chosen",
     lambda w: w.real_cloud(ENTRY + "  d:\n    auth: {}\n", env=""), ["deploy"], 2,
     ["no cloud configured", "OS_CLOUD"]),
]


@pytest.mark.parametrize("kind,setup,argv,code,words",
                         [pytest.param(k, s, a, c, w, id=f"{k}: {i}") for k, i, s, a, c, w in CASES])
def test_bad_input(world, capsys, kind, setup, argv, code, words):
    if setup is not None:
        setup(world)
    assert run(*argv, "--json") == code
    out, err = capsys.readouterr()
    data = json.loads(out)  # exactly one JSON object on stdout
    assert data["exit_code"] == code
    for word in words:
        assert word in data["error"] and word in err, (word, data["error"])
    assert "Traceback" not in out + err
    assert len(data["error"]) < 2500 and len(err) < 5000  # long values are cut
    assert SECRET not in out + err and PASSWORD not in out + err
    assert world.fake.mutations() == []  # nothing changed
    assert data.get("mutating_requests", 0) == 0
    if kind == "credentials":
        assert data["requests"] == 0  # refused before the first request


def test_there_are_forty_bad_inputs_of_every_kind():
    kinds = {k for k, *_ in CASES}
    assert len(CASES) >= 40
    assert kinds == {"files", "templates", "declarations", "settings", "flags", "credentials"}


def test_the_base_declarations_are_valid(world, capsys):
    """The control: without the bad input, the same run succeeds (and changes the fake cloud)."""
    assert run("deploy", "--json") == 0
    assert json.loads(capsys.readouterr().out)["changed"] is True


# -- credentials, by function ------------------------------------------------------------------
def _settings(world, clouds_yaml, env="OS_CLOUD=c\n", environ=None):
    world.real_cloud(clouds_yaml, env=env)
    return load_settings("unit", root=world.root, environ=environ or {})


def test_a_terminal_is_asked_once_and_the_answer_is_used(world, monkeypatch):
    settings = _settings(world, ENTRY)
    asked = []

    def prompt(text):
        asked.append(text)
        return "typed-secret"

    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(world.root / "clouds.yaml"))
    creds = resolve_credentials(settings, prompt=prompt)
    assert len(asked) == 1 and "c" in asked[0] and "clouds.yaml" in asked[0]
    assert creds.region.config["auth"]["password"] == "typed-secret"
    assert creds.source == "password, password typed at the prompt"


def test_without_a_terminal_nothing_is_asked(world, monkeypatch):
    settings = _settings(world, ENTRY)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(world.root / "clouds.yaml"))
    monkeypatch.setattr("ivc_tasks.credentials._getpass", lambda text: pytest.fail("prompted"))
    monkeypatch.delenv("CI")
    with pytest.raises(ConfigError, match="asks only at a terminal"):
        resolve_credentials(settings)  # pytest's stdin is not a terminal


def test_os_password_fills_a_password_the_entry_lacks(world, monkeypatch):
    settings = _settings(world, ENTRY)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(world.root / "clouds.yaml"))
    monkeypatch.setenv("OS_PASSWORD", "from-env")
    creds = resolve_credentials(settings, password_origin="the environment")
    assert creds.region.config["auth"]["password"] == "from-env"
    assert creds.source == "password, password from OS_PASSWORD (the environment)"


def test_the_entrys_own_password_wins_over_os_password(world, monkeypatch):
    settings = _settings(world, ENTRY + "      password: PASSWORD\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(world.root / "clouds.yaml"))
    monkeypatch.setenv("OS_PASSWORD", "from-env")
    creds = resolve_credentials(settings)
    assert creds.region.config["auth"]["password"] == PASSWORD
    assert "from the entry" in creds.source and PASSWORD not in creds.source


def test_which_cloud_and_credentials_are_logged_once_without_the_secret(world, capsys):
    world.real_cloud(ENTRY + "      password: PASSWORD\n")
    assert run("deploy", "--json") == 1  # nothing listens: the authentication fails
    out, err = capsys.readouterr()
    assert err.count("cloud: cloud entry 'c' in ") == 1
    assert "credentials: password, password from the entry" in err
    assert PASSWORD not in out + err and "Traceback" not in err
    data = json.loads(out)
    assert data["exit_code"] == 1 and "authenticate to cloud entry 'c'" in data["error"]
