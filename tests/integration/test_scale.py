"""deploy --parallel against the local cloud: one server of three cannot be scheduled (a flavor
whose disk no host has); the other two finish, the run exits 1, and the report names each
server."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.integration.rotateworld import World, connection

pytestmark = pytest.mark.cloud


def test_parallel_deploy_one_server_fails_the_others_finish(tmp_path, admin_conn):
    unique = f"t-{uuid.uuid4().hex[:8]}"
    conn = connection()
    # private to the demo project, so that nothing else sees it; no host has a 700 TB disk (the
    # fake one has 600 TB) and Nova has no quota on it: Nova accepts the create, the scheduler
    # fails it
    flavor = admin_conn.compute.create_flavor(name=f"{unique}-huge", ram=512, vcpus=1,
                                              disk=700_000, is_public=False)
    admin_conn.compute.flavor_add_tenant_access(flavor, conn.current_project_id)
    w = World(conn=conn, root=tmp_path, env=unique, secgroup=f"{unique}-sg")
    good, bad = [f"{unique}-a", f"{unique}-c"], f"{unique}-b"
    w.servers[good[0]] = {"volumes": [f"{unique}-data"]}
    w.servers[bad] = {"flavor": flavor.name}
    w.servers[good[1]] = {}
    try:
        w.make_volumes([f"{unique}-data"])
        w.write()
        run = w.run("deploy", "--parallel", "3", "--json")
        assert run.returncode == 1, run.stderr
        out = json.loads(run.stdout)
        outcome = {s["name"]: s for s in out["servers"]}
        assert outcome[good[0]]["outcome"] == outcome[good[1]]["outcome"] == "done"
        assert outcome[bad]["outcome"] == "failed"
        assert outcome[bad]["failed_step"] == "create-instance"
        assert all(outcome[n]["changed"] for n in (*good, bad))  # b's server exists, in ERROR
        assert "1 of 3 servers failed" in out["error"] and "ERROR" in out["error"]
        for name in (*good, bad):
            assert name in out["error"]  # the report names each server
        # each server's lines are labelled with its name
        assert f"[{bad}] " in run.stderr and f"[{good[0]}] " in run.stderr
        for name in good:
            w.assert_serving(name, gen=1)
        [failed] = w.managed(bad)
        assert failed.status == "ERROR"
    finally:
        w.cleanup()
        admin_conn.compute.delete_flavor(flavor, ignore_missing=True)
