"""converge on the fake cloud (issue 18): the plan from status's drift, in-place metadata,
rotations through rotate (the first failure stops the rest, exit 3), undeclared servers and
--prune, a second converge that changes nothing."""

import pytest
from fakecloud import FakeConnection
from test_ops import new_cloud

from ivc_tasks.errors import EXIT_ROLLED_BACK
from ivc_tasks.spec import load_spec
from ivc_tasks.steps.converge import ConvergeFailed, converge

BASE = """
[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
keypair = "ivc-demo"
networks = ["private"]
userdata = "t.j2"
"""


@pytest.fixture
def conn():
    return FakeConnection()


@pytest.fixture
def spec_of(tmp_path):
    (tmp_path / "t.j2").write_text("#cloud-config\nhostname: {{ server }}\n")

    def make(servers: dict[str, str]):
        text = BASE + "".join(f"\n[servers.{n}]\n{extra}\n" for n, extra in servers.items())
        path = tmp_path / "spec.toml"
        path.write_text(text)
        return load_spec(path, env_name="test")

    return make


def outcomes(result):
    return [(p.name, p.action, p.outcome) for p in result.servers]


def test_first_converge_creates_and_the_second_changes_nothing(conn, spec_of):
    spec = spec_of({"a": "", "b": ""})
    first = converge(new_cloud(conn), spec)
    assert outcomes(first) == [("a", "create", "created"), ("b", "create", "created")]
    assert first.changed and first.to_dict()["changed"] is True
    conn.calls.clear()
    second = converge(new_cloud(conn), spec)
    assert outcomes(second) == [("a", "unchanged", "unchanged"), ("b", "unchanged", "unchanged")]
    assert not second.changed and conn.mutations() == []
    assert second.lines()[-1] == "nothing to change"


def test_dry_run_plans_with_reasons_and_changes_nothing(conn, spec_of):
    converge(new_cloud(conn), spec_of({"a": "", "b": ""}))
    spec = spec_of({"a": 'flavor = "m1.small"', "b": 'metadata = { team = "web" }'})
    conn.calls.clear()
    plan = converge(new_cloud(conn), spec, dry_run=True)
    assert conn.mutations() == []
    out = plan.to_dict()
    assert out["changed"] is False
    assert [(s["name"], s["action"], s["reasons"]) for s in out["servers"]] == [
        ("a", "rotate", ["flavor 'm1.tiny' -> 'm1.small'"]),
        ("b", "update", ["metadata team='web' (is None)"])]
    assert all("outcome" not in s for s in out["servers"])


def test_metadata_is_set_in_place_and_a_flavor_change_rotates(conn, spec_of):
    converge(new_cloud(conn), spec_of({"a": "", "b": ""}))
    before = {s.name: s.id for s in conn.servers}
    spec = spec_of({"a": 'flavor = "m1.small"', "b": 'metadata = { team = "web" }'})
    result = converge(new_cloud(conn), spec)
    assert outcomes(result) == [("a", "rotate", "rotated"), ("b", "update", "updated")]
    after = {s.name: s.id for s in conn.servers}
    assert after["b"] == before["b"] and after["a"] != before["a"]
    assert conn.server(after["b"]).metadata["team"] == "web"
    assert not converge(new_cloud(conn), spec).changed


def test_a_failed_rotation_stops_the_rest_exit_3_and_names_them(conn, spec_of):
    converge(new_cloud(conn), spec_of({"a": "", "b": "", "c": ""}))
    before = sorted(s.id for s in conn.servers)
    spec = spec_of({n: 'flavor = "m1.small"' for n in "abc"})
    conn.next_boot_fault = "No valid host was found"
    with pytest.raises(ConvergeFailed) as info:
        converge(new_cloud(conn), spec, max_unavailable=1)
    assert info.value.exit_code == EXIT_ROLLED_BACK
    assert outcomes(info.value.result) == [("a", "rotate", "rolled back"),
                                           ("b", "rotate", "not started"),
                                           ("c", "rotate", "not started")]
    assert "not started (untouched): b, c" in str(info.value)
    assert sorted(s.id for s in conn.servers if s.status == "ACTIVE") == before


def test_undeclared_servers_are_listed_left_alone_and_pruned_on_request(conn, spec_of):
    converge(new_cloud(conn), spec_of({"a": "", "old": ""}))
    spec = spec_of({"a": ""})
    listed = converge(new_cloud(conn), spec)
    assert outcomes(listed) == [("a", "unchanged", "unchanged"),
                                ("old", "undeclared", "left alone")]
    assert listed.to_dict()["servers"][1]["holds"]["status"] == "ACTIVE"
    assert {s.name for s in conn.servers} == {"a", "old"}
    pruned = converge(new_cloud(conn), spec, prune=True)
    assert outcomes(pruned)[1] == ("old", "undeclared", "pruned")
    assert {s.name for s in conn.servers if s.status == "ACTIVE"} == {"a"}
