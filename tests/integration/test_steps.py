"""ivc's steps against the local cloud, run as a user runs them (`invoke ... --json`).

Every test writes its own env file and spec (unique names), runs each step twice (the second run
must report changed=false and make no mutating request), and deletes what it made. Volumes are
fixtures made here with plain openstacksdk: ivc never creates or deletes one.
"""

import base64
import subprocess

import pytest

from ivc_tasks.spec import load_spec

from .conftest import cloud_state
from .rotateworld import find_or_none, image_named

pytestmark = pytest.mark.cloud

TWELVE_RULES = """
[secgroups.PREFIX-g12]
description = "twelve rules"
rules = [
  { protocol = "tcp", ports = "22", remote_ip_prefix = "0.0.0.0/0", description = "ssh" },
  { protocol = "tcp", ports = "80", remote_ip_prefix = "0.0.0.0/0" },
  { protocol = "tcp", ports = "443", remote_ip_prefix = "0.0.0.0/0" },
  { protocol = "tcp", ports = "5432", remote_ip_prefix = "10.0.0.0/8" },
  { protocol = "tcp", ports = "6379", remote_ip_prefix = "10.0.0.0/8" },
  { protocol = "tcp", ports = "8000-8100", remote_group = "PREFIX-g12" },
  { protocol = "udp", ports = "53", remote_ip_prefix = "10.0.0.0/8" },
  { protocol = "udp", ports = "123" },
  { protocol = "icmp" },
  { protocol = "icmp", ethertype = "IPv6" },
  { protocol = "tcp", ports = "22", remote_ip_prefix = "2001:db8::/32" },
  { direction = "egress", protocol = "tcp", ports = "443" },
]
"""

SERVER = """
[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
keypair = "ivc-demo"
userdata = "templates/ci.j2"
userdata_vars = { greeting = "hello" }

[secgroups.PREFIX-web]
description = "ivc test"
rules = [
  { protocol = "tcp", ports = "22", remote_ip_prefix = "0.0.0.0/0" },
  { protocol = "icmp" },
]

[servers.PREFIX-s1]
networks = ["private"]
security_groups = ["PREFIX-web"]
metadata = { role = "test" }
"""


def assert_ok(run, changed):
    assert run.code == 0, run
    assert run.data["changed"] is changed, run.data
    return run.data


def assert_steady(run):
    """A rerun: nothing changed, and no request but GETs and the token's POST."""
    data = assert_ok(run, False)
    assert data["actions"] == []
    assert data["mutating_requests"] == 0, data["requests_by_method"]
    assert set(data["requests_by_method"]) <= {"GET", "POST"}
    assert data["requests_by_method"].get("POST", 0) == data["auth_requests"]
    return data


def rules_of(conn, group_name):
    group = conn.network.find_security_group(group_name, ignore_missing=False)
    return list(conn.network.security_group_rules(security_group_id=group.id))


def test_ensure_secgroups_twice_then_prune(ivc, conn):
    ivc.write_spec(TWELVE_RULES)
    name = f"{ivc.prefix}-g12"
    first = assert_ok(ivc.run("ensure-secgroups", "--json"), True)
    assert first["requests"] <= 6, first
    assert first["requests_by_method"]["POST"] == 3  # token, the group, ONE POST of 12 rules
    assert len(rules_of(conn, name)) == 12 + 2  # declared + neutron's two default egress rules

    second = assert_steady(ivc.run("ensure-secgroups", "--json"))
    assert second["requests"] <= 3, second
    assert any("2 undeclared rule(s) kept" in w for w in second["warnings"])

    dry = assert_ok(ivc.run("ensure-secgroups", "--prune", "--dry-run", "--json"), False)
    assert [a["action"] for a in dry["actions"]] == ["delete", "delete"]
    assert len(rules_of(conn, name)) == 14
    pruned = assert_ok(ivc.run("ensure-secgroups", "--prune", "--json"), True)
    assert pruned["requests_by_method"]["DELETE"] == 2
    assert_steady(ivc.run("ensure-secgroups", "--prune", "--json"))
    assert len(rules_of(conn, name)) == 12


