"""Issue 10 against the in-memory fake cloud: keypairs shared by several servers, servers ivc did
not make (never a silent twin; ``rotate --adopt`` takes one over: forward path, rollback,
resume), and identity (which declarations file made a server; undeclared volumes of the old
server). Each test checks what the cloud holds at the end, not only what was returned.
"""

from __future__ import annotations

import hashlib
import textwrap

import pytest
from declared import DEFAULTS, WEB1
from fakecloud import http_error, ticking_cloud

from ivc_tasks.errors import CloudError, ConfigError, RolledBack
from ivc_tasks.resources.servers import spec_identity
from ivc_tasks.spec import load_spec
from ivc_tasks.steps.deploy import deploy
from ivc_tasks.steps.instances import create_instance
from ivc_tasks.steps.rotate import RotateOptions, rotate
from ivc_tasks.steps.rotate.decide import CONFLICT, FORWARD, ROLLBACK, ROTATE, Seen, decide
from ivc_tasks.steps.status import status

ENV = "test"
LOCK = f"ivc-lock-{ENV}-web1"
MARKERS = ("ivc_rotation", "ivc_role", "ivc_replaces", "ivc_was", "ivc_rollback")
VOLUMES = ("web1-data", "web1-logs")  # the fake cloud holds them (conftest's conn)
SPEC = DEFAULTS + WEB1
TWO_SHARING_A_KEY = """
[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
keypair = "shared"
userdata = "t.j2"

[keypairs.shared]
public_key_file = "key.pub"

[servers.a]
networks = ["private"]
floating_ip = false

[servers.b]
networks = ["private"]
floating_ip = false
"""


# -- helpers (the fixtures spec_of, spec, conn and public_key are conftest's) -------------------
def new_cloud(conn):
    return ticking_cloud(conn, ENV)


def tags(spec, gen, **extra):
    declared = spec.servers["web1"]
    volumes = {f"ivc_vol:{v.name}": v.id for v in extra.pop("volumes", [])}
    return {"ivc_managed": "1", "ivc_env": ENV, "ivc_name": "web1", "ivc_run": "earlier",
            "ivc_gen": str(gen), "ivc_userdata": hashlib.sha256(declared.userdata).hexdigest()[:16],
            **volumes, **extra}


def hand_made(conn, name="web1", *, extra_volume=False):
    """A server made by hand (no ivc tags) holding web1's volumes and a floating IP."""
    server = conn.add_server(name, metadata={"made": "by hand"}, networks=["net-priv"])
    for volume in conn.volumes:
        conn._attach(volume.id, server.id)
    if extra_volume:
        conn.add_volume("scratch", server_id=server.id)
    fip = conn.add_fip(conn.ports_of(server.id)[0].id, description="made by hand")
    return server, fip


def declared_volumes(conn):
    return [v for v in conn.volumes if v.name in ("web1-data", "web1-logs")]


def web1_managed(conn):
    return [s for s in conn.servers if s.metadata.get("ivc_name") == "web1"]


def assert_adopted(conn, old, fip, new_id):
    """One server for web1: ``new_id``, managed, gen 1, recording its declarations, holding
    web1's volumes and the hand-made server's floating IP; the hand-made one gone."""
    (server,) = web1_managed(conn)
    assert server.id == new_id != old.id and server.status == "ACTIVE"
    assert server.metadata["ivc_gen"] == "1" and server.metadata["ivc_spec"] == "a.toml"
    assert not [k for k in server.metadata if k in MARKERS or k.startswith("ivc_fip:")]
    for volume in declared_volumes(conn):
        assert volume.status == "in-use" and conn.holders(volume) == [new_id], volume
        assert server.metadata[f"ivc_vol:{volume.name}"] == volume.id
    assert conn.fip_server(fip) == new_id
    assert conn.server(old.id) is None and old.id in conn.deleted
    assert [s.id for s in conn.servers] == [new_id]
    assert LOCK not in {k.name for k in conn.keys}
    return server


