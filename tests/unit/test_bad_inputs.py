"""Bad inputs, grouped by kind: files, templates, declarations, settings, flags, credentials.

Each case runs a task as a user does (invoke's Program, with ``--json``) and asserts the exit
code, the whole message (in the JSON object and on stderr), that no traceback appears,
that nothing was changed (the fake cloud saw no mutating call; the credential cases made no
request at all) and that no secret was printed. Validation precedes any connection, so the fake
cloud is enough here; tests/integration/test_credentials.py shows a sample against the local
cloud, unchanged.
"""

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from fakecloud import FakeConnection
from invoking import run

from ivc_tasks.cloud import connect as REAL_CONNECT  # kept before any test replaces it
from ivc_tasks.credentials import resolve_credentials
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


SPEC = BASE  # conftest's task_env writes it to env/unit.toml, and TEMPLATE to env/t.j2
TEMPLATE = "#cloud-config\nhostname: {{ secret_word }}\n"


class World:
    """An env file, a spec and files under tmp_path; the fake cloud behind ``connect``
    (conftest's task_env); not a terminal (``CI`` set)."""

    def __init__(self, root: Path, monkeypatch, fake: FakeConnection):
        self.root, self.mp, self.fake = root, monkeypatch, fake
        self.env = root / "env"
        self.env_file = self.env / "unit.env"
        self.spec = self.env / "unit.toml"
        self.template = self.env / "t.j2"
        monkeypatch.setenv("CI", "true")

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
def world(tmp_path, monkeypatch, task_env):
    return World(tmp_path, monkeypatch, task_env)


ENTRY = ("clouds:\n  c:\n    auth:\n      auth_url: http://127.0.0.1:9/v3\n      username: u\n"
         "      project_name: p\n      user_domain_name: Default\n"
         "      project_domain_name: Default\n")
LONG = "x" * 10_000_000  # 10 MB: messages show 80 characters and the length


