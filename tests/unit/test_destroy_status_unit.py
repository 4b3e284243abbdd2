"""destroy and status against the in-memory fake cloud. destroy tests check what the cloud holds
at the end (servers, volume attachments, floating IPs, the lock); status tests check what it
reports, and that it changes nothing.

Only the public entry points are called (``destroy``, ``status``); servers are built by hand
with the metadata ivc gives them.
"""

from __future__ import annotations

import hashlib

import pytest
from declared import DEFAULTS, WEB1
from fakecloud import WALL_NOW, http_error, ticking_cloud

from ivc_tasks.errors import ConfigError, Locked
from ivc_tasks.steps.destroy import destroy
from ivc_tasks.steps.status import status

ENV = "test"
LOCK = f"ivc-lock-{ENV}-web1"
VOLUMES = ("web1-data", "web1-logs")  # the fake cloud holds them (conftest's conn)
SPEC = DEFAULTS + WEB1 + """
[servers.web2]
networks = ["private"]
floating_ip = false
"""


# the fixtures spec and conn are conftest's
def new_cloud(conn):
    return ticking_cloud(conn, ENV)


def tags(spec, name="web1", gen=1, **extra):
    declared = spec.servers.get(name)
    userdata = declared.userdata if declared is not None else b""
    return {"ivc_managed": "1", "ivc_env": ENV, "ivc_name": name, "ivc_run": "earlier",
            "ivc_gen": str(gen), "ivc_userdata": hashlib.sha256(userdata).hexdigest()[:16],
            **extra}


def deployed(conn, spec, *, status="ACTIVE", fip_description=f"ivc:{ENV}:web1", **server):
    """web1 as a deploy leaves it: both volumes attached, a floating IP on its port."""
    meta = tags(spec, **{f"ivc_vol:{v.name}": v.id for v in conn.volumes})
    web1 = conn.add_server("web1", metadata=meta, networks=server.pop("networks", ["net-priv"]),
                           status=status, **server)
    for volume in conn.volumes:
        conn._attach(volume.id, web1.id)
    fip = None
    if fip_description is not None:
        fip = conn.add_fip(conn.ports_of(web1.id)[0].id, description=fip_description)
    return web1, fip


def assert_volumes_kept(conn):
    for volume in conn.volumes:
        assert volume.status == "available" and volume.attachments == [], volume


# -- destroy -----------------------------------------------------------------------------------
def test_destroy_detaches_the_volumes_releases_ivcs_floating_ip_and_deletes(conn, spec):
    web1, fip = deployed(conn, spec)
    result = destroy(new_cloud(conn), spec, "web1")
    assert conn.servers == [] and conn.deleted == [web1.id]
    assert_volumes_kept(conn)
    assert conn.fips == []  # released
    assert conn.ports == [] and LOCK not in {k.name for k in conn.keys}
    assert sorted(result.info["volumes_kept"]) == sorted(v.id for v in conn.volumes)
    assert result.changed
    assert sorted((a.verb, a.kind) for a in result.actions) == [
        ("delete", "floating_ip"), ("delete", "server"), ("detach", "volume"),
        ("detach", "volume")]
    order = conn.mutations()
    assert order[0] == "compute.create_keypair" and order[-1] == "compute.delete_keypair"
    assert order.index("compute.delete_volume_attachment") < order.index("compute.delete_server")
    assert order.count("network.delete_ip") == 1 and conn.count("network.update_ip") == 0


def test_destroy_only_disassociates_a_floating_ip_ivc_did_not_allocate(conn, spec):
    web1, fip = deployed(conn, spec, fip_description="reserved by the network team")
    result = destroy(new_cloud(conn), spec, "web1")
    assert conn.fips == [fip] and fip.port_id is None
    assert conn.count("network.delete_ip") == 0
    assert any(a.verb == "disassociate" and "not allocated by ivc" in a.summary
               for a in result.actions)
    assert conn.servers == [] and conn.deleted == [web1.id]
    assert_volumes_kept(conn)


def test_destroy_keep_floating_ip_disassociates_ivcs_own(conn, spec):
    web1, fip = deployed(conn, spec)
    destroy(new_cloud(conn), spec, "web1", keep_floating_ip=True)
    assert conn.fips == [fip] and fip.port_id is None
    assert conn.count("network.delete_ip") == 0 and conn.count("network.update_ip") == 1
    assert conn.servers == [] and conn.deleted == [web1.id]
    assert_volumes_kept(conn)


def test_destroy_releases_a_spare_floating_ip_ivc_allocated_for_the_server(conn, spec):
    web1, fip = deployed(conn, spec)
    spare = conn.add_fip(None, description=f"ivc:{ENV}:web1")
    other = conn.add_fip(None, description=f"ivc:{ENV}:web2")
    destroy(new_cloud(conn), spec, "web1")
    assert conn.fips == [other]
    assert {c[1][0].id for c in conn.calls if c[0] == "network.delete_ip"} == {fip.id, spare.id}


