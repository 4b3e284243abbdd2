"""Issue 10 against the local cloud, run as a user runs ivc (`invoke ... --json`): two
environments sharing a security group, where --prune in one leaves the other's rules and
Neutron's default egress rules; `status` right after `rotate` showing the floating IP without
drift (read from Neutron, not from Nova's lagging cache); a folder of files landing in the
user_data byte for byte, and one too large refused before any change.
"""

import base64
import gzip
import os

import pytest
import yaml

from .conftest import Ivc

pytestmark = pytest.mark.cloud

HEAD = """
[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
keypair = "ivc-demo"
userdata = "templates/ci.j2"
userdata_vars = { greeting = "hello" }
"""

SHARED = """
[secgroups.GROUP]
description = "shared by two environments"
rules = [ RULES ]
"""


def shared_spec(helper, group, *rules):
    return helper.write_spec(SHARED.replace("GROUP", group).replace("RULES", ", ".join(rules)))


def group_rules(conn, name):
    group = conn.network.find_security_group(name, ignore_missing=False)
    return group, list(conn.network.security_group_rules(security_group_id=group.id))


def summary(rules):
    return sorted((r.direction, r.ether_type, r.protocol, r.port_range_min, r.description or "")
                  for r in rules)


@pytest.fixture
def env_b(tmp_path, unique, conn):
    """A second environment (its own env file and declarations) on the same project."""
    helper = Ivc(tmp_path / "b", f"{unique}b", conn)
    yield helper
    helper.cleanup()


def test_prune_in_b_leaves_the_rules_of_a_and_the_default_egress(ivc, env_b, conn):
    group_name = f"{ivc.prefix}-shared"
    shared_spec(ivc, group_name, '{ protocol = "tcp", ports = "22", description = "ssh" }',
                '{ protocol = "icmp" }')
    shared_spec(env_b, group_name, '{ protocol = "tcp", ports = "80" }')
    a = ivc.run("ensure-secgroups", "--json")
    assert a.code == 0 and a.data["warnings"] == [], a  # no word about the default egress
    b = env_b.run("ensure-secgroups", "--json")
    assert b.code == 0 and b.data["warnings"] == [], b
    assert [(x["action"], x["kind"]) for x in b.data["actions"]] == [
        ("tag", "security_group"), ("create", "security_group_rule")]
    group, rules = group_rules(conn, group_name)
    assert sorted(group.tags) == sorted([f"ivc:{ivc.env}", f"ivc:{env_b.env}"])
    a_rules = [("ingress", "IPv4", "icmp", None, f"ivc:{ivc.env}"),
               ("ingress", "IPv4", "tcp", 22, f"ivc:{ivc.env} ssh")]
    egress = [("egress", "IPv4", None, None, ""), ("egress", "IPv6", None, None, "")]
    assert summary(rules) == sorted(egress + a_rules +
                                    [("ingress", "IPv4", "tcp", 80, f"ivc:{env_b.env}")])
    conn.network.create_security_group_rule(  # made by hand: no environment's
        security_group_id=group.id, direction="ingress", protocol="udp", port_range_min=53,
        port_range_max=53, description="dns by hand")

    shared_spec(env_b, group_name, '{ protocol = "tcp", ports = "443" }')  # b drops 80
    pruned = env_b.run("ensure-secgroups", "--prune", "--json")
    assert pruned.code == 0, pruned
    assert [(x["action"], x["summary"]) for x in pruned.data["actions"]] == [
        ("create", "ingress IPv4 tcp 443"), ("delete", "ingress IPv4 tcp 80")]
    assert pruned.data["requests_by_method"].get("DELETE") == 1
    [warning] = pruned.data["warnings"]  # the hand-made rule only: kept, and said
    assert "udp 53" in warning and "--prune leaves them" in warning and "egress" not in warning
    _, rules = group_rules(conn, group_name)
    assert summary(rules) == sorted(egress + a_rules + [
        ("ingress", "IPv4", "tcp", 443, f"ivc:{env_b.env}"),
        ("ingress", "IPv4", "udp", 53, "dns by hand")])

    again = ivc.run("ensure-secgroups", "--prune", "--json")  # a's rerun: nothing to do
    assert again.code == 0 and again.data["changed"] is False, again
    assert again.data["mutating_requests"] == 0 and again.data["requests"] <= 3, again.data
    assert len(again.data["warnings"]) == 1 and "udp 53" in again.data["warnings"][0]
    assert len(group_rules(conn, group_name)[1]) == 6