def test_a_rule_made_outside_ivc_meanwhile_is_kept_and_not_duplicated(ivc, conn):
    ivc.write_spec(TWELVE_RULES)
    assert_ok(ivc.run("ensure-secgroups", "--name", f"{ivc.prefix}-g12", "--json"), True)
    group = conn.network.find_security_group(f"{ivc.prefix}-g12", ignore_missing=False)
    ssh = next(r for r in rules_of(conn, group.name) if r.port_range_min == 22
               and r.remote_ip_prefix == "0.0.0.0/0")
    conn.network.delete_security_group_rule(ssh)
    again = assert_ok(ivc.run("ensure-secgroups", "--json"), True)
    assert [a["summary"] for a in again["actions"]] == ["ingress IPv4 tcp 22 from 0.0.0.0/0 (ssh)"]
    assert len(rules_of(conn, group.name)) == 14


def test_create_instance_twice_gives_config_drive_and_user_data(ivc, conn, admin_conn):
    spec_path = ivc.write_spec(SERVER)
    name = f"{ivc.prefix}-s1"
    for args in (["--dry-run"], []):  # its group is declared but not ensured yet
        refused = ivc.run("create-instance", "--name", name, "--json", *args)
        assert refused.code == 2, refused
        assert "run `invoke ensure-secgroups` first" in refused.data["error"]
    assert ivc.servers() == []

    assert_ok(ivc.run("ensure-secgroups", "--json"), True)
    run = ivc.run("create-instance", "--name", name, "--json")
    first = assert_ok(run, True)
    assert f"server {name}: ACTIVE" in run.err  # progress on stderr
    (server,) = ivc.servers()
    assert first["info"]["id"] == server.id and server.status == "ACTIVE"
    meta = server.metadata
    rendered = load_spec(spec_path, env_name=ivc.env).servers[name].userdata
    assert meta["ivc_managed"] == "1" and meta["ivc_env"] == ivc.env and meta["ivc_name"] == name
    assert meta["ivc_gen"] == "1" and meta["ivc_run"] == first["run_id"]
    assert meta["role"] == "test" and len(meta["ivc_userdata"]) == 16
    seen = admin_conn.compute.get_server(server.id)
    assert str(seen.has_config_drive).lower() == "true"
    assert base64.b64decode(seen.user_data) == rendered
    assert [g["name"] for g in seen.security_groups] == [f"{ivc.prefix}-web"]

    second = assert_steady(ivc.run("create-instance", "--name", name, "--json"))
    assert second["info"]["id"] == server.id
    assert len(ivc.servers()) == 1


def test_dry_run_resolves_and_shows_the_plan_without_user_data(ivc):
    ivc.write_spec(SERVER)
    name = f"{ivc.prefix}-s1"
    run = ivc.run("deploy", "--dry-run", "--json")
    data = assert_ok(run, False)
    server = next(a for a in data["actions"] if a["kind"] == "server")
    assert server["request"]["config_drive"] is True
    assert set(server["request"]["user_data"]) == {"sha256", "bytes"}
    assert "hello" not in run.out + run.err and "Y2xvdWQtY29uZmln" not in run.out + run.err
    assert data["mutating_requests"] == 0
    assert ivc.servers() == [] and name not in {s.name for s in ivc.conn.compute.servers()}
    assert find_or_none(ivc.conn.network.find_security_group, f"{ivc.prefix}-web") is None


def test_attach_volume_twice_and_refuse_a_volume_attached_elsewhere(ivc, conn):
    data_volume = ivc.volume("data")
    other_volume = ivc.volume("taken")
    name = f"{ivc.prefix}-s1"
    ivc.write_spec(SERVER)
    assert_ok(ivc.run("deploy", "--json"), True)  # the server, without volumes yet
    server = ivc.servers()[0]

    # a volume attached to another server (made outside ivc) is refused, nothing changes
    image = image_named(conn, "ivc-tiny")
    other = conn.compute.create_server(
        name=f"{ivc.prefix}-other", image_id=image.id,
        flavor_id=conn.compute.find_flavor("m1.tiny", ignore_missing=False).id,
        networks=[{"uuid": conn.network.find_network("private", ignore_missing=False).id}])
    other = conn.compute.wait_for_server(other, interval=0.5, wait=120)
    conn.compute.create_volume_attachment(other, other_volume.id)
    conn.block_storage.wait_for_status(other_volume, "in-use", interval=0.5, wait=60)
    ivc.write_spec(SERVER + f'volumes = ["{data_volume.name}", "{other_volume.name}"]\n')
    before = cloud_state(conn, ivc.prefix)
    refused = ivc.run("attach-volume", "--name", name, "--json")
    assert refused.code == 2, refused
    assert f"is attached to server '{ivc.prefix}-other'" in refused.err
    assert refused.data["mutating_requests"] == 0
    assert cloud_state(conn, ivc.prefix) == before

    # the subset that can be attached: attach, then a rerun does nothing
    first = assert_ok(ivc.run("attach-volume", "--name", name, "--volume", data_volume.name,
                              "--json"), True)
    assert [a["action"] for a in first["actions"]] == ["attach"]
    volume = conn.block_storage.get_volume(data_volume.id)
    assert volume.status == "in-use"
    assert [a["server_id"] for a in volume.attachments] == [server.id]
    second = assert_steady(ivc.run("attach-volume", "--name", name, "--volume",
                                   data_volume.name, "--json"))
    assert second["requests"] <= 4  # token, discovery, servers: no Cinder request at all


