"""The ops steps against an in-memory fake connection: what they call, in which order, and what
they refuse before changing anything."""

import base64
import json

import pytest
from declared import DEFAULTS
from fakecloud import http_error, ticking_cloud

from ivc_tasks.errors import CloudError, ConfigError
from ivc_tasks.resources.servers import managed_servers, volume_key
from ivc_tasks.steps.deploy import DeployFailed, deploy
from ivc_tasks.steps.instances import create_instance
from ivc_tasks.steps.secgroups import ensure_secgroups
from ivc_tasks.steps.volumes import attach_volume
from ivc_tasks.userdata import userdata_sha256

SPEC = DEFAULTS + """
[secgroups.web]
description = "web"
rules = [
  { protocol = "tcp", ports = "22", remote_ip_prefix = "0.0.0.0/0" },
  { protocol = "tcp", ports = "80" },
  { protocol = "icmp" },
  { protocol = "tcp", ports = "8000-8100", remote_group = "web" },
]

[servers.app]
networks = ["private"]
security_groups = ["web"]
volumes = ["data"]

[servers.edge]
networks = ["public"]
floating_ip = false
"""


# the fixtures spec_of, conn and public_key are conftest's
@pytest.fixture
def cloud(conn):
    return new_cloud(conn)


def new_cloud(conn, **settings):
    """A fresh run (new run id, empty cache) on the same fake cloud."""
    return ticking_cloud(conn, "test")


# -- ensure-secgroups ------------------------------------------------------------------------
def test_secgroups_first_run_creates_the_group_then_all_rules_in_one_post(conn, cloud, spec_of):
    result = ensure_secgroups(cloud, spec_of())
    assert result.changed
    assert conn.mutations() == ["network.create_security_group", "network.add_tag",
                                "network.create_security_group_rules"]
    assert conn.groups[0].tags == ["ivc:test"]
    (_, (bodies,), _), = [c for c in conn.calls if c[0] == "network.create_security_group_rules"]
    group = conn.groups[0]
    assert len(bodies) == 4 and {b["security_group_id"] for b in bodies} == {group.id}
    assert {b["description"] for b in bodies} == {"ivc:test"}  # the environment's marker
    assert [b for b in bodies if b.get("remote_group_id")][0]["remote_group_id"] == group.id
    assert [a.verb for a in result.actions] == ["create", "tag"] + ["create"] * 4
    assert result.warnings == []  # the default egress rules are part of the group


def test_secgroups_of_two_groups_post_one_bulk_request_per_group(conn, cloud, spec_of):
    two = SPEC.replace("[servers.app]", """[secgroups.db]
description = "db"
rules = [ { protocol = "tcp", ports = "5432", remote_group = "web" } ]

[servers.app]""")
    result = ensure_secgroups(cloud, spec_of(two))
    posts = [c[1][0] for c in conn.calls if c[0] == "network.create_security_group_rules"]
    assert [len(p) for p in posts] == [4, 1]
    assert all(len({b["security_group_id"] for b in p}) == 1 for p in posts)
    assert result.changed and len(result.actions) == 9  # 2 groups, 2 tags, 5 rules
    conn.calls.clear()
    assert not ensure_secgroups(new_cloud(conn), spec_of(two)).changed


def test_secgroups_rerun_lists_once_and_changes_nothing(conn, cloud, spec_of):
    ensure_secgroups(cloud, spec_of())
    conn.calls.clear()
    result = ensure_secgroups(new_cloud(conn), spec_of())
    assert not result.changed and result.actions == []
    assert [c[0] for c in conn.calls] == ["network.security_groups"]


