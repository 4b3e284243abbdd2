"""The declarations file: parsing, defaults, normalisation, and a corpus of bad inputs."""

import random
from pathlib import Path

import pytest

from ivc_tasks.errors import ConfigError
from ivc_tasks.spec import (
    Checks,
    FileSpec,
    Keypair,
    Rule,
    SecGroup,
    Server,
    load_spec,
    needs_config_drive,
)

REPO_ENV = Path(__file__).resolve().parents[2] / "env"
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkm6Y7mZkR0c1H4cVqvVn0l8m7m1o2aQ3n6q8kT5yXb ivc@test"


@pytest.fixture
def folder(tmp_path):
    """A spec folder with the templates, files and keys the cases refer to."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "files").mkdir()
    (tmp_path / "keys").mkdir()
    (tmp_path / "templates" / "ok.j2").write_text("#cloud-config\nhostname: {{ server }}\n")
    (tmp_path / "templates" / "shell.j2").write_text("#!/bin/sh\necho {{ server }}\n")
    (tmp_path / "templates" / "needs_var.j2").write_text("#cloud-config\nx: {{ missing_var }}\n")
    (tmp_path / "templates" / "broken.j2").write_text("#cloud-config\nx: {% if %}\n")
    (tmp_path / "templates" / "bad_yaml.j2").write_text("#cloud-config\nx: [unclosed\n")
    (tmp_path / "files" / "motd").write_text("hello\n")
    (tmp_path / "files" / "big.bin").write_bytes(random.Random(0).randbytes(60000))
    (tmp_path / "keys" / "good.pub").write_text(PUBLIC_KEY + "\n")
    (tmp_path / "keys" / "id_ed25519").write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n")
    (tmp_path / "keys" / "junk.pub").write_text("not a key\n")
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "spec.toml"
    path.write_text(text)
    return path


FULL = """
[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
keypair = "k1"
security_groups = ["base"]
networks = ["private"]
userdata = "templates/ok.j2"
userdata_vars = { a = "1", b = "2" }
metadata = { team = "ops", role = "any" }

[keypairs.k1]
public_key_file = "keys/good.pub"

[secgroups.base]
description = "base"
rules = [
  { protocol = "tcp", ports = "22", remote_ip_prefix = "0.0.0.0/0", description = "ssh" },
  { protocol = "icmp" },
]

[secgroups.web]
rules = [
  { direction = "egress", protocol = 6, ports = 443, remote_ip_prefix = "2001:db8::1" },
  { protocol = "TCP", ports = "8000 - 8100", remote_group = "web" },
  { protocol = "icmp", icmp_type = 8, icmp_code = 0, remote_ip_prefix = "192.0.2.7" },
  { protocol = "ipv6-icmp" },
  { ethertype = "ipv6" },
]

[servers.web1]
networks = ["private", "public"]
volumes = ["web1-data", "web1-logs"]
floating_ip = true
config_drive = false
security_groups = ["base", "web", "existing-elsewhere"]
userdata_vars = { b = "3" }
files = [ { path = "/etc/motd", source = "files/motd", permissions = "600", owner = "root:root" } ]
metadata = { role = "web" }

[servers.db1]
flavor = "m1.small"
"""


def test_full_spec(folder):
    path = write(folder, FULL)
    spec = load_spec(path, env_name="test")
    assert (spec.path, spec.env_name) == (path, "test")
    assert spec.keypairs == {"k1": Keypair("k1", folder / "keys/good.pub", PUBLIC_KEY)}
    assert spec.secgroups["base"] == SecGroup("base", "base", (
        Rule(protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix="0.0.0.0/0",
             description="ssh"),
        Rule(protocol="icmp"),
    ))
    assert spec.secgroups["web"].rules == (
        Rule(direction="egress", ethertype="IPv6", protocol="6", port_range_min=443,
             port_range_max=443, remote_ip_prefix="2001:db8::1/128"),
        Rule(protocol="tcp", port_range_min=8000, port_range_max=8100, remote_group="web"),
        Rule(protocol="icmp", port_range_min=8, port_range_max=0, remote_ip_prefix="192.0.2.7/32"),
        Rule(ethertype="IPv6", protocol="ipv6-icmp"),
        Rule(ethertype="IPv6"),
    )
    web1 = spec.servers["web1"]
    assert web1 == Server(
        name="web1", image="ivc-tiny", flavor="m1.tiny", networks=("private", "public"),
        volumes=("web1-data", "web1-logs"), security_groups=("base", "web", "existing-elsewhere"),
        keypair="k1", floating_ip=True, config_drive=False,
        userdata_template=folder / "templates/ok.j2", userdata_vars={"a": "1", "b": "3"},
        files=(FileSpec("/etc/motd", folder / "files/motd", "0600", "root:root"),),
        metadata={"team": "ops", "role": "web"}, userdata=web1.userdata,
        checks=Checks(cloud_init=True),  # a #cloud-config: cloud-init's final line is checked
    )
    assert web1.userdata.startswith(b"#cloud-config\nhostname: web1\nwrite_files:\n- path: /etc/motd\n")
    db1 = spec.servers["db1"]
    assert (db1.flavor, db1.networks, db1.volumes, db1.floating_ip, db1.config_drive,
            db1.files, db1.metadata, db1.userdata) == (
        "m1.small", ("private",), (), False, None, (), {"team": "ops", "role": "any"},
        b"#cloud-config\nhostname: db1\n")
    assert list(spec.servers) == ["web1", "db1"]


def test_minimal_spec(folder):
    spec = load_spec(write(folder, ""), env_name="x")
    assert (spec.keypairs, spec.secgroups, spec.servers) == ({}, {}, {})


def test_server_without_userdata(folder):
    spec = load_spec(write(folder, '[servers.a]\nimage = "i"\nflavor = "f"\nnetworks = ["n"]\n'),
                     env_name="x")
    assert spec.servers["a"] == Server(name="a", image="i", flavor="f", networks=("n",),
                                       checks=Checks(cloud_init=False))


@pytest.mark.parametrize(("rule", "expected"), [
    ('{ protocol = "tcp", ports = "80" }', Rule(protocol="tcp", port_range_min=80, port_range_max=80)),
    ('{ protocol = "udp", ports = "1-65535" }', Rule(protocol="udp", port_range_min=1, port_range_max=65535)),
    ('{ protocol = "sctp", ports = "5" }', Rule(protocol="sctp", port_range_min=5, port_range_max=5)),
    ('{ protocol = "any" }', Rule()),
    ('{ protocol = "17" }', Rule(protocol="17")),
    ('{ protocol = "encap" }', Rule(protocol="encap")),
    ('{ protocol = "icmpv6" }', Rule(ethertype="IPv6", protocol="icmpv6")),
    ('{ protocol = "icmp", ethertype = "IPv6" }', Rule(ethertype="IPv6", protocol="icmp")),
    ('{ protocol = "icmp", icmp_type = 3 }', Rule(protocol="icmp", port_range_min=3)),
    ('{ remote_ip_prefix = "10.0.0.0/8" }', Rule(remote_ip_prefix="10.0.0.0/8")),
    ('{ remote_ip_prefix = "10.1.2.3" }', Rule(remote_ip_prefix="10.1.2.3/32")),
    ('{ remote_ip_prefix = "2001:DB8::/32" }', Rule(ethertype="IPv6", remote_ip_prefix="2001:db8::/32")),
    ('{ remote_ip_prefix = "::/0", ethertype = "IPv6" }', Rule(ethertype="IPv6", remote_ip_prefix="::/0")),
    ('{ direction = "egress", description = "out" }', Rule(direction="egress", description="out")),
])
def test_rule_normalisation(folder, rule, expected):
    spec = load_spec(write(folder, f"[secgroups.g]\nrules = [ {rule} ]\n"), env_name="x")
    assert spec.secgroups["g"].rules == (expected,)


def test_array_of_tables_rules(folder):
    text = '[secgroups.g]\n[[secgroups.g.rules]]\nprotocol = "tcp"\nports = "22"\n'
    assert load_spec(write(folder, text), env_name="x").secgroups["g"].rules == (
        Rule(protocol="tcp", port_range_min=22, port_range_max=22),)


@pytest.mark.parametrize(("external", "override", "expected"), [
    ([False], None, True),
    ([False, False], None, True),
    ([True], None, False),
    ([False, True], None, False),
    ([], None, True),
    ([True], True, True),
    ([False], False, False),
])
def test_needs_config_drive(external, override, expected):
    assert needs_config_drive(external, override) is expected


@pytest.mark.parametrize("name", ["local", "example"])
def test_shipped_specs_load(name):
    spec = load_spec(REPO_ENV / f"{name}.toml", env_name=name)
    web1 = spec.servers["web1"]
    assert web1.files[0].path == "/etc/motd"
    assert web1.userdata.startswith(b"#cloud-config\n")
    assert b"hostname: web1\n" in web1.userdata
    assert "ivc-web" in web1.security_groups


def test_local_spec_matches_the_devcloud():
    spec = load_spec(REPO_ENV / "local.toml", env_name="local")
    web1 = spec.servers["web1"]
    assert (web1.image, web1.flavor, web1.keypair, web1.networks, web1.volumes, web1.floating_ip,
            web1.security_groups) == ("ivc-tiny", "m1.tiny", "ivc-demo", ("private",),
                                      ("web1-data", "web1-logs"), True, ("ivc-base", "ivc-web"))
    assert sorted(spec.secgroups) == ["ivc-base", "ivc-web"]
    assert spec.secgroups["ivc-web"].rules[2] == Rule(
        protocol="tcp", port_range_min=8000, port_range_max=8100, remote_group="ivc-web",
        description="app ports between web servers")


# -- bad inputs -------------------------------------------------------------------------------
SERVER = '[servers.web1]\nimage = "i"\nflavor = "f"\nnetworks = ["n"]\n'


def group(rule: str) -> str:
    """A spec whose one group ``web`` has the one given rule."""
    return f"[secgroups.web]\nrules = [ {rule} ]\n"


# (case id, toml text, the entry the message names, the rest of the message: what is wrong and
# the fix; ``{folder}`` stands for the spec's folder). The whole message is asserted.
BAD = [
    ("malformed toml", "[servers.web1\nimage = 1", "toml",
     ("invalid TOML: Expected ']' at the end of a table declaration (at line 1, column "
      "14); fix the syntax")),
    ("duplicate table", SERVER + SERVER, "toml",
     ("invalid TOML: Cannot declare ('servers', 'web1') twice (at line 5, column 14); fix "
      "the syntax")),
    ("unknown top key", "[serverz.web1]\n", "serverz",
     "unknown key; did you mean 'servers'?"),
    ("unknown server key", SERVER + 'netwroks = ["x"]\n', "servers.web1.netwroks",
     "unknown key; did you mean 'networks'?"),
    ("unknown defaults key", '[defaults]\nimagee = "x"\n', "defaults.imagee",
     "unknown key; did you mean 'image'?"),
    ("unknown key, no close match", SERVER + "zzz = 1\n", "servers.web1.zzz",
     ("unknown key; valid keys: image, flavor, keypair, security_groups, networks, "
      "volumes, floating_ip, config_drive, userdata, userdata_vars, files, metadata, "
      "keep_address, checks, ssh_user")),
    ("unknown rule key", group('{ protocol = "tcp", port = "22" }'), "secgroups.web.rules[0].port",
     "unknown key; did you mean 'ports'?"),
    ("unknown secgroup key", '[secgroups.web]\nrulez = []\n', "secgroups.web.rulez",
     "unknown key; did you mean 'rules'?"),
    ("unknown file key", SERVER + 'userdata = "templates/ok.j2"\n'
     'files = [ { path = "/a", source = "files/motd", mode = "0644" } ]\n',
     "servers.web1.files[0].mode",
     "unknown key; valid keys: path, source, permissions, owner"),
    ("bad cidr", group('{ remote_ip_prefix = "10.0.0.300/24" }'),
     "secgroups.web.rules[0].remote_ip_prefix",
     ('\'10.0.0.300/24\' is not an IP address or CIDR; write e.g. "203.0.113.0/24", '
      '"198.51.100.7" or "2001:db8::/32"')),
    ("host bits set", group('{ remote_ip_prefix = "10.0.0.5/24" }'),
     "secgroups.web.rules[0].remote_ip_prefix",
     '\'10.0.0.5/24\' has host bits set; use the network "10.0.0.0/24"'),
    ("host bits set v6", group('{ remote_ip_prefix = "2001:db8::1/32" }'),
     "secgroups.web.rules[0].remote_ip_prefix",
     '\'2001:db8::1/32\' has host bits set; use the network "2001:db8::/32"'),
    ("reversed port range", group('{ protocol = "tcp", ports = "90-80" }'),
     "secgroups.web.rules[0].ports",
     '\'90-80\' starts above its end; write "80-90"'),
    ("port zero", group('{ protocol = "tcp", ports = "0" }'), "secgroups.web.rules[0].ports",
     "'0' is outside 1-65535; use ports from 1 to 65535"),
    ("port too high", group('{ protocol = "udp", ports = "1-70000" }'),
     "secgroups.web.rules[0].ports",
     "'1-70000' is outside 1-65535; use ports from 1 to 65535"),
    ("port not a number", group('{ protocol = "tcp", ports = "http" }'),
     "secgroups.web.rules[0].ports",
     '\'http\' is not a port or a port range; write "22" or "8000-8100"'),
    ("ports on icmp", group('{ protocol = "icmp", ports = "8" }'), "secgroups.web.rules[0].ports",
     "protocol icmp has no ports; use icmp_type/icmp_code instead"),
    ("ports without protocol", group('{ ports = "22" }'), "secgroups.web.rules[0].ports",
     "protocol any has no ports; remove ports, or use tcp, udp, sctp, udplite or dccp"),
    ("ports on gre", group('{ protocol = "gre", ports = "22" }'), "secgroups.web.rules[0].ports",
     "protocol gre has no ports; remove ports, or use tcp, udp, sctp, udplite or dccp"),
    ("ports and icmp", group('{ protocol = "tcp", ports = "22", icmp_type = 8 }'),
     "secgroups.web.rules[0]",
     ("ports and icmp_type/icmp_code are both set; keep ports for tcp/udp/sctp, "
      "icmp_type/icmp_code for icmp")),
    ("icmp type on tcp", group('{ protocol = "tcp", icmp_type = 8 }'),
     "secgroups.web.rules[0].icmp_type",
     ('protocol tcp has no ICMP type or code; set protocol = "icmp" (or "ipv6-icmp") or '
      "remove them")),
    ("icmp code without type", group('{ protocol = "icmp", icmp_code = 0 }'),
     "secgroups.web.rules[0].icmp_code",
     "an ICMP code needs an icmp_type; add icmp_type"),
    ("icmp type too big", group('{ protocol = "icmp", icmp_type = 256 }'),
     "secgroups.web.rules[0].icmp_type",
     "256 is not an integer from 0 to 255; write e.g. icmp_type = 8 (echo request)"),
    ("unknown protocol", group('{ protocol = "tcpp" }'), "secgroups.web.rules[0].protocol",
     'unknown protocol \'tcpp\'; use a name such as "tcp", "udp", "icmp" or a number 0-255'),
    ("protocol number too big", group("{ protocol = 300 }"), "secgroups.web.rules[0].protocol",
     ('protocol number 300 is outside 0-255; use a name such as "tcp", "udp", "icmp" or a '
      "number 0-255")),
    ("bad direction", group('{ direction = "inbound" }'), "secgroups.web.rules[0].direction",
     '\'inbound\' is not a direction; use "ingress" or "egress"'),
    ("bad ethertype", group('{ ethertype = "IPv5" }'), "secgroups.web.rules[0].ethertype",
     '\'IPv5\' is not an ethertype; use "IPv4" or "IPv6"'),
    ("ethertype contradicts prefix", group('{ ethertype = "IPv6", remote_ip_prefix = "10.0.0.0/8" }'),
     "secgroups.web.rules[0].ethertype",
     'IPv6 contradicts the IPv4 remote_ip_prefix; set ethertype = "IPv4" or remove it'),
    ("ipv6 protocol on ipv4", group('{ protocol = "ipv6-icmp", ethertype = "IPv4" }'),
     "secgroups.web.rules[0].ethertype",
     ('protocol \'ipv6-icmp\' is IPv6-only but the rule is IPv4; set ethertype = "IPv6" (and '
      "an IPv6 remote_ip_prefix, if any)")),
    ("ipv6 protocol with v4 prefix", group('{ protocol = "icmpv6", remote_ip_prefix = "10.0.0.0/8" }'),
     "secgroups.web.rules[0].ethertype",
     ('protocol \'icmpv6\' is IPv6-only but the rule is IPv4; set ethertype = "IPv6" (and an '
      "IPv6 remote_ip_prefix, if any)")),
    ("undeclared remote group", group('{ protocol = "tcp", ports = "80", remote_group = "wbe" }'),
     "secgroups.web.rules[0].remote_group",
     "'wbe' is not a declared security group; did you mean 'web'?"),
    ("both remote kinds", group('{ remote_group = "web", remote_ip_prefix = "10.0.0.0/8" }'),
     "secgroups.web.rules[0]",
     ("remote_ip_prefix and remote_group are both set; keep one: a rule matches either "
      "addresses or members of a group")),
    ("rules not a list", '[secgroups.web]\nrules = "ssh"\n', "secgroups.web.rules",
     ("expected a list of rules, got a string; write rules = [ { ... }, ... ] or use "
      "[[secgroups.NAME.rules]]")),
    ("rule not a table", group('"ssh"'), "secgroups.web.rules[0]",
     "expected a table, got a string; write it as { key = value }"),
    ("group named default", '[secgroups.default]\n', "secgroups.default",
     ("'default' is not a usable group name; pick a non-empty name of at most 255 "
      "characters other than 'default'")),
    ("missing image", '[servers.web1]\nflavor = "f"\nnetworks = ["n"]\n', "servers.web1.image",
     "is missing; set image in [servers.web1] or in [defaults]"),
    ("missing flavor", '[servers.web1]\nimage = "i"\nnetworks = ["n"]\n', "servers.web1.flavor",
     "is missing; set flavor in [servers.web1] or in [defaults]"),
    ("empty networks", '[defaults]\nnetworks = ["n"]\n[servers.web1]\nimage = "i"\nflavor = "f"\n'
     'networks = []\n', "servers.web1.networks",
     "is empty; set networks in [servers.web1] or in [defaults]"),
    ("missing networks", '[servers.web1]\nimage = "i"\nflavor = "f"\n', "servers.web1.networks",
     "is missing; set networks in [servers.web1] or in [defaults]"),
    ("empty image string", SERVER.replace('"i"', '""'), "servers.web1.image",
     'expected a non-empty string, got an empty string; quote it: key = "value"'),
    ("image not a string", SERVER.replace('"i"', "7"), "servers.web1.image",
     'expected a non-empty string, got an integer; quote it: key = "value"'),
    ("bad server name", '[servers.Web_1]\nimage = "i"\n', "servers.Web_1",
     ("'Web_1' is not a valid server name; use 1-63 lower-case letters, digits and '-', "
      "not starting or ending with '-'")),
    ("server name ends with dash", '[servers.web-]\n', "servers.web-",
     ("'web-' is not a valid server name; use 1-63 lower-case letters, digits and '-', not "
      "starting or ending with '-'")),
    ("server not a table", 'servers.web1 = "x"\n', "servers.web1",
     "expected a table, got a string; write it as [servers.web1] or { key = value }"),
    ("reserved metadata key", SERVER + 'metadata = { ivc_owner = "me" }\n',
     "servers.web1.metadata.ivc_owner",
     "keys starting with 'ivc_' are reserved for ivc; rename the key"),
    ("metadata not a string", SERVER + "metadata = { port = 80 }\n", "servers.web1.metadata.port",
     'expected a string, got an integer; quote it: port = "80"'),
    ("metadata too long", SERVER + f'metadata = {{ k = "{"x" * 256}" }}\n',
     "servers.web1.metadata.k",
     ("the value is 256 characters; Nova takes keys of 1-255 characters and values of at "
      "most 255; shorten it")),
    ("floating_ip not a bool", SERVER + 'floating_ip = "yes"\n', "servers.web1.floating_ip",
     "expected true or false, got a string 'yes'; write true or false without quotes"),
    ("networks not a list", SERVER.replace('["n"]', '"n"'), "servers.web1.networks",
     'expected a list of names, got a string; write it as ["name1", "name2"]'),
    ("duplicate security group", SERVER + 'security_groups = ["a", "a"]\n',
     "servers.web1.security_groups[1]",
     "'a' is listed twice; list it once"),
    ("volumes in defaults", '[defaults]\nvolumes = ["v"]\n', "defaults.volumes",
     "a volume attaches to one server; declare volumes in each [servers.NAME]"),
    ("volume on two servers", SERVER + 'volumes = ["v1"]\n' + SERVER.replace("web1", "web2")
     + 'volumes = ["v1"]\n', "servers.web2.volumes",
     ("'v1' is also a volume of servers.web1; a volume attaches to one server: keep it on "
      "one")),
    ("bad keypair name", SERVER + 'keypair = "a/b"\n', "servers.web1.keypair",
     ("'a/b' is not a valid keypair name; use 1-255 letters, digits, '_', '-' or inner "
      "spaces")),
    ("reserved userdata var", SERVER + 'userdata_vars = { server = "x" }\n',
     "servers.web1.userdata_vars.server",
     "is set by ivc for every template; rename it (server, env, metadata are reserved)"),
    ("userdata var not an identifier", SERVER + 'userdata_vars = { "my-var" = "x" }\n',
     "servers.web1.userdata_vars.my-var",
     ("is not usable as a template variable; use letters, digits and '_', not starting "
      "with a digit")),
    ("missing template in defaults", '[defaults]\nuserdata = "templates/nope.j2"\n',
     "defaults.userdata",
     ("userdata template {folder}/templates/nope.j2 does not exist; create it or fix the "
      "path (relative to {folder})")),
    ("missing template in server", SERVER + 'userdata = "templates/nope.j2"\n',
     "servers.web1.userdata",
     ("userdata template {folder}/templates/nope.j2 does not exist; create it or fix the "
      "path (relative to {folder})")),
    ("missing template variable", SERVER + 'userdata = "templates/needs_var.j2"\n',
     "servers.web1.userdata",
     ("template {folder}/templates/needs_var.j2 uses undefined variable 'missing_var'; add "
      "it to servers.web1.userdata_vars or defaults.userdata_vars")),
    ("template syntax error", SERVER + 'userdata = "templates/broken.j2"\n',
     "servers.web1.userdata",
     ("template {folder}/templates/broken.j2 line 2: Expected an expression, got 'end of "
      "statement block'; fix the Jinja syntax")),
    ("cloud-config not yaml", SERVER + 'userdata = "templates/bad_yaml.j2"\n',
     "servers.web1.userdata",
     ("rendered #cloud-config is not valid YAML: while parsing a flow sequence in "
      '"<unicode string>", line 2, column 4: x: [unclosed ^ expected \',\' or \']\', but got '
      '\'<stream end>\' in "<unicode string>", line 3, column 1: ^; fix the template (quote '
      "values with the tojson filter)")),
    ("files without cloud-config", SERVER + 'userdata = "templates/shell.j2"\n'
     'files = [ { path = "/etc/motd", source = "files/motd" } ]\n', "servers.web1.files",
     ("files need #cloud-config user_data but {folder}/templates/shell.j2 renders "
      "something else; start the template with a '#cloud-config' line or drop 'files'")),
    ("userdata too large", SERVER + 'files = [ { path = "/big", source = "files/big.bin" } ]\n',
     "servers.web1.userdata",
     ("the embedded files (servers.web1.files) are over Nova's limit of 65535 bytes after "
      "base64 already at /big (80052 bytes gzipped and base64-encoded; heaviest: "
      "servers.web1.files[0] ({folder}/files/big.bin): 1 file(s), 80052 bytes); embed "
      "fewer or smaller files, or fetch large ones at boot")),
    ("missing file source", SERVER + 'files = [ { path = "/etc/motd", source = "files/nope" } ]\n',
     "servers.web1.files[0].source",
     ("source file {folder}/files/nope does not exist; create it or fix the path (relative "
      "to {folder})")),
    ("file without path", SERVER + 'files = [ { source = "files/motd" } ]\n',
     "servers.web1.files[0].path",
     "is missing; set path for every file"),
    ("relative file path", SERVER + 'files = [ { path = "etc/motd", source = "files/motd" } ]\n',
     "servers.web1.files[0].path",
     '\'etc/motd\' is not an absolute path; write e.g. "/etc/motd"'),
    ("permissions as a number", SERVER + 'files = [ { path = "/a", source = "files/motd", '
     "permissions = 644 } ]\n", "servers.web1.files[0].permissions",
     '644 is not an octal mode; quote it: permissions = "0644"'),
    ("same file path twice", SERVER + 'files = [ { path = "/a", source = "files/motd" }, '
     '{ path = "/a", source = "files/motd" } ]\n', "servers.web1.files[1].path",
     "'/a' is declared twice; declare each path once"),
    ("missing public key file", '[keypairs.k]\npublic_key_file = "keys/nope.pub"\n',
     "keypairs.k.public_key_file",
     ("public key file {folder}/keys/nope.pub does not exist; create it or fix the path "
      "(relative to {folder})")),
    ("keypair without key file", "[keypairs.k]\n", "keypairs.k.public_key_file",
     'is missing; set public_key_file = "keys/NAME.pub"'),
    ("private key as public key", '[keypairs.k]\npublic_key_file = "keys/id_ed25519"\n',
     "keypairs.k.public_key_file",
     ("{folder}/keys/id_ed25519 holds a PRIVATE key; point it at the .pub file, and keep "
      "the private key out of the repo")),
    ("not a public key", '[keypairs.k]\npublic_key_file = "keys/junk.pub"\n',
     "keypairs.k.public_key_file",
     ("{folder}/keys/junk.pub is not an OpenSSH public key; use the one-line .pub file "
      "made by ssh-keygen")),
    ("bad declared keypair name", '[keypairs."a/b"]\npublic_key_file = "keys/good.pub"\n',
     'keypairs.a/b',
     ("'a/b' is not a valid keypair name; use 1-255 letters, digits, '_', '-' or inner "
      "spaces")),
]


def test_the_corpus_is_big_enough():
    assert len({case[0] for case in BAD}) == len(BAD) >= 25


@pytest.mark.parametrize(("text", "entry", "rest"), [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_bad_input(folder, text, entry, rest):
    path = write(folder, text)
    with pytest.raises(ConfigError) as info:
        load_spec(path, env_name="test")
    assert info.value.exit_code == 2
    message = str(info.value)
    assert message == f"{path}: {entry}: {rest.replace('{folder}', str(folder))}"
    assert "\n" not in message
    assert "; " in message  # every message says how to fix it


def test_missing_spec_file(folder):
    with pytest.raises(ConfigError) as info:
        load_spec(folder / "absent.toml", env_name="x")
    assert str(info.value) == (f"{folder}/absent.toml: spec: file not found; create it or point "
                               "IVC_SPEC at the declarations")


# -- the "did you mean" hint -------------------------------------------------------------------
@pytest.mark.parametrize(("name", "choices", "hint"), [
    ("wbe", ["web", "db"], "did you mean 'web'?"),
    ("netwroks", ["networks", "volumes"], "did you mean 'networks'?"),
    ("zzz", ["web", "db"], "declared: web, db"),
    ("", ["web"], "declared: web, db"),
    ("w" * 7, ["www"], "did you mean 'www'?"),  # 2 * 3 / 10 = 0.6: the cutoff, just
    ("w" * 8, ["www"], "declared: web, db"),  # 2 * 3 / 11: under it
    ("x" * 10_000_000, ["app", "x" * 10], "declared: web, db"),
])
def test_did_you_mean(name, choices, hint):
    from ivc_tasks.hints import did_you_mean

    assert did_you_mean(name, choices, otherwise="declared: web, db") == hint


def test_did_you_mean_does_not_compare_a_name_too_long_to_be_close(monkeypatch):
    from ivc_tasks import hints

    monkeypatch.setattr(hints.difflib, "get_close_matches",
                        lambda *args, **kwargs: pytest.fail("compared"))
    assert hints.did_you_mean("x" * 10_000_000, ["app"], otherwise="declared: app") == \
        "declared: app"