def test_deploy_twice_one_private_server_with_one_volume_within_budget(ivc, conn):
    volume = ivc.volume("data")
    name = f"{ivc.prefix}-s1"
    ivc.write_spec(SERVER + f'volumes = ["{volume.name}"]\n')
    first = assert_ok(ivc.run("deploy", "--json"), True)
    # issue 18's bound for one server: its lock (create, check, delete), the groups' lock and the
    # quota look-ups came on top of the 22 of before
    assert first["requests"] <= 35, first["requests_by_method"]
    assert [(s["step"], s["changed"]) for s in first["steps"]] == [
        ("ensure-secgroups", True), ("create-instance", True), ("attach-volume", False),
        ("check", False)]  # a new server's checks (none declared here: cloud_init = false)
    (server,) = ivc.servers()
    volume = conn.block_storage.get_volume(volume.id)
    assert volume.status == "in-use" and [a["server_id"] for a in volume.attachments] == [server.id]
    assert first["steps"][1]["target"] == name

    second = assert_steady(ivc.run("deploy", "--json"))
    assert second["requests"] <= 6, second  # listings only: it waits for nothing (no wall-clock
    # bound on a shared machine; tests/unit/test_ops.py checks that a steady deploy never sleeps)


def test_floating_ip_is_created_once_and_reused(ivc, conn):
    ivc.write_spec(SERVER.replace('metadata = { role = "test" }', "floating_ip = true"))
    name = f"{ivc.prefix}-s1"
    first = assert_ok(ivc.run("deploy", "--json"), True)
    created = next(a for a in first["actions"] if a["kind"] == "floating_ip")
    assert created["action"] == "create"
    (server,) = ivc.servers()
    ports = {p.id for p in conn.network.ports(device_id=server.id)}
    fip = conn.network.get_ip(created["id"])
    assert fip.port_id in ports and fip.description == f"ivc:{ivc.env}:{name}"
    assert_steady(ivc.run("deploy", "--json"))

    conn.network.update_ip(fip, port_id=None)  # dissociated by hand: ivc takes it back
    again = assert_ok(ivc.run("create-instance", "--name", name, "--json"), True)
    assert [(a["action"], a["id"]) for a in again["actions"]] == [("associate", fip.id)]
    assert len([f for f in conn.network.ips() if f.description == fip.description]) == 1


def test_a_declared_keypair_is_ensured(ivc, conn, tmp_path):
    key = tmp_path / "id_test"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (ivc.root / "env" / "keys").mkdir()
    (ivc.root / "env" / "keys" / "test.pub").write_text((tmp_path / "id_test.pub").read_text())
    spec = SERVER.replace('keypair = "ivc-demo"', 'keypair = "PREFIX-key"') + \
        '\n[keypairs.PREFIX-key]\npublic_key_file = "keys/test.pub"\n'
    ivc.write_spec(spec)
    first = assert_ok(ivc.run("deploy", "--json"), True)
    assert ("create", "keypair") in [(a["action"], a["kind"]) for a in first["actions"]]
    assert conn.compute.get_keypair(f"{ivc.prefix}-key").public_key.split()[:2] == \
        (tmp_path / "id_test.pub").read_text().split()[:2]
    assert_steady(ivc.run("deploy", "--json"))