# -- the cases: (kind, id, setup(world), argv, exit code, message) -----------------------------
# The message is the whole error, as the JSON object's ``error`` gives it and stderr ends with
# it: what is wrong, where (file and entry, flag or setting) and the fix. ``{root}`` stands for
# the test's root folder; a message whose clipped length depends on that folder is a function
# of it.
def cut(text):
    """A long value as messages show it: its first 80 characters and its length."""
    return f"{text[:80]}... ({len(text)} characters)"


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
     ["deploy"], 2,
     ("{root}/env: spec: is a folder, not a file; point IVC_SPEC at the declarations file "
      "(e.g. env/NAME.toml)")),
    ("files", "spec missing", lambda w: w.spec.unlink(), ["deploy"], 2,
     ("{root}/env/unit.toml: spec: file not found; create it or point IVC_SPEC at the "
      "declarations")),
    ("files", "spec not UTF-8", write("unit.toml", b"[servers.\xff]\n"), ["deploy"], 2,
     ("{root}/env/unit.toml: spec: is not UTF-8 text (invalid start byte at byte 9); save "
      "it as UTF-8")),
    ("files", "spec not TOML", write("unit.toml", "[servers\n"), ["deploy"], 2,
     ("{root}/env/unit.toml: toml: invalid TOML: Expected ']' at the end of a table "
      "declaration (at line 1, column 9); fix the syntax")),
    ("files", "public key file missing", spec_text('[keypairs.k1]\npublic_key_file = "no.pub"\n'),
     ["deploy"], 2,
     ("{root}/env/unit.toml: keypairs.k1.public_key_file: public key file "
      "{root}/env/no.pub does not exist; create it or fix the path (relative to {root}/env)")),
    ("files", "private key instead", keypair("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n"),
     ["deploy"], 2,
     ("{root}/env/unit.toml: keypairs.k1.public_key_file: {root}/env/bad.pub holds a "
      "PRIVATE key; point it at the .pub file, and keep the private key out of the repo")),
    ("files", "public key bad base64", keypair("ssh-ed25519 AAAA!!!notbase64 me@host\n"),
     ["deploy"], 2,
     ("{root}/env/unit.toml: keypairs.k1.public_key_file: {root}/env/bad.pub: not a valid "
      "OpenSSH public key (Invalid format) (Nova would refuse it); use the one-line .pub "
      "file made by ssh-keygen, unchanged")),
    ("files", "public key type mismatch", keypair(OTHER_TYPE + "\n"), ["deploy"], 2,
     ("{root}/env/unit.toml: keypairs.k1.public_key_file: {root}/env/bad.pub: not a valid "
      "OpenSSH public key (Invalid key format) (Nova would refuse it); use the one-line "
      ".pub file made by ssh-keygen, unchanged")),
    ("files", "public key truncated", keypair(GOOD_KEY[:40] + "\n"), ["deploy"], 2,
     ("{root}/env/unit.toml: keypairs.k1.public_key_file: {root}/env/bad.pub: not a valid "
      "OpenSSH public key (Invalid data) (Nova would refuse it); use the one-line .pub "
      "file made by ssh-keygen, unchanged")),
    ("files", "two keys in one file", keypair(GOOD_KEY + "\n" + GOOD_KEY + "\n"), ["deploy"], 2,
     ("{root}/env/unit.toml: keypairs.k1.public_key_file: {root}/env/bad.pub: holds more "
      "than one line (one key per file) (Nova would refuse it); use the one-line .pub file "
      "made by ssh-keygen, unchanged")),
    ("files", "embedded file missing",
     spec_text('[servers.app2]\nfiles = [ { path = "/etc/x", source = "nope" } ]\n'),
     ["deploy"], 2,
     ("{root}/env/unit.toml: servers.app2.files[0].source: source file {root}/env/nope "
      "does not exist; create it or fix the path (relative to {root}/env)")),
    ("files", "spec path too long", lambda w: w.mp.setenv("IVC_SPEC", "d/" + "y" * 5000),
     ["deploy"], 2,
     lambda root: cut(f"{root}/d/" + "y" * 5000) + ": cannot read it: File name too long; fix "
     "the path or the file's permissions"),
    # templates
    ("templates", "raises at render", write("t.j2", "#cloud-config\nx: {{ 1 // 0 }}\n"),
     ["deploy"], 2,
     ("{root}/env/unit.toml: servers.app.userdata: template {root}/env/t.j2 line 2 raised "
      "ZeroDivisionError: integer division or modulo by zero; fix the template")),
    ("templates", "not UTF-8", write("t.j2", b"#cloud-config\nx: \xff\xfe\n"), ["deploy"], 2,
     ("{root}/env/unit.toml: servers.app.userdata: template {root}/env/t.j2 is not UTF-8 "
      "text (invalid start byte at byte 17); save it as UTF-8")),
    ("templates", "undefined variable", write("t.j2", "#cloud-config\nx: {{ nope }}\n"),
     ["deploy"], 2,
     ("{root}/env/unit.toml: servers.app.userdata: template {root}/env/t.j2 uses undefined "
      "variable 'nope'; add it to servers.app.userdata_vars or defaults.userdata_vars")),
    ("templates", "syntax error", write("t.j2", "#cloud-config\nx: {% if %}\n"), ["deploy"], 2,
     ("{root}/env/unit.toml: servers.app.userdata: template {root}/env/t.j2 line 2: "
      "Expected an expression, got 'end of statement block'; fix the Jinja syntax")),
    ("templates", "iterates a number", write("t.j2", "{% for x in 5 %}{% endfor %}"),
     ["deploy"], 2,
     ("{root}/env/unit.toml: servers.app.userdata: template {root}/env/t.j2 line 1 raised "
      "TypeError: 'int' object is not iterable; fix the template")),
    ("templates", "missing include", write("t.j2", "{% include 'other.j2' %}"), ["deploy"], 2,
     ("{root}/env/unit.toml: servers.app.userdata: template {root}/env/t.j2: cannot find "
      "'other.j2'; create the file or fix the path (relative to the spec file's folder)")),
    ("templates", "files need cloud-config",
     both(write("t.j2", "#!/bin/sh\n"), write("motd", "hi"),
          spec_text('[servers.app2]\nuserdata = "t.j2"\n'
                    'files = [ { path = "/etc/motd", source = "motd" } ]\n')),
     ["deploy"], 2,
     ("{root}/env/unit.toml: servers.app2.files: files need #cloud-config user_data but "
      "{root}/env/t.j2 renders something else; start the template with a '#cloud-config' "
      "line or drop 'files'")),
    ("templates", "cloud-config not YAML", write("t.j2", "#cloud-config\nx: [\n"), ["deploy"], 2,
     ("{root}/env/unit.toml: servers.app.userdata: rendered #cloud-config is not valid "
      "YAML: while parsing a flow node expected the node content, but found '<stream end>' "
      'in "<unicode string>", line 3, column 1: ^; fix the template (quote values with the '
      "tojson filter)")),
    ("templates", "user_data too big", write("t.j2", "#!/bin/sh\n" + "#" * 70000), ["deploy"], 2,
     ("{root}/env/unit.toml: servers.app.userdata: user_data is 93348 bytes after base64, "
      "over Nova's limit of 65535; shrink the template or the embedded files (or fetch "
      "large files at boot)")),
    ("templates", "template missing", spec_text('[servers.app2]\nuserdata = "none.j2"\n'),
     ["deploy"], 2,
     ("{root}/env/unit.toml: servers.app2.userdata: userdata template {root}/env/none.j2 "
      "does not exist; create it or fix the path (relative to {root}/env)")),
    # declarations (the cloud's own rules)
    ("declarations", "metadata key with /", spec_text('[servers.app2]\nmetadata = { "a/b" = "1" }\n'),
     ["deploy"], 2,
     ("{root}/env/unit.toml: servers.app2.metadata.a/b: Nova refuses this metadata key "
      "(character(s) '/'); use letters, digits, '-', '_', ':', '.' and spaces")),
    ("declarations", "metadata key with ,", spec_text('[servers.app2]\nmetadata = { "a,b" = "1" }\n'),
     ["deploy"], 2,
     ("{root}/env/unit.toml: servers.app2.metadata.a,b: Nova refuses this metadata key "
      "(character(s) ','); use letters, digits, '-', '_', ':', '.' and spaces")),
    ("declarations", "metadata value 256", spec_text(f'[servers.app2]\nmetadata = {{ k = "{"v" * 256}" }}\n'),
     ["deploy"], 2,
     ("{root}/env/unit.toml: servers.app2.metadata.k: the value is 256 characters; Nova "
      "takes keys of 1-255 characters and values of at most 255; shorten it")),
    ("declarations", "metadata value 10 MB", spec_text(f'[servers.app2]\nmetadata = {{ k = "{LONG}" }}\n'),
     ["deploy"], 2,
     ("{root}/env/unit.toml: servers.app2.metadata.k: the value is 10000000 characters; "
      "Nova takes keys of 1-255 characters and values of at most 255; shorten it")),
    ("declarations", "metadata key 256", spec_text(f'[servers.app2]\nmetadata = {{ {"k" * 256} = "v" }}\n'),
     ["deploy"], 2,
     ("{root}/env/unit.toml: servers.app2.metadata." + "k" * 58
      + "... (278 characters): the key is 256 characters; Nova takes keys of 1-255 "
      "characters; shorten it")),
    ("declarations", "keypair name with /", spec_text('[servers.app2]\nkeypair = "a/b"\n'),
     ["deploy"], 2,
     ("{root}/env/unit.toml: servers.app2.keypair: 'a/b' is not a valid keypair name; use "
      "1-255 letters, digits, '_', '-' or inner spaces")),
    ("declarations", "keypair name leading space", spec_text(
        '[servers.app2]\nkeypair = "x "\n[keypairs." x"]\npublic_key_file = "key.pub"\n'),
     ["deploy"], 2,
     ("{root}/env/unit.toml: keypairs. x: ' x' is not a valid keypair name; use 1-255 "
      "letters, digits, '_', '-' or inner spaces")),
    ("declarations", "keypair name with .", spec_text('[keypairs."a.b"]\npublic_key_file = "key.pub"\n'),
     ["deploy"], 2,
     ("{root}/env/unit.toml: keypairs.a.b: 'a.b' is not a valid keypair name; use 1-255 "
      "letters, digits, '_', '-' or inner spaces")),
    ("declarations", "group description 256", spec_text(f'[secgroups.g]\ndescription = "{"d" * 256}"\n'),
     ["deploy"], 2,
     ("{root}/env/unit.toml: secgroups.g.description: is 256 characters, over Neutron's "
      "255; shorten it")),
    ("declarations", "rule description 256",
     spec_text('[secgroups.g]\nrules = [ { protocol = "tcp", ports = "80", description = "'
               + "d" * 256 + '" } ]\n'),
     ["deploy"], 2,
     ("{root}/env/unit.toml: secgroups.g.rules[0].description: is 256 characters, over "
      "Neutron's 255; shorten it")),
    ("declarations", "group name 256", spec_text(f'[secgroups.{"g" * 256}]\n'), ["deploy"], 2,
     ("{root}/env/unit.toml: secgroups." + "g" * 70 + "... (266 characters): '" + "g" * 80
      + "'... (256 characters) is not a usable group name; pick a non-empty name of at most "
      "255 characters other than 'default'")),
    ("declarations", "port 70000",
     spec_text('[secgroups.g]\nrules = [ { protocol = "tcp", ports = "70000" } ]\n'),
     ["deploy"], 2,
     ("{root}/env/unit.toml: secgroups.g.rules[0].ports: '70000' is outside 1-65535; use "
      "ports from 1 to 65535")),
    ("declarations", "unknown protocol", spec_text('[secgroups.g]\nrules = [ { protocol = "tcpp" } ]\n'),
     ["deploy"], 2,
     ("{root}/env/unit.toml: secgroups.g.rules[0].protocol: unknown protocol 'tcpp'; use a "
      'name such as "tcp", "udp", "icmp" or a number 0-255')),
    ("declarations", "prefix with host bits",
     spec_text('[secgroups.g]\nrules = [ { remote_ip_prefix = "10.0.0.1/8" } ]\n'),
     ["deploy"], 2,
     ("{root}/env/unit.toml: secgroups.g.rules[0].remote_ip_prefix: '10.0.0.1/8' has host "
      'bits set; use the network "10.0.0.0/8"')),
    ("declarations", "ethertype", spec_text('[secgroups.g]\nrules = [ { ethertype = "IPv5" } ]\n'),
     ["deploy"], 2,
     ("{root}/env/unit.toml: secgroups.g.rules[0].ethertype: 'IPv5' is not an ethertype; "
      'use "IPv4" or "IPv6"')),
    ("declarations", "server name", spec_text("[servers.Web_1]\n"), ["deploy"], 2,
     ("{root}/env/unit.toml: servers.Web_1: 'Web_1' is not a valid server name; use 1-63 "
      "lower-case letters, digits and '-', not starting or ending with '-'")),
    ("declarations", "server name 10 MB", spec_text(f"[servers.{LONG}]\n"), ["deploy"], 2,
     ("{root}/env/unit.toml: servers." + "x" * 72 + "... (10000008 characters): '" + "x" * 80
      + "'... (10000000 characters) is not a valid server name; use 1-63 lower-case letters, "
      "digits and '-', not starting or ending with '-'")),
    # settings
    ("settings", "unknown environment", lambda w: w.mp.setenv("IVC_ENV", "nope"), ["deploy"], 2,
     ("{root}/env/nope.env: IVC_ENV: no env file for environment 'nope'; create it or pick "
      "one of: unit")),
    ("settings", "environment name too long", lambda w: w.mp.setenv("IVC_ENV", "e" * 300),
     ["deploy"], 2,
     lambda root: (cut(f"{root}/env/" + "e" * 300 + ".env") + ": IVC_ENV: '" + "e" * 80
                   + "'... (300 characters) is not an environment name; use up to 64 letters, "
                   "digits, '.', '_' or '-' (available: unit)")),
    ("settings", "environment name with /", lambda w: w.mp.setenv("IVC_ENV", "../x"), ["deploy"],
     2,
     ("{root}/env/../x.env: IVC_ENV: '../x' is not an environment name; use up to 64 "
      "letters, digits, '.', '_' or '-' (available: unit)")),
    ("settings", "timeout not a number", lambda w: w.mp.setenv("IVC_BOOT_TIMEOUT", "abc"),
     ["deploy"], 2,
     ("{root}/env/unit.env (overridden by the environment): IVC_BOOT_TIMEOUT: 'abc' is not "
      "a number of seconds; set it to e.g. 300 or remove it")),
    ("settings", "attempts 0", lambda w: w.mp.setenv("IVC_RETRY_ATTEMPTS", "0"), ["deploy"], 2,
     ("{root}/env/unit.env (overridden by the environment): IVC_RETRY_ATTEMPTS: '0' must "
      "be greater than 0; set it to e.g. 6 or remove it")),
    ("settings", "poll interval 10 MB", lambda w: w.mp.setenv("IVC_POLL_INTERVAL", LONG),
     ["deploy"], 2,
     ("{root}/env/unit.env (overridden by the environment): IVC_POLL_INTERVAL: '" + "x" * 80
      + "'... (10000000 characters) is not a number of seconds; set it to e.g. 0.5 or remove "
      "it")),
    ("settings", "env file not UTF-8", lambda w: w.env_file.write_bytes(b"OS_CLOUD=\xff\n"),
     ["deploy"], 2,
     ("{root}/env/unit.env: cannot read the settings: UnicodeDecodeError: 'utf-8' codec "
      "can't decode byte 0xff in position 9: invalid start byte; fix the env file (UTF-8 "
      "text, KEY=value lines)")),
    ("settings", "env file is a folder",
     lambda w: (w.env_file.unlink(), w.env_file.mkdir()), ["deploy"], 2,
     ("{root}/env/unit.env: IVC_ENV: is a folder, not an env file; make it a file of "
      "KEY=value lines (as env/example.env)")),
    ("settings", "root folder too long", lambda w: w.mp.setenv("IVC_ROOT", "/" + "r" * 5000),
     ["deploy"], 2,
     ("/" + "r" * 79
      + "... (5005 characters): File name too long (from IVC_ROOT / IVC_ENV); use a shorter "
      "environment name or root folder")),
    # flags
    ("flags", "unknown flag", None, ["deploy", "--dryrun"], 2,
     "usage: No idea what '--dryrun' is! (see --help deploy)"),
    ("flags", "flag without value", None, ["deploy", "--timeout"], 2,
     ("usage: Flag <Argument: timeout (t)> needed value and was not given one! (see --help "
      "deploy)")),
    ("flags", "unknown task", None, ["deplo"], 2,
     "usage: No idea what 'deplo' is! (see --help)"),
    ("flags", "name missing", None, ["create-instance"], 2,
     "--name is required: the declared server to create"),
    ("flags", "timeout not a number", None, ["create-instance", "--name", "app", "--timeout", "x"],
     2,
     "--timeout: 'x' is not a number of seconds"),
    ("flags", "negative timeout", None, ["deploy", "--timeout", "-1"], 2,
     "--timeout: '-1' must be greater than 0"),
    ("flags", "parallel 0", None, ["rotate", "--name", "app", "--parallel", "0"], 2,
     "--parallel: '0' must be 1 or more"),
    ("flags", "destroy without --yes", None, ["destroy", "--name", "app"], 2,
     ("destroy: refusing to delete server app without --yes (try --dry-run to see what "
      "would go)")),
    ("flags", "undeclared server", None, ["create-instance", "--name", "nope"], 2,
     ("{root}/env/unit.toml: --name 'nope': not a declared server (servers.nope); "
      "declared: app")),
    ("flags", "server name of 10 MB", None, ["create-instance", "--name", LONG], 2,
     ("{root}/env/unit.toml: --name '" + "x" * 80
      + "'... (10000000 characters): not a declared server (servers." + "x" * 80
      + "... (10000000 characters)); declared: app")),
    # credentials (the real connect; nothing listens at the auth_url)
    ("credentials", "no password, not a terminal", lambda w: w.real_cloud(ENTRY), ["deploy"], 2,
     ("cloud entry 'c' in {root}/clouds.yaml: no password (auth_type password), and ivc "
      "asks only at a terminal (stdin is not one, or CI is set); set OS_PASSWORD "
      "(environment or env file), add auth.password to the entry (or to secure.yaml), or "
      "use an application credential (auth_type: v3applicationcredential)")),
    ("credentials", "OS_* without OS_PASSWORD",
     lambda w: w.real_cloud("clouds: {}\n", env="OS_AUTH_URL=http://127.0.0.1:9/v3\nOS_USERNAME=u\n"
                                                "OS_PROJECT_NAME=p\nOS_USER_DOMAIN_NAME=Default\n"
                                                "OS_PROJECT_DOMAIN_NAME=Default\n"),
     ["deploy"], 2,
     ("cloud 'envvars' (the OS_* variables): no password (auth_type password), and ivc "
      "asks only at a terminal (stdin is not one, or CI is set); set OS_PASSWORD "
      "(environment or env file), add auth.password to the entry (or to secure.yaml), or "
      "use an application credential (auth_type: v3applicationcredential)")),
    ("credentials", "clouds file is a folder", lambda w: w.real_cloud(None, config_file=w.env),
     ["deploy"], 2,
     ("{root}/env/unit.env: OS_CLIENT_CONFIG_FILE: the clouds file {root}/env is not a "
      "file; create it or fix the path")),
    ("credentials", "malformed clouds.yaml",
     lambda w: w.real_cloud("clouds:\n  c:\n\tauth:\n      password: PASSWORD\n"), ["deploy"], 2,
     ("{root}/clouds.yaml: not valid YAML: found character '\\t' that cannot start any "
      "token at line 3, column 1; fix the clouds file (openstacksdk would skip it)")),
    ("credentials", "clouds file missing",
     lambda w: (w.real_cloud(None), None)[1], ["deploy"], 2,
     ("{root}/env/unit.env: OS_CLIENT_CONFIG_FILE: the clouds file {root}/clouds.yaml does "
      "not exist; create it or fix the path")),
    ("credentials", "no such entry", lambda w: w.real_cloud(ENTRY, env="OS_CLOUD=other\n"),
     ["deploy"], 2,
     ("{root}/env/unit.env: OS_CLOUD='other': no such cloud entry in {root}/clouds.yaml "
      "(it has: c); fix OS_CLOUD or the clouds.yaml entry")),
    ("credentials", "application credential without secret",
     lambda w: w.real_cloud("clouds:\n  c:\n    auth_type: v3applicationcredential\n    auth:\n"
                            "      auth_url: http://127.0.0.1:9/v3\n"
                            "      application_credential_id: abc\n"), ["deploy"], 2,
     ("cloud entry 'c' in {root}/clouds.yaml: no application credential secret (auth_type "
      "v3applicationcredential); add auth.application_credential_secret to the entry (or "
      "to secure.yaml beside it)")),
    ("credentials", "unknown auth_type",
     lambda w: w.real_cloud("clouds:\n  c:\n    auth_type: magic\n    auth:\n"
                            "      auth_url: http://127.0.0.1:9/v3\n"), ["deploy"], 2,
     ("cloud entry 'c' in {root}/clouds.yaml: unknown auth_type magic; use password or "
      "v3applicationcredential")),
    ("credentials", "clouds.yaml is a list", lambda w: w.real_cloud("- a\n- b\n"), ["deploy"], 2,
     ("{root}/clouds.yaml: not a clouds file (expected a mapping with a 'clouds' key of "
      "cloud entries); fix the file")),
    ("credentials", "clouds.yaml not UTF-8", lambda w: w.real_cloud(b"clouds:\n  \xff: {}\n"),
     ["deploy"], 2,
     ("{root}/clouds.yaml: not UTF-8 text (invalid start byte at byte 10); save the clouds "
      "file as UTF-8")),
    ("credentials", "no cloud chosen",
     lambda w: w.real_cloud(ENTRY + "  d:\n    auth: {}\n", env=""), ["deploy"], 2,
     ("{root}/env/unit.env: no cloud configured: set OS_CLOUD to an entry of clouds.yaml, "
      "or the OS_AUTH_URL, OS_USERNAME... variables")),
]


def expected_message(message, root):
    return message(str(root)) if callable(message) else message.replace("{root}", str(root))


@pytest.mark.parametrize("kind,setup,argv,code,message",
                         [pytest.param(k, s, a, c, m, id=f"{k}: {i}") for k, i, s, a, c, m in CASES])
def test_bad_input(world, capsys, kind, setup, argv, code, message):
    if setup is not None:
        setup(world)
    assert run(*argv, "--json") == code
    out, err = capsys.readouterr()
    data = json.loads(out)  # exactly one JSON object on stdout
    assert data["exit_code"] == code
    assert isinstance(message, str) or callable(message), "give the whole message, not key words"
    message = expected_message(message, world.root)
    assert data["error"] == message
    # stderr: the one line invoke prints for Exit, the step's name before what was read
    assert err.strip() in (message, f"{argv[0]}: invalid input: {message}"), err
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