def test_default_egress_false_then_prune_leaves_a_group_without_outbound(ivc, conn):
    name = f"{ivc.prefix}-closed"
    ivc.write_spec(f'[secgroups.{name}]\ndefault_egress = false\n'
                   'rules = [ { protocol = "tcp", ports = "22" } ]\n')
    first = ivc.run("ensure-secgroups", "--json")
    assert first.code == 0 and len(first.data["warnings"]) == 1, first
    assert "default egress" in first.data["warnings"][0]
    assert first.data["requests"] <= 6, first.data  # discovery, token, list, group, tag, rules
    pruned = ivc.run("ensure-secgroups", "--prune", "--json")
    assert sorted(x["summary"] for x in pruned.data["actions"]) == ["egress IPv4 any",
                                                                 "egress IPv6 any"]
    assert summary(group_rules(conn, name)[1]) == [
        ("ingress", "IPv4", "tcp", 22, f"ivc:{ivc.env}")]
    steady = ivc.run("ensure-secgroups", "--prune", "--json")
    assert steady.data["changed"] is False and steady.data["warnings"] == []


# -- status right after rotate -------------------------------------------------------------------
def test_status_right_after_rotate_shows_the_floating_ip_without_drift(ivc, conn):
    name = f"{ivc.prefix}-web"
    ivc.write_spec(HEAD + f'\n[servers.{name}]\nnetworks = ["private"]\nfloating_ip = true\n')
    made = ivc.run("rotate", "--name", name)  # no server yet: rotate makes it
    assert made.code == 0, made
    [fip] = [f for f in conn.network.ips() if (f.description or "") == f"ivc:{ivc.env}:{name}"]
    for _ in range(2):
        rotated = ivc.run("rotate", "--name", name)
        assert rotated.code == 0, rotated
        out = ivc.run("status", "--json")  # at once: Nova's cache still lags the move
        assert out.code == 0, out
        [entry] = [s for s in out.data["servers"] if s["name"] == name]
        [server] = ivc.servers()
        assert entry["id"] == server.id and entry["drift"] == [], entry
        assert entry["floating_ips"] == [fip.floating_ip_address]
        assert fip.floating_ip_address in entry["addresses"]["private"]
        assert out.data["requests"] <= 14, out.data["requests_by_method"]


# -- write_files from a folder ------------------------------------------------------------------
def make_tree(root):
    (root / "bin").mkdir(parents=True)
    (root / "conf.d" / "deep").mkdir(parents=True)
    files = {
        "README": (b"readme\n", 0o644),
        "bin/run.sh": (b"#!/bin/sh\nexec /opt/app/bin/app \"$@\"\n", 0o755),
        "conf.d/secret.key": (bytes(range(256)) * 8, 0o600),
        "conf.d/deep/a.conf": ("caf\u00e9 = 1\n".encode(), 0o640),
        "conf.d/deep/empty": (b"", 0o644),
    }
    for rel, (data, mode) in files.items():
        (root / rel).write_bytes(data)
        os.chmod(root / rel, mode)
    return files


def test_a_folder_lands_in_the_user_data_byte_for_byte(ivc, admin_conn):
    files = make_tree(ivc.root / "env" / "files" / "app")
    name = f"{ivc.prefix}-s1"
    ivc.write_spec(HEAD + f'\n[servers.{name}]\nnetworks = ["private"]\n'
                   'files = [ { path = "/opt/app", source = "files/app", owner = "app:app" } ]\n')
    run = ivc.run("create-instance", "--name", name, "--json")
    assert run.code == 0, run
    [server] = ivc.servers()
    user_data = base64.b64decode(admin_conn.compute.get_server(server.id).user_data)
    config = yaml.safe_load(user_data)
    landed = {e["path"]: (gzip.decompress(base64.b64decode(e["content"])), e["permissions"],
                          e["owner"])
              for e in config["write_files"] if e["path"].startswith("/opt/app/")}
    assert landed == {f"/opt/app/{rel}": (data, f"0{mode:o}", "app:app")
                      for rel, (data, mode) in files.items()}
    assert config["write_files"][0]["path"] == "/etc/ivc-test"  # the template's own entry kept


def test_a_folder_over_the_user_data_limit_is_refused_before_any_change(ivc):
    root = ivc.root / "env" / "files" / "big"
    root.mkdir(parents=True)
    for i in range(30):
        (root / f"blob{i:02}.bin").write_bytes(os.urandom(2000))
    name = f"{ivc.prefix}-s2"
    ivc.write_spec(HEAD + f'\n[servers.{name}]\nnetworks = ["private"]\n'
                   'files = [ { path = "/data", source = "files/big" } ]\n')
    run = ivc.run("create-instance", "--name", name, "--json")
    assert run.code == 2, run
    assert "over Nova's limit of 65535" in run.data["error"]
    assert "files/big" in run.data["error"] and "fetch large ones at boot" in run.data["error"]
    assert run.data.get("mutating_requests", 0) == 0
    assert ivc.servers() == []