def assert_hand_made_serves(conn, old, fip):
    """Rolled back: the hand-made server as it was, alone, with its volumes and floating IP."""
    assert [s.id for s in conn.servers] == [old.id]
    server = conn.server(old.id)
    assert server.status == "ACTIVE" and server.task_state is None
    assert server.metadata == {"made": "by hand"}
    for volume in declared_volumes(conn):
        assert conn.holders(volume) == [old.id], volume
    assert conn.fip_server(fip) == old.id
    assert LOCK not in {k.name for k in conn.keys}


# -- keypairs ----------------------------------------------------------------------------------
def test_two_servers_sharing_a_new_keypair_deploy_in_one_run_with_one_create(conn, spec_of,
                                                                              public_key):
    result = deploy(new_cloud(conn), spec_of(TWO_SHARING_A_KEY))
    assert conn.count_keypairs("compute.create_keypair") == 1
    assert conn.count("compute.create_server") == 2
    assert [s.step for s in result.steps] == ["ensure-secgroups", "ensure-keypairs",
                                              "create-instance", "check", "create-instance",
                                              "check"]
    assert [k.public_key for k in conn.keys if k.name == "shared"] == [public_key]
    conn.calls.clear()
    again = deploy(new_cloud(conn), spec_of(TWO_SHARING_A_KEY))
    assert not again.changed and conn.mutations() == []


def test_the_deploy_dry_run_shows_the_keypair_once(conn, spec_of):
    result = deploy(new_cloud(conn), spec_of(TWO_SHARING_A_KEY), dry_run=True)
    creates = [a for s in result.steps for a in s.actions if a.kind == "keypair"]
    assert [a.name for a in creates] == ["shared"] and conn.mutations() == []


def test_an_existing_keypair_with_the_same_key_is_done(conn, spec_of, public_key):
    conn.add_lock("shared", public_key.rsplit(" ", 1)[0] + " another comment")
    deploy(new_cloud(conn), spec_of(TWO_SHARING_A_KEY))
    assert conn.count_keypairs("compute.create_keypair") == 0 and conn.count("compute.create_server") == 2


def test_a_different_key_under_the_name_is_exit_2_before_any_change(conn, spec_of):
    conn.add_lock("shared", "ssh-ed25519 AAAAother x@y")
    spec = spec_of(TWO_SHARING_A_KEY)
    with pytest.raises(ConfigError) as info:
        deploy(new_cloud(conn), spec)
    assert info.value.exit_code == 2 and conn.mutations() == []
    assert str(info.value) == (
        f"{spec.path}: keypairs.shared: the cloud's keypair 'shared' holds a different public key "
        f"than {spec.path.parent}/key.pub; delete it in the cloud (openstack keypair delete) or "
        "give the declared one another name")


def test_a_keypair_made_meanwhile_with_the_same_key_counts_as_done(conn, spec_of):
    original = conn.compute_create_keypair

    def racing(name, public_key):
        conn.compute_create_keypair = original
        conn.add_lock(name, public_key)
        return original(name=name, public_key=public_key)  # 409: taken meanwhile

    conn.compute_create_keypair = racing
    result = deploy(new_cloud(conn), spec_of(TWO_SHARING_A_KEY))
    assert conn.count("compute.create_server") == 2
    assert not [a for s in result.steps for a in s.actions if a.kind == "keypair"]


# -- servers ivc did not make ------------------------------------------------------------------
def twin_refused(old_id):
    """What create-instance, deploy and a plain rotate say of a hand-made server of that name."""
    return (f"server web1: a server of that name that ivc did not make exists: {old_id} (ACTIVE); "
            f"ivc will not boot a twin beside it: `invoke rotate --name web1 --adopt {old_id}` "
            "replaces it by a managed server (its declared volumes and floating IP move over), "
            f"or delete or rename it (openstack server delete {old_id})")


