"""converge on the local cloud (issue 18): republished image, flavor and user_data changes,
security groups in place, a failing rotation stopping the rest, undeclared servers and
--prune, two runs side by side, a second converge that changes nothing. Names start with
``cv-`` (this file's own)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import pytest

from tests.integration.rotateworld import World, connection

pytestmark = pytest.mark.cloud


@dataclass
class ConvergeWorld(World):
    """A World whose servers may each name an image, a flavor, a greeting and groups."""

    images: list[str] = field(default_factory=list)  # image ids made here (deleted at the end)

    def write(self) -> None:
        env_dir = self.write_env("IVC_POLL_INTERVAL=0.2\n")
        # not final_message: it replaces the final line that the cloud_init check waits for
        (env_dir / "t.j2").write_text('#cloud-config\nbootcmd:\n  - echo "{{ greeting }}"\n')
        lines = ['[defaults]', 'image = "ivc-tiny"', 'flavor = "m1.tiny"',
                 'keypair = "ivc-demo"', 'userdata = "t.j2"', 'networks = ["private"]',
                 'userdata_vars = { greeting = "v1" }', '']
        lines += self.secgroup_lines("ivc converge test")
        for name, opts in self.servers.items():
            lines += [f'[servers.{name}]',
                      *([f'image = "{opts["image"]}"'] if opts.get("image") else []),
                      *([f'flavor = "{opts["flavor"]}"'] if opts.get("flavor") else []),
                      *([f'userdata_vars = {{ greeting = "{opts["greeting"]}" }}']
                        if opts.get("greeting") else []),
                      f'security_groups = {json.dumps(opts.get("groups", []))}', '']
        (env_dir / f"{self.env}.toml").write_text("\n".join(lines))

    def converge(self, *args: str, expect: int = 0) -> dict:
        proc = self.run("converge", *args, "--json", timeout=600)
        assert proc.returncode == expect, (proc.returncode, proc.stdout[-3000:],
                                           proc.stderr[-3000:])
        return json.loads(proc.stdout)

    def publish(self, name: str, **props) -> str:
        """Upload a copy of ivc-tiny as image ``name`` (private to the project)."""
        tiny = next(iter(self.conn.image.images(name="ivc-tiny")))  # not find_image (deprecated)
        data = self.conn.image.download_image(tiny).content
        image = self.conn.image.create_image(name=name, data=data, disk_format="raw",
                                             container_format="bare", allow_duplicates=True,
                                             **props)  # (without it, a find_image: deprecated)
        self.images.append(image.id)
        return image.id

    def cleanup(self) -> None:
        super().cleanup()
        for image_id in self.images:
            self.conn.image.delete_image(image_id, ignore_missing=True)


def by_name(out: dict) -> dict[str, dict]:
    return {s["name"]: s for s in out["servers"]}


def ids(world: World) -> dict[str, str]:
    return {s.metadata["ivc_name"]: s.id for s in world.managed()}


@pytest.fixture
def world(tmp_path):
    unique = f"cv-{uuid.uuid4().hex[:6]}"
    w = ConvergeWorld(conn=connection(), root=tmp_path, env=unique)
    try:
        yield w
    finally:
        w.cleanup()


def test_converge_creates_rotates_what_drifted_updates_in_place_and_prunes(world):
    env = world.env
    image = f"{env}-img"
    old_image = world.publish(image)
    world.servers = {f"{env}a": {"image": image}, f"{env}b": {"image": image},
                     f"{env}c": {}}
    a, b, c = world.servers
    world.write()
    first = world.converge()
    assert [(s["name"], s["action"], s["outcome"]) for s in first["servers"]] == \
        [(a, "create", "created"), (b, "create", "created"), (c, "create", "created")]
    assert first["changed"] is True
    again = world.converge()
    assert again["changed"] is False and again["mutating_requests"] == 0
    assert {s["action"] for s in again["servers"]} == {"unchanged"}
    before = ids(world)

    # the image is republished under the same name, the old one renamed
    world.conn.image.update_image(old_image, name=f"{image}-old")
    new_image = world.publish(image)
    plan = world.converge("--dry-run")
    servers = by_name(plan)
    assert [n for n, s in servers.items() if s["action"] == "rotate"] == [a, b]
    assert servers[c]["action"] == "unchanged" and "outcome" not in servers[a]
    reason = servers[a]["reasons"][0]
    assert reason.startswith(f"image {image!r} now resolves to {new_image[:8]}…")
    assert f"(was {old_image[:8]}…" in reason and "published 20" in reason
    assert plan["mutating_requests"] == 0 and plan["changed"] is False

    done = world.converge("--max-unavailable", "2")
    outcomes = {s["name"]: (s["action"], s["outcome"]) for s in done["servers"]}
    assert outcomes == {a: ("rotate", "rotated"), b: ("rotate", "rotated"),
                        c: ("unchanged", "unchanged")}
    after = ids(world)
    assert after[c] == before[c] and after[a] != before[a] and after[b] != before[b]
    for name in (a, b):
        assert world.conn.compute.get_server(after[name]).image["id"] == new_image

    # a security group added to the declarations: added in place, no rotate
    world.secgroup = f"{env}-sg"
    for opts in world.servers.values():
        opts["groups"] = [world.secgroup]
    world.write()
    done = world.converge()
    assert {s["name"]: (s["action"], s["outcome"]) for s in done["servers"]} == \
        {n: ("update", "updated") for n in (a, b, c)}
    assert ids(world) == after
    groups = {g["name"] for g in world.conn.compute.get_server(after[c]).security_groups}
    assert world.secgroup in groups

    # a flavor change rotates a, a user_data change rotates b; c stays
    world.servers[a]["flavor"] = "m1.small"
    world.servers[b]["greeting"] = "v2"
    world.write()
    plan = by_name(world.converge("--dry-run"))
    assert plan[a]["reasons"] == ["flavor 'm1.tiny' -> 'm1.small'"]
    assert plan[b]["reasons"][0].startswith("user_data changed (digest ")
    assert plan[c]["action"] == "unchanged"
    world.converge("--max-unavailable", "2")
    final = ids(world)
    assert final[c] == after[c] and final[a] != after[a] and final[b] != after[b]
    assert world.conn.compute.get_server(final[a]).flavor["original_name"] == "m1.small"

    # c no longer declared: listed and left alone; --prune deletes it
    del world.servers[c]
    world.write()
    listed = by_name(world.converge())
    assert listed[c]["action"] == "undeclared" and listed[c]["outcome"] == "left alone"
    assert listed[c]["holds"]["status"] == "ACTIVE"
    assert c in ids(world)
    pruned = by_name(world.converge("--prune"))
    assert pruned[c]["outcome"] == "pruned" and c not in ids(world)
    last = world.converge()
    assert last["changed"] is False and last["mutating_requests"] == 0


def test_a_failed_rotation_stops_the_next_ones_exit_3_and_the_rest_untouched(world):
    env = world.env
    image = f"{env}-img"
    old_image = world.publish(image)
    world.servers = {f"{env}{i}": {"image": image} for i in range(3)}
    world.write()
    world.converge()
    before = ids(world)
    # republished with a minimum RAM no declared flavor has: Nova refuses the new server
    world.conn.image.update_image(old_image, name=f"{image}-old")
    world.publish(image, min_ram=1024 * 1024)
    out = world.converge("--max-unavailable", "1", expect=3)
    outcomes = [(s["name"], s["outcome"]) for s in out["servers"]]
    first, *rest = sorted(world.servers)
    assert outcomes[0] == (first, "rolled back")
    assert [o for _, o in outcomes[1:]] == ["not started", "not started"]
    assert all(name in out["error"] for name in rest)
    assert ids(world) == before  # every old server serves as before
    for server in world.managed():
        assert server.status == "ACTIVE"


def test_two_deploys_and_two_converges_side_by_side_make_one_server(world):
    name = f"{world.env}x"
    world.servers = {name: {}}
    world.write()
    procs = [world.popen("deploy", "--json") for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert len(world.managed(name)) == 1
    world.conn.compute.delete_server(world.managed(name)[0])
    world.conn.compute.wait_for_delete(world.managed(name)[0], wait=120) \
        if world.managed(name) else None
    procs = [world.popen("converge", "--json") for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    servers = world.managed(name)
    assert len(servers) == 1 and servers[0].status == "ACTIVE"
    outcomes = sorted(by_name(json.loads(out))[name]["outcome"] for out, _ in results)
    assert outcomes in (["created", "unchanged"], ["created", "created"])


@pytest.fixture
def own_project(tmp_path):
    """A project and user of this test's own (the admin entry makes them, as the seed does),
    with a network, and a clouds.yaml entry ``cvq``: lowering its quota touches nobody else."""
    import secrets

    import yaml

    from tests.integration.rotateworld import CLOUDS_YAML

    admin = connection("ivc-local-admin")
    ident = admin.identity
    name = f"cvq-{uuid.uuid4().hex[:6]}"
    password = secrets.token_urlsafe(16)
    domain = ident.find_domain("Default", ignore_missing=False)
    project = ident.create_project(name=name, domain_id=domain.id)
    user = ident.create_user(name=name, password=password, domain_id=domain.id,
                             default_project_id=project.id)
    for role in ("member", "reader"):
        ident.assign_project_role_to_user(project, user, ident.find_role(role, ignore_missing=False))
    base = yaml.safe_load(CLOUDS_YAML.read_text())["clouds"]["ivc-local"]
    entry = {**base, "auth": {**base["auth"], "username": name, "password": password,
                              "project_name": name}}
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"cvq": entry}}))
    clouds.chmod(0o600)
    config = __import__("openstack").config.OpenStackConfig(config_files=[str(clouds)])
    conn = __import__("openstack").connection.Connection(config=config.get_one(cloud="cvq"))
    net = conn.network.create_network(name="private")
    conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.251.7.0/24",
                               name="private-v4")
    try:
        yield {"conn": conn, "clouds": clouds, "project": project, "admin": admin}
    finally:
        for server in conn.compute.servers():
            conn.compute.delete_server(server, ignore_missing=True)
            conn.compute.wait_for_delete(server, wait=120)
        for port in conn.network.ports(network_id=net.id):
            if port.device_owner.startswith("compute:") or not port.device_owner:
                conn.network.delete_port(port, ignore_missing=True)
        conn.network.delete_network(net, ignore_missing=True)
        for kp in conn.compute.keypairs():
            conn.compute.delete_keypair(kp, ignore_missing=True)
        ident.delete_user(user, ignore_missing=True)
        ident.delete_project(project, ignore_missing=True)


def test_a_quota_with_no_room_for_an_extra_server_makes_rotate_and_converge_exit_2(
        tmp_path, own_project):
    conn = own_project["conn"]
    env = f"cvq{uuid.uuid4().hex[:4]}"
    root = tmp_path / "root"
    (root / "env").mkdir(parents=True)
    (root / "env" / f"{env}.env").write_text(
        f"OS_CLOUD=cvq\nOS_CLIENT_CONFIG_FILE={own_project['clouds']}\nIVC_SPEC=env/{env}.toml\n")
    spec = root / "env" / f"{env}.toml"
    spec.write_text('[servers.q1]\nimage = "ivc-tiny"\nflavor = "m1.tiny"\n'
                    'networks = ["private"]\n')
    world = World(conn=conn, root=root, env=env)

    def run(*args, expect):
        proc = world.run(*args, "--json", timeout=600)
        assert proc.returncode == expect, (proc.stdout[-2000:], proc.stderr[-2000:])
        return json.loads(proc.stdout)

    run("converge", expect=0)
    own_project["admin"].set_compute_quotas(own_project["project"].id, instances=1)
    rotate = run("rotate", "--name", "q1", expect=2)
    assert rotate["mutating_requests"] == 0
    assert "instances: limit 1, used 1, this run needs 1 more" in rotate["error"]
    spec.write_text(spec.read_text().replace("m1.tiny", "m1.small"))
    out = run("converge", expect=2)
    assert out["mutating_requests"] == 0
    assert "instances: limit 1, used 1, this run needs 1 more" in out["error"]
    [server] = list(conn.compute.servers())
    assert server.status == "ACTIVE" and server.flavor["original_name"] == "m1.tiny"