def test_secgroups_prune_deletes_only_this_environments_undeclared_rules(conn, cloud, spec_of):
    ensure_secgroups(cloud, spec_of())
    group = conn.groups[0]
    for port, description in ((7001, "ivc:test old"), (7002, "ivc:other"), (7003, "by hand")):
        conn.network_create_security_group_rules([{
            "security_group_id": group.id, "direction": "ingress", "ethertype": "IPv4",
            "protocol": "tcp", "port_range_min": port, "port_range_max": port,
            "description": description}])
    kept = ensure_secgroups(new_cloud(conn), spec_of())
    assert kept.warnings == [  # nothing of 7002 (another environment's) nor of the egress
        "security group web: 1 undeclared rule(s) kept (ingress IPv4 tcp 7001 (old)); --prune "
        "deletes them (made in environment test)",
        "security group web: 1 rule(s) that no ivc environment made kept (ingress IPv4 tcp 7003 "
        "(by hand)); --prune leaves them: declare them, or delete them by hand"]
    result = ensure_secgroups(new_cloud(conn), spec_of(), prune=True)
    assert [(a.verb, a.summary) for a in result.actions] == [
        ("delete", "ingress IPv4 tcp 7001 (old)")]  # the description without the marker
    assert conn.count("network.delete_security_group_rule") == 1
    left = {(r["direction"], r["port_range_min"]) for r in group.security_group_rules}
    assert {("egress", None), ("ingress", 7002), ("ingress", 7003)} <= left


def test_secgroups_dry_run_changes_nothing(conn, cloud, spec_of):
    result = ensure_secgroups(cloud, spec_of(), dry_run=True)
    assert not result.changed and len(result.actions) == 6  # group, tag, 4 rules
    assert conn.mutations() == []


def test_secgroups_a_rule_that_appeared_meanwhile_counts_as_done(conn, cloud, spec_of):
    spec = spec_of()
    ensure_secgroups(cloud, spec, dry_run=True)
    group = conn.network_create_security_group("web", "web")
    conn.calls.clear()

    def sneak_in_then_conflict():
        conn.network_create_security_group_rules([{
            "security_group_id": group.id, "direction": "ingress", "ethertype": "IPv4",
            "protocol": "icmp"}])
        raise http_error(409, "Security group rule already exists. Rule id is x.")

    conn.failures["network.create_security_group_rules"] = []
    original = conn.network_create_security_group_rules
    state = {"first": True}

    def create_rules(data):
        if state.pop("first", False):
            sneak_in_then_conflict()
        return original(data)

    conn.network_create_security_group_rules = create_rules
    result = ensure_secgroups(new_cloud(conn), spec)
    posts = [c[1][0] for c in conn.calls if c[0] == "network.create_security_group_rules"]
    assert [len(p) for p in posts] == [4, 3]  # the second POST leaves out the rule that appeared
    ingress = [r for r in group.security_group_rules if r["direction"] == "ingress"]
    assert len(ingress) == 4
    assert result.changed


def test_secgroups_bulk_post_lost_response_is_not_resent(conn, cloud, spec_of):
    conn.fail_next("network.create_security_group_rules", http_error(504, "gateway timeout"),
                   after=True)
    ensure_secgroups(cloud, spec_of())
    assert conn.count("network.create_security_group_rules") == 1
    ingress = [r for r in conn.groups[0].security_group_rules if r["direction"] == "ingress"]
    assert len(ingress) == 4


def test_secgroups_refuse_unknown_and_ambiguous_names(conn, cloud, spec_of):
    spec = spec_of()
    with pytest.raises(ConfigError) as info:
        ensure_secgroups(cloud, spec, ["wbe"])
    assert str(info.value) == (f"{spec.path}: --name 'wbe': not a declared security group "
                               "(secgroups.wbe); did you mean 'web'?")
    one = conn.network_create_security_group("web")
    two = conn.network_create_security_group("web")
    with pytest.raises(ConfigError) as info:
        ensure_secgroups(new_cloud(conn), spec)
    assert str(info.value) == (
        f"{spec.path}: secgroups.web: 2 security groups of the project are named 'web' (ids "
        f"{one.id}, {two.id}); delete or rename the extra ones, ivc cannot tell which one is meant")
    assert conn.mutations() == []