# -- bad inputs: exit 2, a message naming the problem, and the cloud unchanged ----------------
BASE = """
[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
keypair = "ivc-demo"
userdata = "templates/ci.j2"
userdata_vars = { greeting = "hello" }

[secgroups.PREFIX-web]
rules = [ { protocol = "tcp", ports = "22", remote_ip_prefix = "0.0.0.0/0" } ]

[servers.PREFIX-s1]
networks = ["private"]
security_groups = ["PREFIX-web"]
"""
S1 = 'security_groups = ["PREFIX-web"]\n'


def edit(old, new):
    return lambda text: text.replace(old, new, 1)


def add(extra):
    return lambda text: text + extra


def make_volume_twice(ivc, conn):
    ivc.volume("dup", name=f"{ivc.prefix}-dup")
    ivc.volume("dup", name=f"{ivc.prefix}-dup")


def attach_volume_elsewhere(ivc, conn):
    volume = ivc.volume("taken")
    server = conn.compute.create_server(
        name=f"{ivc.prefix}-other",
        image_id=image_named(conn, "ivc-tiny").id,
        flavor_id=conn.compute.find_flavor("m1.tiny", ignore_missing=False).id,
        networks=[{"uuid": conn.network.find_network("private", ignore_missing=False).id}])
    server = conn.compute.wait_for_server(server, interval=0.5, wait=120)
    conn.compute.create_volume_attachment(server, volume.id)
    conn.block_storage.wait_for_status(volume, "in-use", interval=0.5, wait=60)


def other_public_key(ivc, conn):
    key = ivc.root / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (ivc.root / "env" / "other.pub").write_text((ivc.root / "other.pub").read_text())


def private_key_file(ivc, conn):
    (ivc.root / "env" / "id_x").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"
                                           "-----END OPENSSH PRIVATE KEY-----\n")