def test_create_instance_refuses_a_twin_of_a_hand_made_server(conn, spec):
    old, _ = hand_made(conn)
    with pytest.raises(ConfigError) as info:
        create_instance(new_cloud(conn), spec, "web1")
    assert info.value.exit_code == 2 and str(info.value) == twin_refused(old.id)
    assert conn.mutations() == []


def test_deploy_refuses_a_twin_before_any_change(conn, spec):
    old, _ = hand_made(conn)
    with pytest.raises(ConfigError) as info:
        deploy(new_cloud(conn), spec)
    assert info.value.exit_code == 2 and str(info.value) == twin_refused(old.id)
    assert conn.mutations() == []


def test_a_server_of_another_environment_is_not_a_twin(conn, spec):
    for volume in conn.volumes:
        volume.status = "available"
    conn.add_server("web1", metadata={"ivc_managed": "1", "ivc_env": "other", "ivc_name": "web1"})
    create_instance(new_cloud(conn), spec, "web1")
    assert conn.count("compute.create_server") == 1


def test_plain_rotate_with_no_managed_server_refuses_the_twin(conn, spec):
    old, _ = hand_made(conn)
    with pytest.raises(ConfigError) as info:
        rotate(new_cloud(conn), spec, ["web1"])
    assert info.value.exit_code == 2 and str(info.value) == twin_refused(old.id)
    assert conn.mutations() == []


def test_status_lists_a_hand_made_server_of_a_declared_name(conn, spec):
    old, _ = hand_made(conn)
    result = status(new_cloud(conn), spec)
    items = [s.to_dict() for s in result.servers]
    assert [(i["id"], i["managed"]) for i in items] == [(None, True), (old.id, False)]
    assert result.to_dict()["rotate_due"] == ["web1"]  # no managed server yet
    assert result.lines() == [
        "web1: no server (rotate or create-instance makes it)",
        f"web1: {old.id} ACTIVE; 10.0.0.10, 203.0.113.10; NOT MADE BY IVC (`invoke rotate --name "
        f"web1 --adopt {old.id}` takes it over)"]
    assert {v["name"] for v in items[1]["volumes"]} == {"web1-data", "web1-logs"}


# -- adopt: the forward path -------------------------------------------------------------------
def test_adopt_replaces_the_hand_made_server_moving_volumes_and_floating_ip(conn, spec):
    old, fip = hand_made(conn)
    result = rotate(new_cloud(conn), spec, ["web1"], options=RotateOptions(adopt=old.id))
    (report,) = result.rotations
    assert (report.decision, report.outcome, report.old_id) == ("adopt", "adopted", old.id)
    assert_adopted(conn, old, fip, report.new_id)
    assert [p.name for p in report.phases] == ["preflight", "create", "ready-gate", "stop",
                                               "move-volumes", "move-floating-ip",
                                               "healthy-gate", "delete-old", "finish"]
    order = conn.mutations()
    assert order.index("compute.stop_server") < order.index("compute.delete_volume_attachment")
    assert order.index("network.update_ip") < order.index("compute.delete_server")
    # a rerun is a plain rotation of the managed server now
    again = rotate(new_cloud(conn), spec, ["web1"])
    assert again.rotations[0].decision == "rotate"


def test_adopt_by_name_and_its_undeclared_volumes_stay_with_a_warning(conn, spec):
    old, fip = hand_made(conn, extra_volume=True)
    result = rotate(new_cloud(conn), spec, ["web1"], options=RotateOptions(adopt="web1"))
    (report,) = result.rotations
    assert report.new_id and any("scratch" in w and "not declared" in w for w in report.warnings)
    scratch = next(v for v in conn.volumes if v.name == "scratch")
    conn.settle()
    assert conn.holders(scratch) == [] and scratch.status == "available"
    assert_adopted(conn, old, fip, report.new_id)


def test_adopt_dry_run_changes_nothing(conn, spec):
    old, _ = hand_made(conn)
    result = rotate(new_cloud(conn), spec, ["web1"], options=RotateOptions(adopt=old.id),
                    dry_run=True)
    (report,) = result.rotations
    assert report.decision == "adopt" and report.old_id == old.id
    assert [p.name for p in report.phases][-1] == "finish"
    assert conn.mutations() == []