def test_secgroups_refuse_a_remote_group_that_is_neither_there_nor_ensured(conn, cloud, spec_of):
    spec = spec_of(SPEC + '\n[secgroups.db]\nrules = [ { protocol = "tcp", ports = "5432", '
                   'remote_group = "web" } ]\n')
    with pytest.raises(ConfigError) as info:
        ensure_secgroups(cloud, spec, ["db"])
    assert str(info.value) == (
        f"{spec.path}: secgroups.db.rules[0].remote_group: group 'web' does not exist in the "
        "cloud yet; ensure it in the same run (add --name web, or run ensure-secgroups without "
        "--name)")
    assert conn.mutations() == []


# -- create-instance ---------------------------------------------------------------------------
def test_create_instance_tags_the_server_and_sets_config_drive_and_user_data(conn, cloud, spec_of):
    spec = spec_of()
    ensure_secgroups(cloud, spec)
    data = conn.add_volume("data")
    result = create_instance(cloud, spec, "app")
    server = conn.servers[0]
    body = server.body
    meta = body["metadata"]
    assert meta["ivc_managed"] == "1" and meta["ivc_env"] == "test" and meta["ivc_name"] == "app"
    assert meta["ivc_run"] == cloud.run_id and meta["ivc_gen"] == "1"
    assert meta["ivc_userdata"] == userdata_sha256(spec.servers["app"].userdata)[:16]
    assert meta[volume_key("data")] == data.id
    assert body["config_drive"] is True
    assert base64.b64decode(body["user_data"]) == spec.servers["app"].userdata
    assert body["security_groups"] == [{"name": conn.groups[0].id}]
    assert body["image_id"] == "img-1" and body["flavor_id"] == "fl-1"
    assert body["networks"] == [{"uuid": "net-priv"}] and body["key_name"] == "ivc-demo"
    volumes = [b for b in body["block_device_mapping"] if b["source_type"] == "volume"]
    assert volumes == [{"boot_index": -1, "uuid": data.id, "source_type": "volume",
                        "destination_type": "volume", "delete_on_termination": False}]
    assert result.changed and result.info["status"] == "ACTIVE"
    shown = json.dumps(result.to_dict())
    assert body["user_data"] not in shown and "hostname: app" not in shown
    request = [a for a in result.to_dict()["actions"] if a["kind"] == "server"][0]["request"]
    assert request["user_data"] == {"sha256": userdata_sha256(spec.servers["app"].userdata),
                                    "bytes": len(spec.servers["app"].userdata)}


def test_create_instance_on_an_external_network_gets_no_config_drive(conn, cloud, spec_of):
    create_instance(cloud, spec_of(), "edge")
    assert conn.servers[0].body["config_drive"] is False


def test_create_instance_rerun_changes_nothing(conn, cloud, spec_of):
    spec = spec_of()
    create_instance(cloud, spec, "edge")
    conn.calls.clear()
    result = create_instance(new_cloud(conn), spec, "edge")
    assert not result.changed and [c[0] for c in conn.calls] == ["compute.servers"]


def test_create_instance_finds_its_server_by_metadata_not_by_name(conn, cloud, spec_of):
    # (a server of that name that ivc did not make stops it: test_unmanaged_unit.py)
    conn.add_server("edge", metadata={"ivc_managed": "1", "ivc_env": "other", "ivc_name": "edge"})
    create_instance(cloud, spec_of(), "edge")
    assert conn.count("compute.create_server") == 1
    assert [s.id for s in managed_servers(new_cloud(conn), "edge")] == [conn.servers[-1].id]


def test_a_lost_create_response_is_found_by_run_id_not_resent(conn, cloud, spec_of):
    conn.fail_next("compute.create_server", http_error(502, "proxy error"), after=True)
    result = create_instance(cloud, spec_of(), "edge")
    assert conn.count("compute.create_server") == 1
    assert len(conn.servers) == 1 and result.info["id"] == conn.servers[0].id