BAD_INPUTS = [
    # the declarations (checked before any cloud call)
    ("spec-unknown-key", ["deploy"], edit(S1, S1 + 'imgae = "x"\n'), {}, None,
     "servers.PREFIX-s1.imgae: unknown key; did you mean 'image'?"),
    ("spec-invalid-toml", ["deploy"], add("[servers.broken\n"), {}, None, "invalid TOML"),
    ("spec-port-out-of-range", ["ensure-secgroups"], edit('ports = "22"', 'ports = "70000"'), {},
     None, "'70000' is outside 1-65535"),
    ("spec-undeclared-remote-group", ["ensure-secgroups"],
     edit('remote_ip_prefix = "0.0.0.0/0"', 'remote_group = "PREFIX-nope"'), {}, None,
     "'PREFIX-nope' is not a declared security group"),
    ("spec-template-variable", ["create-instance", "--name", "PREFIX-s1"],
     edit('userdata_vars = { greeting = "hello" }', ""), {}, None, "undefined variable 'greeting'"),
    ("spec-server-name", ["deploy"], add('[servers.Bad_Name]\nnetworks = ["private"]\n'), {}, None,
     "'Bad_Name' is not a valid server name"),
    ("spec-reserved-metadata", ["deploy"], edit(S1, S1 + 'metadata = { ivc_gen = "9" }\n'), {},
     None, "keys starting with 'ivc_' are reserved for ivc"),
    ("spec-private-key", ["deploy"], add('[keypairs.PREFIX-k]\npublic_key_file = "id_x"\n'), {},
     private_key_file, "holds a PRIVATE key"),
    ("spec-floating-ip-on-external-network", ["deploy"],
     edit('networks = ["private"]', 'networks = ["public"]\nfloating_ip = true'), {}, None,
     "the server is only on public networks"),
    # references the cloud resolves (checked before the first change)
    ("cloud-unknown-image", ["deploy"], edit('image = "ivc-tiny"', 'image = "ivc-tinny"'), {}, None,
     "servers.PREFIX-s1.image: no image named 'ivc-tinny' in the cloud"),
    ("cloud-unknown-flavor", ["deploy"], edit('flavor = "m1.tiny"', 'flavor = "m1.huge"'), {},
     None, "servers.PREFIX-s1.flavor: no flavor named 'm1.huge'"),
    ("cloud-unknown-network", ["deploy"], edit('networks = ["private"]', 'networks = ["privat"]'),
     {}, None, "no network named 'privat' in the cloud; did you mean 'private'?"),
    ("cloud-unknown-keypair", ["deploy"], edit('keypair = "ivc-demo"', 'keypair = "ivc-demoo"'), {},
     None, "servers.PREFIX-s1.keypair: no keypair named 'ivc-demoo'"),
    ("cloud-unknown-volume", ["deploy"], edit(S1, S1 + 'volumes = ["PREFIX-missing"]\n'), {}, None,
     "no volume named 'PREFIX-missing' in the cloud; ivc never creates volumes"),
    ("cloud-unknown-group", ["deploy"],
     edit(S1, 'security_groups = ["PREFIX-web", "PREFIX-ghost"]\n'), {}, None,
     "no security group named 'PREFIX-ghost' in the project"),
    ("cloud-ambiguous-volume", ["deploy"], edit(S1, S1 + 'volumes = ["PREFIX-dup"]\n'), {},
     make_volume_twice, "2 volumes are named 'PREFIX-dup'"),
    ("cloud-volume-attached-elsewhere", ["deploy"], edit(S1, S1 + 'volumes = ["PREFIX-taken"]\n'),
     {}, attach_volume_elsewhere, "is attached to server 'PREFIX-other'"),
    ("cloud-keypair-with-another-key", ["deploy"],
     add('[keypairs.ivc-demo]\npublic_key_file = "other.pub"\n'), {}, other_public_key,
     "the cloud's keypair 'ivc-demo' holds a different public key"),
    ("cloud-server-missing-for-attach", ["attach-volume", "--name", "PREFIX-s1"],
     edit(S1, S1 + 'volumes = ["PREFIX-vol"]\n'), {}, None,
     "no server made by ivc for 'PREFIX-s1'"),
    ("deploy-bad-second-server", ["deploy"],
     add('[servers.PREFIX-s2]\nflavor = "m9.nope"\nnetworks = ["private"]\n'), {}, None,
     "servers.PREFIX-s2.flavor: no flavor named 'm9.nope'"),
    # flags and environment
    ("args-missing-name", ["create-instance"], None, {}, None, "--name is required"),
    ("args-undeclared-server", ["create-instance", "--name", "PREFIX-s9"], None, {}, None,
     "not a declared server (servers.PREFIX-s9); did you mean 'PREFIX-s1'?"),
    ("args-undeclared-volume", ["attach-volume", "--name", "PREFIX-s1", "--volume", "x"], None,
     {}, None, "--volume 'x': not a volume of servers.PREFIX-s1.volumes"),
    ("args-undeclared-group", ["ensure-secgroups", "--name", "PREFIX-webb"], None, {}, None,
     "not a declared security group (secgroups.PREFIX-webb); did you mean 'PREFIX-web'?"),
    ("args-bad-timeout", ["deploy", "--timeout", "soon"], None, {}, None,
     "--timeout: 'soon' is not a number of seconds"),
    ("env-unknown-environment", ["deploy"], None, {"IVC_ENV": "PREFIX-nope"}, None,
     "no env file for environment 'PREFIX-nope'"),
    ("env-unknown-cloud", ["deploy"], None, {"OS_CLOUD": "no-such-cloud"}, None,
     "OS_CLOUD='no-such-cloud'"),
    ("env-bad-timeout", ["deploy"], None, {"IVC_BOOT_TIMEOUT": "ten"}, None,
     "IVC_BOOT_TIMEOUT: 'ten' is not a number of seconds"),
]


@pytest.mark.parametrize(("args", "change", "env", "setup", "expect"),
                         [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUTS])
def test_bad_input_exits_2_names_the_problem_and_changes_nothing(ivc, conn, args, change, env,
                                                                 setup, expect):
    if setup is not None:
        setup(ivc, conn)
    ivc.write_spec((change or (lambda t: t))(BASE))
    before = cloud_state(conn, ivc.prefix)
    run = ivc.run(*[a.replace("PREFIX", ivc.prefix) for a in args], "--json",
                  env={k: v.replace("PREFIX", ivc.prefix) for k, v in env.items()})
    assert run.code == 2, run
    assert expect.replace("PREFIX", ivc.prefix) in run.err, run.err
    assert "Traceback" not in run.err
    if run.data is not None:  # the run itself sent no change (and said why it stopped)
        assert run.data["exit_code"] == 2 and run.data["mutating_requests"] == 0
        assert expect.replace("PREFIX", ivc.prefix) in run.data["error"]
    assert cloud_state(conn, ivc.prefix) == before