@pytest.mark.parametrize("case, message", [  # {ref}: what --adopt names; {s0}, {s1}: the servers
    ("unknown", "--adopt 'nope': no server with that id or name in the project; servers ivc did "
                "not make: none"),
    ("managed", "--adopt '{ref}': server {ref} is ivc's server web1 already; `invoke rotate --name "
                "web1` (without --adopt) replaces it"),
    ("other-env", "--adopt '{ref}': server {ref} was made by ivc (environment 'prod', server "
                  "'web1'); ivc adopts only servers it did not make"),
    ("two-names", "--adopt 'web1': 2 servers of that name ({s0} ACTIVE, {s1} ACTIVE); give the id "
                  "of the one to adopt"),
    ("has-managed", "server web1: --adopt {ref}: ivc has a server of this name already (without "
                    "--adopt, rotate replaces that one): {s0} (ACTIVE, gen 1); to replace {ref} "
                    "by it, delete one of them first"),
    ("two-names-flag", "--adopt '{ref}': adopt one server at a time (one --name)"),
])
def test_adopt_refusals_change_nothing(conn, spec_of, case, message):
    spec = spec_of()
    ref = "nope"
    names = ["web1"]
    if case == "managed":
        ref = conn.add_server("web1", metadata=tags(spec, 1), networks=["net-priv"]).id
    elif case == "other-env":
        ref = conn.add_server("web1", metadata={"ivc_managed": "1", "ivc_env": "prod",
                                                "ivc_name": "web1"}).id
    elif case == "two-names":
        hand_made(conn)
        conn.add_server("web1")
        ref = "web1"
    elif case == "has-managed":
        conn.add_server("web1", metadata=tags(spec, 1), networks=["net-priv"])
        ref = hand_made(conn, name="legacy")[0].id
    elif case == "two-names-flag":
        spec = spec_of(SPEC + '\n[servers.web2]\nnetworks = ["private"]\nfloating_ip = false\n')
        names, ref = ["web1", "web2"], hand_made(conn)[0].id
    with pytest.raises(ConfigError) as info:
        rotate(new_cloud(conn), spec, names, options=RotateOptions(adopt=ref))
    servers = {f"s{i}": s.id for i, s in enumerate(conn.servers)}
    assert str(info.value) == message.format(ref=ref, **servers)
    assert info.value.exit_code == 2 and conn.mutations() == []


# -- adopt: rollback ---------------------------------------------------------------------------
def test_an_adopt_that_fails_moving_volumes_rolls_back_to_the_hand_made_server(conn, spec):
    old, fip = hand_made(conn)
    conn.fail_next("compute.create_volume_attachment", http_error(500, "Unexpected API Error"))
    with pytest.raises(RolledBack) as info:
        rotate(new_cloud(conn), spec, ["web1"], options=RotateOptions(adopt=old.id))
    assert info.value.exit_code == 3 and "failed in phase move-volumes" in str(info.value)
    assert_hand_made_serves(conn, old, fip)
    assert conn.count("compute.start_server") == 1 and len(conn.deleted) == 1


def test_an_adopt_whose_floating_ip_move_fails_rolls_back(conn, spec):
    old, fip = hand_made(conn)
    conn.fail_next("network.update_ip", http_error(500, "Internal server error"))
    with pytest.raises(RolledBack):
        rotate(new_cloud(conn), spec, ["web1"], options=RotateOptions(adopt=old.id))
    assert_hand_made_serves(conn, old, fip)
    # after the rollback, the twin rule holds again: plain rotate refuses, --adopt works
    with pytest.raises(ConfigError) as info:
        rotate(new_cloud(conn), spec, ["web1"])
    assert str(info.value) == twin_refused(old.id)
    result = rotate(new_cloud(conn), spec, ["web1"], options=RotateOptions(adopt=old.id))
    assert_adopted(conn, old, fip, result.rotations[0].new_id)