def test_a_create_refused_by_a_transient_error_is_resent(conn, cloud, spec_of):
    conn.fail_next("compute.create_server", http_error(503, "try later"))
    create_instance(cloud, spec_of(), "edge")
    assert conn.count("compute.create_server") == 2 and len(conn.servers) == 1


def test_a_server_still_building_is_waited_for_not_recreated(conn, cloud, spec_of):
    server = conn.add_server("edge", status="BUILD",
                             metadata={"ivc_managed": "1", "ivc_env": "test", "ivc_name": "edge"})
    conn.boot_polls = 3
    result = create_instance(cloud, spec_of(), "edge")
    assert conn.count("compute.get_server") == 3 and conn.mutations() == []
    assert not result.changed and result.info["status"] == "ACTIVE" and server.status == "ACTIVE"


def test_a_server_in_error_is_a_cloud_error_that_mentions_rotate(conn, cloud, spec_of):
    server = conn.add_server("edge", status="ERROR",
                             metadata={"ivc_managed": "1", "ivc_env": "test", "ivc_name": "edge"})
    server.fault = {"message": "No valid host was found."}
    with pytest.raises(CloudError) as info:
        create_instance(cloud, spec_of(), "edge")
    assert info.value.exit_code == 1
    assert str(info.value) == (f"server edge ({server.id}) is in ERROR: No valid host was found.; "
                               "`invoke rotate --name edge` will replace it")
    assert conn.mutations() == []


def test_a_boot_that_ends_in_error_reports_the_fault(conn, cloud, spec_of):
    original = conn.compute_get_server

    def get_server(server_id):
        server = original(server_id)
        server.status, server.fault = "ERROR", {"message": "Build of instance aborted"}
        return server

    conn.compute_get_server = get_server
    with pytest.raises(CloudError) as info:
        create_instance(cloud, spec_of(), "edge")
    (server,) = conn.servers
    assert str(info.value) == (f"server edge: went to ERROR: Build of instance aborted (server "
                               f"{server.id}); `invoke rotate --name edge` will replace it")


@pytest.mark.parametrize(("change", "message"), [
    (('image = "ivc-tiny"', 'image = "ivc-tnyi"'),
     "servers.app.image: no image named 'ivc-tnyi' in the cloud; create the image first"),
    (('flavor = "m1.tiny"', 'flavor = "m9.huge"'),
     "servers.app.flavor: no flavor named 'm9.huge' in the cloud; available: m1.small, m1.tiny"),
    (('networks = ["private"]', 'networks = ["privat"]'),
     "servers.app.networks[0]: no network named 'privat' in the cloud; did you mean 'private'?"),
    (('keypair = "ivc-demo"', 'keypair = "nokey"'),
     "servers.app.keypair: no keypair named 'nokey' in the cloud; create it, or declare it under "
     "[keypairs] with a public_key_file"),
    (('volumes = ["data"]', 'volumes = ["nodata"]'),
     "servers.app.volumes[0]: no volume named 'nodata' in the cloud; did you mean 'data'?"),
    (('security_groups = ["web"]', 'security_groups = ["web", "ghost"]'),
     "servers.app.security_groups[1]: no security group named 'ghost' in the project; declare it "
     "under [secgroups] or create it"),
])
def test_create_instance_refuses_unknown_references_before_any_change(conn, cloud, spec_of,
                                                                      change, message):
    conn.add_volume("data")
    spec = spec_of()
    ensure_secgroups(cloud, spec)
    conn.calls.clear()
    with pytest.raises(ConfigError) as info:
        create_instance(new_cloud(conn), spec_of(SPEC.replace(*change)), "app")
    assert str(info.value) == f"{spec.path}: {message}"
    assert conn.mutations() == []