def test_destroy_of_a_server_in_error_deletes_it_which_frees_the_volumes(conn, spec):
    web1, fip = deployed(conn, spec, status="ERROR")
    conn.volume_polls = 2  # the volumes detach after the server is gone, slowly
    result = destroy(new_cloud(conn), spec, "web1")
    assert conn.count("compute.delete_volume_attachment") == 0  # Nova would refuse (409)
    assert conn.servers == [] and conn.deleted == [web1.id]
    assert_volumes_kept(conn)
    assert conn.fips == []
    assert sorted(result.info["volumes_kept"]) == sorted(v.id for v in conn.volumes)


def test_destroy_of_a_missing_server_is_not_an_error(conn, spec):
    result = destroy(new_cloud(conn), spec, "web1")
    assert not result.changed and result.actions == []
    assert conn.mutations() == []
    assert all(v.status == "available" for v in conn.volumes)


def test_destroy_of_an_unknown_name_is_a_config_error(conn, spec):
    with pytest.raises(ConfigError) as info:
        destroy(new_cloud(conn), spec, "web9")
    assert str(info.value) == (f"{spec.path}: --name 'web9': no such declared server, and no "
                               "server of that name made by ivc in environment 'test'")
    assert info.value.exit_code == 2 and conn.mutations() == []


def test_destroy_of_an_undeclared_server_ivc_made_deletes_it(conn, spec):
    old = conn.add_server("legacy", metadata=tags(spec, "legacy"), networks=["net-priv"])
    destroy(new_cloud(conn), spec, "legacy")
    assert conn.servers == [] and conn.deleted == [old.id]


def test_destroy_dry_run_changes_nothing(conn, spec):
    web1, fip = deployed(conn, spec)
    result = destroy(new_cloud(conn), spec, "web1", dry_run=True)
    assert conn.mutations() == []
    assert [s.id for s in conn.servers] == [web1.id] and web1.status == "ACTIVE"
    assert all(conn.holders(v) == [web1.id] for v in conn.volumes)
    assert conn.fips == [fip] and fip.port_id == conn.ports_of(web1.id)[0].id
    assert result.dry_run and not result.changed
    assert sorted((a.verb, a.kind) for a in result.actions) == [
        ("delete", "floating_ip"), ("delete", "server"), ("detach", "volume"),
        ("detach", "volume")]


def test_destroy_deletes_every_server_a_half_done_rotation_left(conn, spec):
    web1, fip = deployed(conn, spec)
    new = conn.add_server("web1", networks=["net-priv"], metadata=tags(
        spec, gen=2, ivc_rotation="rot-1", ivc_role="new", ivc_replaces=web1.id))
    destroy(new_cloud(conn), spec, "web1")
    assert conn.servers == [] and sorted(conn.deleted) == sorted([web1.id, new.id])
    assert_volumes_kept(conn)
    assert conn.fips == []


def test_destroy_of_a_server_locked_by_another_run_is_exit_4(conn, spec):
    web1, fip = deployed(conn, spec)
    conn.add_lock(LOCK, f"ssh-ed25519 AAAAx ivc-lock op=rotate run=other1 host=ci-runner-9 "
                        f"pid=4242 start={int(WALL_NOW)} ttl=3600")
    with pytest.raises(Locked) as info:
        destroy(new_cloud(conn), spec, "web1")
    assert info.value.exit_code == 4
    assert conn.mutations() == ["compute.create_keypair"]
    assert [s.id for s in conn.servers] == [web1.id]
    assert all(conn.holders(v) == [web1.id] for v in conn.volumes)


def test_destroy_waits_out_a_detach_whose_response_was_lost(conn, spec):
    web1, fip = deployed(conn, spec)
    conn.fail_next("compute.delete_volume_attachment", http_error(504, "gateway timeout"),
                   after=True)
    destroy(new_cloud(conn), spec, "web1")
    assert conn.count("compute.delete_volume_attachment") == 2  # one per volume, none re-sent
    assert conn.servers == [] and conn.deleted == [web1.id]
    assert_volumes_kept(conn)


# -- status ------------------------------------------------------------------------------------
def by_name(result):
    return {s.name: s for s in result.servers}


def test_status_of_a_server_as_declared_shows_no_drift_and_changes_nothing(conn, spec):
    web1, fip = deployed(conn, spec)
    result = status(new_cloud(conn), spec)
    item = by_name(result)["web1"]
    assert item.id == web1.id and item.status == "ACTIVE" and item.generation == 1
    assert item.drift == [] and not item.rotate_due
    assert item.floating_ips == [fip.floating_ip_address]
    assert sorted(v["name"] for v in item.volumes) == ["web1-data", "web1-logs"]
    assert item.image == {"id": "img-1", "name": "ivc-tiny"} and item.flavor == "m1.tiny"
    assert item.rotation is None and item.lock is None and item.declared
    assert conn.mutations() == [] and conn.count("compute.get_server") == 0
    assert conn.requests <= 8, conn.calls  # listings only (Neutron's ports and floating IPs too)
    web2 = by_name(result)["web2"]
    assert web2.id is None and web2.status == "missing" and web2.rotate_due
    assert web2.line() == "web2: no server (rotate or create-instance makes it)"
    assert item.line() == (f"web1: {web1.id} gen 1 ACTIVE; 10.0.0.10, {fip.floating_ip_address}; "
                           "web1-data, web1-logs; image ivc-tiny, flavor m1.tiny")
    assert result.to_dict()["rotate_due"] == ["web2"]