# -- adopt: resuming what a killed run left ----------------------------------------------------
def mid_adoption(conn, spec, old, fip, *, status="ACTIVE", **extra):
    """The new server a killed adopt left: its markers name the hand-made server."""
    markers = {"ivc_rotation": "rot-1", "ivc_role": "new", "ivc_replaces": old.id,
               "ivc_was": "ACTIVE", f"ivc_fip:{fip.id}": f"{conn.ports_of(old.id)[0].id} net-priv"}
    return conn.add_server("web1", metadata=tags(spec, 1, volumes=declared_volumes(conn),
                                                 ivc_spec="a.toml", **markers, **extra),
                           networks=["net-priv"], status=status)


def test_resume_of_an_adoption_rolls_forward_without_the_flag(conn, spec):
    old, fip = hand_made(conn)
    old.status = "SHUTOFF"  # killed after the stop
    new = mid_adoption(conn, spec, old, fip)
    result = rotate(new_cloud(conn), spec, ["web1"])
    (report,) = result.rotations
    assert (report.decision, report.old_id) == ("forward", old.id)
    assert_adopted(conn, old, fip, new.id)
    assert conn.count("compute.create_server") == 0


def test_resume_of_an_adoption_with_the_flag_again_rolls_forward(conn, spec):
    old, fip = hand_made(conn)
    new = mid_adoption(conn, spec, old, fip)
    result = rotate(new_cloud(conn), spec, ["web1"], options=RotateOptions(adopt=old.id))
    assert result.rotations[0].decision == "forward"
    assert_adopted(conn, old, fip, new.id)


def test_resume_of_an_adoption_whose_new_server_failed_rolls_back_then_adopts(conn, spec):
    old, fip = hand_made(conn)
    new = mid_adoption(conn, spec, old, fip, status="ERROR")
    result = rotate(new_cloud(conn), spec, ["web1"])
    (report,) = result.rotations
    assert report.decision == "rollback+rotate" and new.id in conn.deleted
    assert_adopted(conn, old, fip, report.new_id)


def test_resume_of_an_adoption_after_the_hand_made_server_is_gone_finishes(conn, spec):
    old, fip = hand_made(conn)
    new = mid_adoption(conn, spec, old, fip)
    conn.delete_now(old.id)
    conn.settle()
    result = rotate(new_cloud(conn), spec, ["web1"])
    assert result.rotations[0].decision == "finish"
    (server,) = web1_managed(conn)
    assert server.id == new.id  # the floating IP went with the hand-made server's port
    for volume in declared_volumes(conn):
        assert conn.holders(volume) == [new.id]


def test_a_killed_adopt_is_finished_by_a_rerun(conn, spec):
    old, fip = hand_made(conn)
    conn.fail_next("compute.delete_server", http_error(500, "Unexpected API Error"))
    with pytest.raises(CloudError) as info:
        rotate(new_cloud(conn), spec, ["web1"], options=RotateOptions(adopt=old.id))
    assert info.value.exit_code == 1 and "again to finish it" in str(info.value)
    result = rotate(new_cloud(conn), spec, ["web1"])
    (report,) = result.rotations
    assert report.decision == "forward" and report.old_id == old.id
    assert_adopted(conn, old, fip, report.new_id)


def test_decide_with_an_adopted_server():
    hand = Seen(id="h", status="ACTIVE")
    assert decide([], adopt=hand).kind == ROTATE and decide([], adopt=hand).adopt
    assert decide([], adopt=hand).label == "adopt"
    managed = Seen(id="m", status="ACTIVE", gen=1)
    assert decide([managed], adopt=hand).kind == CONFLICT
    new = Seen(id="n", status="ACTIVE", rotation="r", role="new", replaces="h", gen=1)
    assert decide([new], adopt=hand) == decide([new, hand])
    assert decide([new, hand]).kind == FORWARD and decide([new, hand]).old == hand
    failed = Seen(id="n", status="ERROR", rotation="r", role="new", replaces="h", gen=1)
    assert decide([failed, hand]).kind == ROLLBACK