def test_create_instance_refuses_a_volume_attached_elsewhere_naming_the_server(conn, cloud,
                                                                              spec_of):
    other = conn.add_server("db1")
    conn.add_volume("data", server_id=other.id)
    spec = spec_of()
    ensure_secgroups(cloud, spec)
    conn.calls.clear()
    with pytest.raises(ConfigError, match=f"attached to server 'db1' \\({other.id}\\)"):
        create_instance(new_cloud(conn), spec, "app")
    assert conn.mutations() == []


def test_create_instance_refuses_ambiguous_names(conn, cloud, spec_of):
    conn.flavors.append(type(conn.flavors[0])(id="fl-9", name="m1.tiny"))
    spec = spec_of()
    with pytest.raises(ConfigError) as info:
        create_instance(cloud, spec, "edge")
    assert str(info.value) == (f"{spec.path}: servers.edge.flavor: 2 flavors are named 'm1.tiny' "
                               "(ids fl-1, fl-9); use the id of the one you mean, or rename the "
                               "others")


def test_a_declared_keypair_is_created_once_and_a_different_key_is_refused(conn, cloud, spec_of,
                                                                           public_key):
    text = SPEC.replace('keypair = "ivc-demo"', 'keypair = "mine"') + \
        '\n[keypairs.mine]\npublic_key_file = "key.pub"\n'
    create_instance(cloud, spec_of(text), "edge")
    assert conn.mutations(locks=False) == ["compute.create_keypair", "compute.create_server"]
    assert conn.keys[-1].public_key == public_key
    conn.keys[-1].public_key = "ssh-ed25519 AAAAother x@y"
    conn.servers.clear()
    conn.calls.clear()
    spec = spec_of(text)
    with pytest.raises(ConfigError) as info:
        create_instance(new_cloud(conn), spec, "edge")
    assert str(info.value) == (
        f"{spec.path}: keypairs.mine: the cloud's keypair 'mine' holds a different public key "
        f"than {spec.path.parent}/key.pub; delete it in the cloud (openstack keypair delete) or "
        "give the declared one another name")
    assert conn.mutations() == []


def test_floating_ip_is_created_on_the_port_then_reused(conn, cloud, spec_of):
    text = SPEC.replace('networks = ["public"]\nfloating_ip = false',
                        'networks = ["private"]\nfloating_ip = true')
    result = create_instance(cloud, spec_of(text), "edge")
    (fip,) = conn.fips
    assert fip.port_id == conn.ports[0].id and fip.description == "ivc:test:edge"
    assert fip.floating_network_id == "net-pub"
    assert [a.kind for a in result.actions] == ["server", "floating_ip"]
    conn.calls.clear()
    again = create_instance(new_cloud(conn), spec_of(text), "edge")
    assert not again.changed and conn.mutations() == []


def test_a_spare_floating_ip_of_the_server_is_associated_not_created(conn, cloud, spec_of):
    text = SPEC.replace('networks = ["public"]\nfloating_ip = false',
                        'networks = ["private"]\nfloating_ip = true')
    spare = conn.network_create_ip("net-pub", None, "ivc:test:edge")
    result = create_instance(cloud, spec_of(text), "edge")
    assert conn.count("network.create_ip") == 0 and conn.count("network.update_ip") == 1
    assert spare.port_id == conn.ports[0].id and result.actions[-1].verb == "associate"


def test_floating_ip_needs_one_external_network(conn, cloud, spec_of):
    text = SPEC.replace('networks = ["public"]\nfloating_ip = false',
                        'networks = ["private"]\nfloating_ip = true')
    conn.networks.append(type(conn.networks[0])(id="net-pub2", name="public2",
                                                is_router_external=True))
    spec = spec_of(text)
    with pytest.raises(ConfigError) as info:
        create_instance(cloud, spec, "edge")
    assert str(info.value) == (
        f"{spec.path}: servers.edge.floating_ip: several external networks (public, public2) and "
        "no router of the server's networks reaches one of them; set IVC_FLOATING_NETWORK in the "
        "env file to the one to use")
    cloud2 = ticking_cloud(conn, "test", floating_network="public2")
    create_instance(cloud2, spec_of(text), "edge")
    assert conn.fips[0].floating_network_id == "net-pub2"


