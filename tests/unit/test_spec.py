"""The declarations file: parsing, defaults, normalisation, and a corpus of bad inputs."""

import random
from pathlib import Path

import pytest

from ivc_tasks.errors import ConfigError
from ivc_tasks.spec import (  # noqa: I001
    Checks,
    FileSpec, Keypair, Rule, SecGroup, Server, load_spec, needs_config_drive,
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


# (case id, toml text, entry the message must name, a fragment of the problem or fix)
BAD = [
    ("malformed toml", "[servers.web1\nimage = 1", "toml", "invalid TOML"),
    ("duplicate table", SERVER + SERVER, "toml", "invalid TOML"),
    ("unknown top key", "[serverz.web1]\n", "serverz", "did you mean 'servers'?"),
    ("unknown server key", SERVER + 'netwroks = ["x"]\n', "servers.web1.netwroks",
     "did you mean 'networks'?"),
    ("unknown defaults key", '[defaults]\nimagee = "x"\n', "defaults.imagee", "did you mean 'image'?"),
    ("unknown key, no close match", SERVER + "zzz = 1\n", "servers.web1.zzz", "valid keys: image"),
    ("unknown rule key", group('{ protocol = "tcp", port = "22" }'), "secgroups.web.rules[0].port",
     "did you mean 'ports'?"),
    ("unknown secgroup key", '[secgroups.web]\nrulez = []\n', "secgroups.web.rulez", "'rules'"),
    ("unknown file key", SERVER + 'userdata = "templates/ok.j2"\n'
     'files = [ { path = "/a", source = "files/motd", mode = "0644" } ]\n',
     "servers.web1.files[0].mode", "valid keys"),
    ("bad cidr", group('{ remote_ip_prefix = "10.0.0.300/24" }'),
     "secgroups.web.rules[0].remote_ip_prefix", "is not an IP address or CIDR"),
    ("host bits set", group('{ remote_ip_prefix = "10.0.0.5/24" }'),
     "secgroups.web.rules[0].remote_ip_prefix", 'use the network "10.0.0.0/24"'),
    ("host bits set v6", group('{ remote_ip_prefix = "2001:db8::1/32" }'),
     "secgroups.web.rules[0].remote_ip_prefix", 'use the network "2001:db8::/32"'),
    ("reversed port range", group('{ protocol = "tcp", ports = "90-80" }'),
     "secgroups.web.rules[0].ports", 'write "80-90"'),
    ("port zero", group('{ protocol = "tcp", ports = "0" }'), "secgroups.web.rules[0].ports",
     "outside 1-65535"),
    ("port too high", group('{ protocol = "udp", ports = "1-70000" }'),
     "secgroups.web.rules[0].ports", "outside 1-65535"),
    ("port not a number", group('{ protocol = "tcp", ports = "http" }'),
     "secgroups.web.rules[0].ports", "is not a port or a port range"),
    ("ports on icmp", group('{ protocol = "icmp", ports = "8" }'), "secgroups.web.rules[0].ports",
     "use icmp_type/icmp_code instead"),
    ("ports without protocol", group('{ ports = "22" }'), "secgroups.web.rules[0].ports",
     "protocol any has no ports"),
    ("ports on gre", group('{ protocol = "gre", ports = "22" }'), "secgroups.web.rules[0].ports",
     "protocol gre has no ports"),
    ("ports and icmp", group('{ protocol = "tcp", ports = "22", icmp_type = 8 }'),
     "secgroups.web.rules[0]", "are both set"),
    ("icmp type on tcp", group('{ protocol = "tcp", icmp_type = 8 }'),
     "secgroups.web.rules[0].icmp_type", "has no ICMP type"),
    ("icmp code without type", group('{ protocol = "icmp", icmp_code = 0 }'),
     "secgroups.web.rules[0].icmp_code", "needs an icmp_type"),
    ("icmp type too big", group('{ protocol = "icmp", icmp_type = 256 }'),
     "secgroups.web.rules[0].icmp_type", "0 to 255"),
    ("unknown protocol", group('{ protocol = "tcpp" }'), "secgroups.web.rules[0].protocol",
     "unknown protocol 'tcpp'"),
    ("protocol number too big", group("{ protocol = 300 }"), "secgroups.web.rules[0].protocol",
     "outside 0-255"),
    ("bad direction", group('{ direction = "inbound" }'), "secgroups.web.rules[0].direction",
     '"ingress" or "egress"'),
    ("bad ethertype", group('{ ethertype = "IPv5" }'), "secgroups.web.rules[0].ethertype",
     '"IPv4" or "IPv6"'),
    ("ethertype contradicts prefix", group('{ ethertype = "IPv6", remote_ip_prefix = "10.0.0.0/8" }'),
     "secgroups.web.rules[0].ethertype", "contradicts the IPv4 remote_ip_prefix"),
    ("ipv6 protocol on ipv4", group('{ protocol = "ipv6-icmp", ethertype = "IPv4" }'),
     "secgroups.web.rules[0].ethertype", "is IPv6-only"),
    ("ipv6 protocol with v4 prefix", group('{ protocol = "icmpv6", remote_ip_prefix = "10.0.0.0/8" }'),
     "secgroups.web.rules[0].ethertype", "is IPv6-only"),
    ("undeclared remote group", group('{ protocol = "tcp", ports = "80", remote_group = "wbe" }'),
     "secgroups.web.rules[0].remote_group", "did you mean 'web'?"),
    ("both remote kinds", group('{ remote_group = "web", remote_ip_prefix = "10.0.0.0/8" }'),
     "secgroups.web.rules[0]", "remote_ip_prefix and remote_group are both set"),
    ("rules not a list", '[secgroups.web]\nrules = "ssh"\n', "secgroups.web.rules",
     "expected a list of rules"),
    ("rule not a table", group('"ssh"'), "secgroups.web.rules[0]", "expected a table"),
    ("group named default", '[secgroups.default]\n', "secgroups.default", "other than 'default'"),
    ("missing image", '[servers.web1]\nflavor = "f"\nnetworks = ["n"]\n', "servers.web1.image",
     "is missing; set image in [servers.web1] or in [defaults]"),
    ("missing flavor", '[servers.web1]\nimage = "i"\nnetworks = ["n"]\n', "servers.web1.flavor",
     "is missing"),
    ("empty networks", '[defaults]\nnetworks = ["n"]\n[servers.web1]\nimage = "i"\nflavor = "f"\n'
     'networks = []\n', "servers.web1.networks", "is empty"),
    ("missing networks", '[servers.web1]\nimage = "i"\nflavor = "f"\n', "servers.web1.networks",
     "is missing"),
    ("empty image string", SERVER.replace('"i"', '""'), "servers.web1.image", "got an empty string"),
    ("image not a string", SERVER.replace('"i"', "7"), "servers.web1.image", "got an integer"),
    ("bad server name", '[servers.Web_1]\nimage = "i"\n', "servers.Web_1", "not a valid server name"),
    ("server name ends with dash", '[servers.web-]\n', "servers.web-", "not a valid server name"),
    ("server not a table", 'servers.web1 = "x"\n', "servers.web1", "expected a table"),
    ("reserved metadata key", SERVER + 'metadata = { ivc_owner = "me" }\n',
     "servers.web1.metadata.ivc_owner", "reserved for ivc"),
    ("metadata not a string", SERVER + "metadata = { port = 80 }\n", "servers.web1.metadata.port",
     'quote it: port = "80"'),
    ("metadata too long", SERVER + f'metadata = {{ k = "{"x" * 256}" }}\n',
     "servers.web1.metadata.k", "1-255 characters"),
    ("floating_ip not a bool", SERVER + 'floating_ip = "yes"\n', "servers.web1.floating_ip",
     "expected true or false"),
    ("networks not a list", SERVER.replace('["n"]', '"n"'), "servers.web1.networks",
     "expected a list of names"),
    ("duplicate security group", SERVER + 'security_groups = ["a", "a"]\n',
     "servers.web1.security_groups[1]", "listed twice"),
    ("volumes in defaults", '[defaults]\nvolumes = ["v"]\n', "defaults.volumes",
     "declare volumes in each [servers.NAME]"),
    ("volume on two servers", SERVER + 'volumes = ["v1"]\n' + SERVER.replace("web1", "web2")
     + 'volumes = ["v1"]\n', "servers.web2.volumes", "also a volume of servers.web1"),
    ("bad keypair name", SERVER + 'keypair = "a/b"\n', "servers.web1.keypair", "not a valid keypair"),
    ("reserved userdata var", SERVER + 'userdata_vars = { server = "x" }\n',
     "servers.web1.userdata_vars.server", "reserved"),
    ("userdata var not an identifier", SERVER + 'userdata_vars = { "my-var" = "x" }\n',
     "servers.web1.userdata_vars.my-var", "not usable as a template variable"),
    ("missing template in defaults", '[defaults]\nuserdata = "templates/nope.j2"\n',
     "defaults.userdata", "userdata template"),
    ("missing template in server", SERVER + 'userdata = "templates/nope.j2"\n',
     "servers.web1.userdata", "does not exist"),
    ("missing template variable", SERVER + 'userdata = "templates/needs_var.j2"\n',
     "servers.web1.userdata", "undefined variable 'missing_var'"),
    ("template syntax error", SERVER + 'userdata = "templates/broken.j2"\n',
     "servers.web1.userdata", "line 2"),
    ("cloud-config not yaml", SERVER + 'userdata = "templates/bad_yaml.j2"\n',
     "servers.web1.userdata", "not valid YAML"),
    ("files without cloud-config", SERVER + 'userdata = "templates/shell.j2"\n'
     'files = [ { path = "/etc/motd", source = "files/motd" } ]\n', "servers.web1.files",
     "need #cloud-config"),
    ("userdata too large", SERVER + 'files = [ { path = "/big", source = "files/big.bin" } ]\n',
     "servers.web1.userdata", "over Nova's limit of 65535"),
    ("missing file source", SERVER + 'files = [ { path = "/etc/motd", source = "files/nope" } ]\n',
     "servers.web1.files[0].source", "does not exist"),
    ("file without path", SERVER + 'files = [ { source = "files/motd" } ]\n',
     "servers.web1.files[0].path", "is missing"),
    ("relative file path", SERVER + 'files = [ { path = "etc/motd", source = "files/motd" } ]\n',
     "servers.web1.files[0].path", "not an absolute path"),
    ("permissions as a number", SERVER + 'files = [ { path = "/a", source = "files/motd", '
     "permissions = 644 } ]\n", "servers.web1.files[0].permissions", 'quote it: permissions = "0644"'),
    ("same file path twice", SERVER + 'files = [ { path = "/a", source = "files/motd" }, '
     '{ path = "/a", source = "files/motd" } ]\n', "servers.web1.files[1].path", "declared twice"),
    ("missing public key file", '[keypairs.k]\npublic_key_file = "keys/nope.pub"\n',
     "keypairs.k.public_key_file", "does not exist"),
    ("keypair without key file", "[keypairs.k]\n", "keypairs.k.public_key_file", "missing"),
    ("private key as public key", '[keypairs.k]\npublic_key_file = "keys/id_ed25519"\n',
     "keypairs.k.public_key_file", "PRIVATE key"),
    ("not a public key", '[keypairs.k]\npublic_key_file = "keys/junk.pub"\n',
     "keypairs.k.public_key_file", "not an OpenSSH public key"),
    ("bad declared keypair name", '[keypairs."a/b"]\npublic_key_file = "keys/good.pub"\n',
     'keypairs.a/b', "not a valid keypair name"),
]


def test_the_corpus_is_big_enough():
    assert len({case[0] for case in BAD}) == len(BAD) >= 25


@pytest.mark.parametrize(("text", "entry", "fragment"), [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_bad_input(folder, text, entry, fragment):
    path = write(folder, text)
    with pytest.raises(ConfigError) as info:
        load_spec(path, env_name="test")
    message = str(info.value)
    assert message.startswith(f"{path}: {entry}: "), message
    assert fragment in message
    assert "\n" not in message
    assert "; " in message  # every message says how to fix it


def test_missing_spec_file(folder):
    with pytest.raises(ConfigError) as info:
        load_spec(folder / "absent.toml", env_name="x")
    assert str(info.value) == (f"{folder}/absent.toml: spec: file not found; create it or point "
                               "IVC_SPEC at the declarations")