# -- identity ----------------------------------------------------------------------------------
def test_spec_identity_is_the_path_below_env(tmp_path, spec_of):
    assert spec_identity(spec_of()) == "a.toml"
    (tmp_path / "env" / "teams").mkdir()
    (tmp_path / "env" / "teams" / "t.j2").write_text("x")
    moved = load_spec(_write(tmp_path / "elsewhere" / "ci" / "env" / "a.toml", SPEC,
                             tmp_path / "env" / "t.j2"), env_name=ENV)
    assert spec_identity(moved) == "a.toml"  # the same file in another checkout


def _write(path, text, template):
    path.parent.mkdir(parents=True)
    (path.parent / "t.j2").write_text(template.read_text())
    path.write_text(textwrap.dedent(text))
    return path


def test_a_new_server_records_its_declarations(conn, spec):
    create_instance(new_cloud(conn), spec, "web1")
    (server,) = web1_managed(conn)
    assert server.metadata["ivc_spec"] == "a.toml"


def test_a_server_made_from_other_declarations_is_not_rotated_nor_recreated(conn, spec_of):
    a = spec_of()
    create_instance(new_cloud(conn), a, "web1")
    b = spec_of(name="b.toml")
    (server,) = web1_managed(conn)
    conn.calls.clear()
    refused = (f"{b.path}: server web1 ({server.id}) was made from other declarations ('a.toml'), "
               "not from these ('b.toml'); ivc will not change or replace it from this file: run "
               "with IVC_SPEC pointing at a.toml, or give these declarations their own IVC_ENV "
               "(or another server name)")
    for step in (lambda: rotate(new_cloud(conn), b, ["web1"]),
                 lambda: create_instance(new_cloud(conn), b, "web1"),
                 lambda: deploy(new_cloud(conn), b)):
        with pytest.raises(ConfigError) as info:
            step()
        assert info.value.exit_code == 2 and str(info.value) == refused
    assert conn.mutations() == []
    rotate(new_cloud(conn), a, ["web1"])  # its own declarations rotate it
    assert web1_managed(conn)[0].metadata["ivc_spec"] == "a.toml"


def test_a_server_made_before_ivc_spec_existed_is_taken_as_ours(conn, spec):
    old = conn.add_server("web1", metadata=tags(spec, 1, volumes=declared_volumes(conn)),
                          networks=["net-priv"])
    for volume in conn.volumes:
        conn._attach(volume.id, old.id)
    result = rotate(new_cloud(conn), spec, ["web1"])
    (server,) = web1_managed(conn)
    assert server.id == result.rotations[0].new_id and server.metadata["ivc_spec"] == "a.toml"


def test_rotate_refuses_to_leave_an_undeclared_volume_detached(conn, spec_of):
    spec = spec_of()
    old = conn.add_server("web1", metadata=tags(spec, 1, volumes=declared_volumes(conn)),
                          networks=["net-priv"])
    for volume in list(conn.volumes):
        conn._attach(volume.id, old.id)
    other = conn.add_volume("a-data", server_id=old.id)  # declared by another file
    with pytest.raises(ConfigError) as info:
        rotate(new_cloud(conn), spec, ["web1"])
    assert str(info.value) == (
        f"{spec.path}: server web1 ({old.id}) holds volumes that servers.web1.volumes does not "
        f"declare: 'a-data' ({other.id}); a rotate would leave them detached: declare them (they "
        "move to the new server) or pass --detach-undeclared (they stay, available, detached)")
    assert conn.mutations() == []
    result = rotate(new_cloud(conn), spec, ["web1"],
                    options=RotateOptions(detach_undeclared=True))
    assert result.rotations[0].warnings == [
        f"server web1: volumes 'a-data' ({other.id}) are attached to {old.id} but not declared: "
        "they do not move; deleting the old server detaches them (they stay, available)"]
    conn.settle()
    assert conn.holders(other) == [] and other.status == "available"