# -- attach-volume -----------------------------------------------------------------------------
def make_existing_app(conn):
    return conn.add_server("app", metadata={"ivc_managed": "1", "ivc_env": "test",
                                            "ivc_name": "app", "ivc_gen": "1"})


def test_attach_volume_attaches_waits_and_records(conn, cloud, spec_of):
    server = make_existing_app(conn)
    data = conn.add_volume("data")
    result = attach_volume(cloud, spec_of(), "app")
    assert conn.mutations() == ["compute.create_volume_attachment", "compute.set_server_metadata"]
    assert server.metadata[volume_key("data")] == data.id
    assert [a.verb for a in result.actions] == ["attach"]
    conn.calls.clear()
    again = attach_volume(new_cloud(conn), spec_of(), "app")
    assert not again.changed and [c[0] for c in conn.calls] == ["compute.servers"]


def test_attach_volume_refuses_a_volume_attached_elsewhere_and_touches_nothing(conn, cloud,
                                                                              spec_of):
    make_existing_app(conn)
    other = conn.add_server("db1")
    conn.add_volume("data", server_id=other.id)
    with pytest.raises(ConfigError) as caught:
        attach_volume(cloud, spec_of(), "app")
    data = conn.volumes[-1]
    assert str(caught.value).endswith(
        f"servers.app.volumes[0]: volume 'data' ({data.id}) is attached to server 'db1' "
        f"({other.id}), not to app; detach it there first (ivc never moves a volume "
        "implicitly)")
    assert conn.mutations() == []


def test_attach_volume_checks_every_volume_before_attaching_any(conn, cloud, spec_of):
    text = SPEC.replace('volumes = ["data"]', 'volumes = ["data", "logs"]')
    make_existing_app(conn)
    conn.add_volume("data")
    other = conn.add_server("db1")
    conn.add_volume("logs", server_id=other.id)
    with pytest.raises(ConfigError, match="'logs'"):
        attach_volume(cloud, spec_of(text), "app")
    assert conn.mutations() == []


@pytest.mark.parametrize(("volumes", "message"), [
    (["logs"], "--volume 'logs': not a volume of servers.app.volumes; declared: data"),
])
def test_attach_volume_refuses_undeclared_volumes(conn, cloud, spec_of, volumes, message):
    make_existing_app(conn)
    spec = spec_of()
    with pytest.raises(ConfigError) as info:
        attach_volume(cloud, spec, "app", volumes)
    assert str(info.value) == f"{spec.path}: {message}"


def test_attach_volume_accepts_a_declared_volume_by_its_id(conn, cloud, spec_of):
    make_existing_app(conn)
    data = conn.add_volume("data")
    result = attach_volume(cloud, spec_of(), "app", [data.id])
    assert [(a.verb, a.name) for a in result.actions] == [("attach", "data")]


def test_attach_volume_refuses_ambiguous_and_missing_volumes_and_servers(conn, cloud, spec_of):
    spec = spec_of()
    with pytest.raises(ConfigError) as info:
        attach_volume(cloud, spec, "app")
    assert str(info.value) == (f"{spec.path}: servers.app: no server made by ivc for 'app' in "
                               "environment 'test'; run `invoke create-instance --name app` first")
    make_existing_app(conn)
    one, two = conn.add_volume("data"), conn.add_volume("data")
    with pytest.raises(ConfigError) as info:
        attach_volume(new_cloud(conn), spec, "app")
    assert str(info.value) == (f"{spec.path}: servers.app.volumes[0]: 2 volumes are named 'data' "
                               f"(ids {one.id}, {two.id}); use the id of the one you mean, or "
                               "rename the others")
    assert conn.mutations() == []


