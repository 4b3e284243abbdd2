"""ensure-secgroups across environments, and Neutron's default egress rules, against the fake."""

import textwrap

import pytest
from fakecloud import FakeConnection, ticking_cloud

from ivc_tasks.errors import ConfigError
from ivc_tasks.spec import load_spec
from ivc_tasks.steps.secgroups import ensure_secgroups

SHARED = """
[secgroups.shared]
description = "shared"
rules = [ { protocol = "tcp", ports = "PORT", description = "from ENV" } ]
"""


def run(conn, env, port, *, prune=False, extra="", dry_run=False, tmp_path):
    path = tmp_path / f"{env}.toml"
    path.write_text(textwrap.dedent(SHARED.replace("PORT", str(port)).replace("ENV", env)
                                    + extra))
    cloud = ticking_cloud(conn, env)
    return ensure_secgroups(cloud, load_spec(path, env_name=env), prune=prune, dry_run=dry_run)


def ports(group):
    return sorted((r["direction"], r.get("port_range_min"), r.get("description"))
                  for r in group.security_group_rules)


def test_prune_in_b_leaves_the_rules_of_a_and_the_default_egress(tmp_path):
    conn = FakeConnection()
    run(conn, "a", 22, tmp_path=tmp_path)
    run(conn, "b", 80, tmp_path=tmp_path)
    [group] = conn.groups
    assert sorted(group.tags) == ["ivc:a", "ivc:b"]
    assert ports(group) == [("egress", None, None), ("egress", None, None),
                            ("ingress", 22, "ivc:a from a"), ("ingress", 80, "ivc:b from b")]
    conn.calls.clear()
    result = run(conn, "b", 443, prune=True, tmp_path=tmp_path)  # b now declares 443, not 80
    assert [(a.verb, a.summary.split(" (")[0]) for a in result.actions] == [
        ("create", "ingress IPv4 tcp 443"), ("delete", "ingress IPv4 tcp 80")]
    assert result.warnings == []
    assert ("ingress", 22, "ivc:a from a") in ports(group)
    assert [r for r in ports(group) if r[0] == "egress"] == [("egress", None, None)] * 2


def test_a_rerun_in_a_second_environment_tags_once_then_costs_one_listing(tmp_path):
    conn = FakeConnection()
    run(conn, "a", 22, tmp_path=tmp_path)
    conn.calls.clear()
    first = run(conn, "b", 22, tmp_path=tmp_path)  # the same rule: a's stays, b adopts nothing
    assert [(a.verb, a.kind) for a in first.actions] == [("tag", "security_group")]
    assert conn.mutations() == ["network.add_tag"]
    conn.calls.clear()
    assert not run(conn, "b", 22, tmp_path=tmp_path).changed
    assert [c[0] for c in conn.calls] == ["network.security_groups"]


def test_default_egress_false_is_said_then_pruned(tmp_path):
    conn = FakeConnection()
    extra = "default_egress = false\n"
    plan = run(conn, "a", 22, extra=extra, dry_run=True, tmp_path=tmp_path)
    assert [(a.verb, a.summary) for a in plan.actions if a.kind == "security_group_rule"] == [
        ("create", "ingress IPv4 tcp 22 (from a)")]
    assert len(plan.warnings) == 1 and "Neutron's default egress among them" in plan.warnings[0]
    result = run(conn, "a", 22, extra=extra, tmp_path=tmp_path)
    assert [a.verb for a in result.actions] == ["create", "tag", "create"]  # nothing deleted
    assert result.warnings == plan.warnings
    pruned = run(conn, "a", 22, extra=extra, prune=True, tmp_path=tmp_path)
    assert [a.summary for a in pruned.actions] == ["egress IPv4 any", "egress IPv6 any"]
    assert ports(conn.groups[0]) == [("ingress", 22, "ivc:a from a")]
    assert not run(conn, "a", 22, extra=extra, prune=True, tmp_path=tmp_path).changed


def test_declared_egress_replaces_the_defaults_of_an_existing_group_on_prune(tmp_path):
    conn = FakeConnection()
    run(conn, "a", 22, tmp_path=tmp_path)
    extra = ('rules = [ { protocol = "tcp", ports = "22" }, '
             '{ direction = "egress", protocol = "udp", ports = "53" } ]\n')
    spec = SHARED.split("rules")[0] + extra
    path = tmp_path / "x.toml"
    path.write_text(spec)
    cloud = ticking_cloud(conn, "a")
    kept = ensure_secgroups(cloud, load_spec(path, env_name="a"))
    assert len(kept.warnings) == 1 and "Neutron's default egress among them" in kept.warnings[0]
    cloud = ticking_cloud(conn, "a")
    pruned = ensure_secgroups(cloud, load_spec(path, env_name="a"), prune=True)
    assert [a.summary for a in pruned.actions] == ["egress IPv4 any", "egress IPv6 any"]
    assert [r[:2] for r in ports(conn.groups[0]) if r[0] == "egress"] == [("egress", 53)]


def test_default_egress_unwanted_in_a_shared_group_is_kept_and_said(tmp_path):
    conn = FakeConnection()
    run(conn, "a", 22, tmp_path=tmp_path)
    result = run(conn, "b", 80, prune=True, extra="default_egress = false\n", tmp_path=tmp_path)
    assert not any(a.verb == "delete" for a in result.actions)
    assert len(result.warnings) == 1 and "environment(s) a share the group" in result.warnings[0]


def test_missing_default_egress_rules_are_restored(tmp_path):
    conn = FakeConnection()
    run(conn, "a", 22, tmp_path=tmp_path)
    group = conn.groups[0]
    group.security_group_rules = [r for r in group.security_group_rules
                                  if r["direction"] != "egress"]  # the old --prune hint
    result = run(conn, "a", 22, tmp_path=tmp_path)
    assert [a.summary for a in result.actions] == ["egress IPv4 any", "egress IPv6 any"]


def test_a_description_too_long_with_the_marker_is_refused_before_any_change(tmp_path):
    conn = FakeConnection()
    path = tmp_path / "long.toml"
    path.write_text('[secgroups.g]\nrules = [ { protocol = "tcp", ports = "22", description = "'
                    + "x" * 250 + '" } ]\n')
    cloud = ticking_cloud(conn, "envname")
    with pytest.raises(ConfigError) as info:
        ensure_secgroups(cloud, load_spec(path, env_name="envname"))
    assert str(info.value) == (
        f"{path}: secgroups.g.rules[0].description: with ivc's marker 'ivc:envname' it is 262 "
        "characters, over Neutron's 255; shorten it to 243")
    assert conn.mutations() == []


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", False), (None, None)])
def test_default_egress_is_read_from_the_declarations(tmp_path, value, expected):
    path = tmp_path / "s.toml"
    path.write_text("[secgroups.g]\n" + (f"default_egress = {value}\n" if value else ""))
    assert load_spec(path, env_name="a").secgroups["g"].default_egress is expected


def test_default_egress_must_be_a_boolean(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[secgroups.g]\ndefault_egress = "no"\n')
    with pytest.raises(ConfigError) as info:
        load_spec(path, env_name="a")
    assert str(info.value) == (f"{path}: secgroups.g.default_egress: expected true or false, got "
                               "a string 'no'; write true or false without quotes")
