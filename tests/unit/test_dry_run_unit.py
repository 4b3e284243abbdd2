"""One dry-run mechanism: for destroy and ensure-keypairs, what ``--dry-run`` prints is what the
real run then does, action for action (plan -> describe -> apply), and the dry run changes
nothing. Against the in-memory fake cloud."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakecloud import FakeConnection, ticking_cloud
from test_destroy_status_unit import SPEC, deployed, tags  # noqa: F401 (conftest reads SPEC)

from ivc_tasks.resources.servers import managed_servers
from ivc_tasks.spec import Keypair
from ivc_tasks.steps import destroy as destroy_step
from ivc_tasks.steps.keypairs import apply_keypairs, describe_keypairs

ENV = "test"
VOLUMES = ("web1-data", "web1-logs")  # the fake cloud holds them; spec and conn are conftest's


def actions(result):
    return [a.to_dict() for a in result.actions]


@pytest.mark.parametrize("status", ["ACTIVE", "ERROR"])
@pytest.mark.parametrize("keep_floating_ip", [False, True])
def test_destroy_does_what_its_dry_run_said(conn, spec, status, keep_floating_ip):
    web1, fip = deployed(conn, spec, status=status)
    conn.add_fip(None, description=f"ivc:{ENV}:web1")  # a spare one ivc allocated
    conn.add_server("web1", networks=["net-priv"], metadata=tags(
        spec, gen=2, ivc_rotation="rot-1", ivc_role="new", ivc_replaces=web1.id))
    planned = destroy_step.destroy(ticking_cloud(conn, ENV), spec, "web1",
                                   keep_floating_ip=keep_floating_ip, dry_run=True)
    assert conn.mutations() == [] and planned.dry_run and not planned.changed
    done = destroy_step.destroy(ticking_cloud(conn, ENV), spec, "web1",
                                keep_floating_ip=keep_floating_ip)
    assert actions(done) == actions(planned) and done.changed and not done.dry_run
    assert done.info == planned.info == {"volumes_kept": sorted(v.id for v in conn.volumes)}
    assert conn.servers == []
    verbs = [(a.verb, a.kind) for a in done.actions]
    assert verbs.count(("delete", "server")) == 2
    # released unless kept: the one on the server and the spare one
    assert verbs.count(("delete", "floating_ip")) == (0 if keep_floating_ip else 2)
    # from a server in ERROR the volumes are freed by the delete, so they come after it
    web1_deleted = next(i for i, a in enumerate(done.actions)
                        if a.kind == "server" and a.detail["id"] == web1.id)
    detach_at = [i for i, v in enumerate(verbs) if v == ("detach", "volume")]
    assert len(detach_at) == 2
    assert all((i > web1_deleted) == (status == "ERROR") for i in detach_at), verbs


def test_destroy_plan_is_read_once_and_describe_makes_no_request(conn, spec):
    deployed(conn, spec)
    cloud = ticking_cloud(conn, ENV)
    plan = destroy_step.plan_destroy(cloud, "web1", managed_servers(cloud, "web1"))
    before = len(conn.calls)
    described = destroy_step.describe_destroy(plan)
    assert len(conn.calls) == before  # describe reads the plan only
    assert [(a.verb, a.kind, a.name) for a in described.actions] == [
        ("delete", "floating_ip", "203.0.113.10"),
        ("detach", "volume", "web1-data"), ("detach", "volume", "web1-logs"),
        ("delete", "server", "web1")]


def test_ensure_keypairs_does_what_its_dry_run_said(tmp_path):
    conn = FakeConnection()
    keys = {name: Keypair(name, Path(f"{name}.pub"), f"ssh-ed25519 AAAA{name} c")
            for name in ("k1", "k2")}
    planned = describe_keypairs(keys)
    assert conn.mutations() == [] and planned.dry_run
    done = apply_keypairs(ticking_cloud(conn, ENV), keys)
    assert actions(done) == actions(planned) == [
        {"action": "create", "kind": "keypair", "name": "k1", "summary": "from k1.pub"},
        {"action": "create", "kind": "keypair", "name": "k2", "summary": "from k2.pub"}]
    assert sorted(k.name for k in conn.keys) == ["ivc-demo", "k1", "k2"]