def test_attach_volume_fails_on_error_attaching(conn, cloud, spec_of):
    make_existing_app(conn)
    data = conn.add_volume("data")

    def attach(server_id, volume_id):
        data.status = "error_attaching"

    conn.compute_create_volume_attachment = attach
    with pytest.raises(CloudError, match="volume data: went to error_attaching"):
        attach_volume(cloud, spec_of(), "app")


def test_attach_volume_retries_a_conflict_and_does_not_attach_twice(conn, cloud, spec_of):
    make_existing_app(conn)
    conn.add_volume("data")
    conn.fail_next("compute.create_volume_attachment", http_error(409, "task_state set"))
    conn.fail_next("compute.create_volume_attachment", http_error(504, "lost"), after=True)
    attach_volume(cloud, spec_of(), "app")
    assert conn.count("compute.create_volume_attachment") == 2  # 409 refused; 504 took effect


def test_a_lost_attach_response_while_the_volume_is_attaching_is_waited_for_not_resent(
        conn, cloud, spec_of):
    make_existing_app(conn)
    data = conn.add_volume("data")
    polls = []

    def attach(server_id, volume_id):  # accepted; the volume is still attaching
        data.status = "attaching"
        raise http_error(504, "gateway timeout")  # and the answer is lost

    def get_volume(volume_id):  # the attach completes two GETs after it was sent
        if polls.count("attaching") == 2:
            conn._attach(volume_id, conn.servers[0].id)
        polls.append(data.status)
        return data

    conn.compute_create_volume_attachment = attach
    conn.block_storage_get_volume = get_volume
    attach_volume(cloud, spec_of(), "app")
    assert conn.count("compute.create_volume_attachment") == 1, polls  # not sent again
    assert "attaching" in polls and data.status == "in-use", polls


def test_a_lost_detach_response_while_the_volume_is_detaching_is_waited_for_not_resent(
        conn, cloud):
    from ivc_tasks.resources.attachments import move_volume as ensure_volume_on

    old, new = conn.add_server("old"), conn.add_server("new")
    data = conn.add_volume("data", status="in-use", server_id=old.id)
    statuses = []

    def detach(server, volume_id, ignore_missing=False):  # accepted, the answer is lost
        data.status = "detaching"
        raise http_error(504, "gateway timeout")

    def get_volume(volume_id):  # the detach completes two GETs after it was sent
        if statuses.count("detaching") == 2 and data.status == "detaching":
            data.status, data.attachments = "available", []
        statuses.append(data.status)
        return data

    conn.compute_delete_volume_attachment = detach
    conn.block_storage_get_volume = get_volume
    actions = ensure_volume_on(cloud, data.id, "data", new.id, "new", movable_from=[old.id],
                               timeout=60)
    assert conn.count("compute.delete_volume_attachment") == 1, statuses  # not sent again
    assert [a.verb for a in actions] == ["detach", "attach"]
    assert data.status == "in-use" and data.attachments == [{"server_id": new.id}]


def test_an_attach_refused_while_nova_still_lists_the_old_server_is_tried_again(conn, cloud):
    from ivc_tasks.resources.attachments import move_volume as ensure_volume_on

    old, new = conn.add_server("old"), conn.add_server("new")
    data = conn.add_volume("data", status="in-use", server_id=old.id)

    def detach(server, volume_id, ignore_missing=False):  # Cinder: available at once
        data.status, data.attachments = "available", []

    conn.compute_delete_volume_attachment = detach
    conn.fail_next("compute.create_volume_attachment", http_error(
        400, f"Invalid volume: volume {data.id} is already attached to instances: {old.id}"))
    actions = ensure_volume_on(cloud, data.id, "data", new.id, "new", movable_from=[old.id],
                               timeout=60)
    assert conn.count("compute.create_volume_attachment") == 2
    assert [a.verb for a in actions] == ["detach", "attach"]
    assert data.status == "in-use" and data.attachments == [{"server_id": new.id}]