@pytest.mark.parametrize(("change", "field", "due"), [
    ({"image": "img-2"}, "image", True),
    ({"flavor": "m1.small"}, "flavor", True),
    ({"userdata": "0123456789abcdef"}, "userdata", True),
    ({"networks": ["net-priv", "net-pub"]}, "networks", True),
    ({"detach": "web1-logs"}, "volumes", False),
    ({"no_fip": True}, "floating_ip", False),
])
def test_status_reports_drift(conn, spec, change, field, due):
    server = {k: v for k, v in change.items() if k in ("image", "flavor", "networks")}
    web1, fip = deployed(conn, spec, fip_description=None if "no_fip" in change else
                         f"ivc:{ENV}:web1", **server)
    if "userdata" in change:
        web1.metadata["ivc_userdata"] = change["userdata"]
    if "detach" in change:
        logs = next(v for v in conn.volumes if v.name == change["detach"])
        logs.status, logs.attachments = "available", []
        web1.attached_volumes.remove({"id": logs.id})
    item = by_name(status(new_cloud(conn), spec, ["web1"]))["web1"]
    assert [d["field"] for d in item.drift] == [field], item.drift
    assert item.rotate_due is due
    assert "differs: " + field in item.line()
    assert conn.mutations() == []


def test_status_drift_names_what_differs(conn, spec):
    web1, fip = deployed(conn, spec, image="img-2", flavor="m1.small")
    item = by_name(status(new_cloud(conn), spec, ["web1"]))["web1"]
    drift = {d["field"]: (d["declared"], d["actual"]) for d in item.drift}
    assert drift == {"image": ("ivc-tiny", "ivc-tiny-2"), "flavor": ("m1.tiny", "m1.small")}


def test_status_shows_a_rotation_under_way_and_the_lock(conn, spec):
    web1, fip = deployed(conn, spec)
    new = conn.add_server("web1", networks=["net-priv"], metadata=tags(
        spec, gen=2, ivc_rotation="rot-1", ivc_role="new", ivc_replaces=web1.id))
    conn.add_lock(LOCK, f"ssh-ed25519 AAAAx ivc-lock op=rotate run=other1 host=ci-runner-9 "
                        f"pid=4242 start={int(WALL_NOW) - 90} ttl=3600")
    result = status(new_cloud(conn), spec, ["web1"])
    items = [s for s in result.servers if s.name == "web1"]
    assert [s.id for s in items] == [new.id, web1.id]  # newest generation first
    assert items[0].rotation == {"id": "rot-1", "role": "new"} and items[1].rotation is None
    assert all(s.lock.startswith("locked by rotate run other1 on host ci-runner-9")
               for s in items)
    assert items[0].lock == ("locked by rotate run other1 on host ci-runner-9, pid 4242, "
                             "started 90 s ago")   # on the run's wall clock (the fake's)
    assert "rotation rot-1 under way (new)" in items[0].line()
    assert conn.mutations() == []


def test_status_shows_an_undeclared_server(conn, spec):
    legacy = conn.add_server("legacy", metadata=tags(spec, "legacy"), networks=["net-priv"])
    conn.add_server("unmanaged", networks=["net-priv"])
    conn.add_server("elsewhere", metadata={**tags(spec, "legacy"), "ivc_env": "prod"})
    result = status(new_cloud(conn), spec)
    items = by_name(result)
    assert set(items) == {"web1", "web2", "legacy"}
    assert items["legacy"].id == legacy.id and not items["legacy"].declared
    assert items["legacy"].drift == []
    assert items["legacy"].line() == (f"legacy: {legacy.id} gen 1 ACTIVE; 10.0.0.10; no volumes; "
                                      "image ivc-tiny, flavor m1.tiny; NOT DECLARED")
    assert "legacy" not in result.to_dict()["rotate_due"]


def test_status_reads_the_floating_ip_from_neutron_not_novas_lagging_cache(conn, spec):
    web1, fip = deployed(conn, spec)
    conn._addresses = lambda ports: {"private": [  # Nova's cache before Neutron's notification
        {"addr": p.fixed_ips[0]["ip_address"], "OS-EXT-IPS:type": "fixed"} for p in ports]}
    cloud = new_cloud(conn)
    item = by_name(status(cloud, spec))["web1"]
    assert item.floating_ips == [fip.floating_ip_address] and item.drift == []
    assert fip.floating_ip_address in item.addresses["private"]
    assert conn.count("network.ports") == 1 and conn.count("network.ips") == 1


def test_status_lists_ports_and_floating_ips_once_however_many_servers(conn, spec):
    deployed(conn, spec)
    for i in range(5):
        conn.add_server(f"extra{i}", metadata=tags(spec, "web2", gen=i + 1),
                        networks=["net-priv"])
    status(new_cloud(conn), spec)
    assert conn.count("network.ports") == 1 and conn.count("network.ips") == 1
    assert conn.count("compute.get_server") == 0