def test_an_attach_refused_for_a_foreign_server_is_not_tried_again(conn, cloud):
    from ivc_tasks.errors import IvcError
    from ivc_tasks.resources.attachments import move_volume as ensure_volume_on

    new = conn.add_server("new")
    data = conn.add_volume("data")
    conn.fail_next("compute.create_volume_attachment", http_error(
        400, f"Invalid volume: volume {data.id} is already attached to instances: srv-other"))
    with pytest.raises(IvcError, match="already attached"):
        ensure_volume_on(cloud, data.id, "data", new.id, "new", movable_from=[], timeout=60)
    assert conn.count("compute.create_volume_attachment") == 1


# -- deploy ------------------------------------------------------------------------------------
def test_deploy_twice_second_run_changes_nothing(conn, cloud, spec_of):
    conn.add_volume("data")
    first = deploy(cloud, spec_of())
    assert first.changed
    assert [s.step for s in first.steps] == ["ensure-secgroups", "create-instance",
                                            "attach-volume", "check", "create-instance",
                                            "check"]
    assert not first.steps[2].changed  # app's volume went in at boot
    conn.calls.clear()
    second = deploy(new_cloud(conn), spec_of())
    assert not second.changed and conn.mutations() == []
    assert sorted(c[0] for c in conn.calls) == ["compute.servers", "network.security_groups"]


def test_a_steady_deploy_neither_waits_nor_polls(conn, spec_of):
    """What made a steady deploy fast (integration test_steps used to bound its wall time):
    nothing to wait for, so no sleep at all, not even a poll of 0 s, and listings only."""
    conn.add_volume("data")
    deploy(new_cloud(conn), spec_of())
    conn.calls.clear()
    slept = []
    second = deploy(ticking_cloud(conn, "test", sleep=slept.append), spec_of())
    assert not second.changed and slept == []
    assert sorted(c[0] for c in conn.calls) == ["compute.servers", "network.security_groups"]


def test_deploy_validates_everything_before_the_first_change(conn, cloud, spec_of):
    conn.add_volume("data")
    bad = SPEC.replace('[servers.edge]\nnetworks = ["public"]',
                       '[servers.edge]\nflavor = "m9.huge"\nnetworks = ["public"]')
    spec = spec_of(bad)
    with pytest.raises(ConfigError) as info:
        deploy(cloud, spec)
    assert str(info.value) == (f"{spec.path}: servers.edge.flavor: no flavor named 'm9.huge' in "
                               "the cloud; available: m1.small, m1.tiny")
    assert conn.mutations() == []  # not even the security group of the first server


def test_deploy_stops_at_the_first_failure_with_a_summary(conn, cloud, spec_of):
    conn.add_volume("data")
    conn.fail_next("compute.create_server", http_error(400, "Quota exceeded"))
    with pytest.raises(DeployFailed) as info:
        deploy(cloud, spec_of())
    assert info.value.exit_code == 1
    assert "deploy stopped at create-instance app" in str(info.value)
    assert "ensure-secgroups (changed)" in str(info.value)
    assert [s.step for s in info.value.result.steps] == ["ensure-secgroups"]
    assert conn.count("compute.create_server") == 1  # edge was not attempted


def test_deploy_dry_run_changes_nothing(conn, cloud, spec_of):
    conn.add_volume("data")
    result = deploy(cloud, spec_of(), dry_run=True)
    assert not result.changed and conn.mutations() == []
    kinds = [(a["step"], a["kind"]) for a in result.to_dict()["actions"]]
    assert ("create-instance", "server") in kinds and ("ensure-secgroups", "security_group") in kinds
