"""A throwaway ivc environment on the local cloud for rotate tests: its own env file and spec under
a temporary root, uniquely named servers, volumes (made with plain openstacksdk, each with a
data marker in its metadata) and security group, and the checks and cleanup that go with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import openstack

from ivc_tasks.resources.servers import is_gone, present

ROOT = Path(__file__).resolve().parents[2]
CLOUDS_YAML = Path(os.environ.get("DEVCLOUD_DIR", ROOT / ".devcloud")) / "clouds.yaml"
MARKER_KEYS_PREFIXES = ("ivc_rotation", "ivc_role", "ivc_replaces", "ivc_was", "ivc_rollback",
                        "ivc_fip:")


def connection(cloud: str = "ivc-local"):
    """The tests' own openstacksdk connection. A connection error is tried again (the API
    servers drop idle keep-alive connections; a request on one that was just dropped gets a
    reset): keystoneauth's ``connect_retries``, as ivc's own retry policy does for its calls."""
    config = openstack.config.OpenStackConfig(config_files=[str(CLOUDS_YAML)])
    return openstack.connection.Connection(config=config.get_one(cloud=cloud, connect_retries=3))


def find_or_none(find, name_or_id: str, **attrs):
    """``find(name_or_id)`` of an openstacksdk proxy, None when absent: ``ignore_missing=True``
    (the find_* default) is deprecated in openstacksdk 4.x (RemovedInSDK60Warning)."""
    try:
        return find(name_or_id, ignore_missing=False, **attrs)
    except openstack.exceptions.NotFoundException:
        return None


def image_named(conn, name: str):
    """The one image called ``name``. Not ``find_image``: openstacksdk's Image.find passes the
    deprecated ``ignore_missing=True`` itself (RemovedInSDK60Warning, an error in the tests)."""
    (image,) = [i for i in conn.image.images(name=name)]
    return image


def server_gone(conn, server_id: str) -> bool:
    """True when the server is gone as ivc counts it: 404, DELETED or SOFT_DELETED
    (``resources.servers.is_gone``); Nova shows a deleted server as DELETED for a moment."""
    try:
        return is_gone(conn.compute.get_server(server_id))
    except openstack.exceptions.NotFoundException:
        return True


@dataclass
class World:
    conn: object
    root: Path
    env: str
    servers: dict[str, dict] = field(default_factory=dict)  # name -> options
    volumes: dict[str, str] = field(default_factory=dict)  # volume name -> id
    greeting: str = "v1"
    secgroup: str | None = None

    # -- files --------------------------------------------------------------------------------
    def write_env(self, extra: str = "") -> Path:
        """The environment file ``env/<env>.env`` (the local cloud, the declarations
        ``env/<env>.toml``, then ``extra``); return the ``env`` folder."""
        env_dir = self.root / "env"
        env_dir.mkdir(parents=True, exist_ok=True)
        (env_dir / f"{self.env}.env").write_text(
            "OS_CLOUD=ivc-local\n"
            f"OS_CLIENT_CONFIG_FILE={CLOUDS_YAML}\n"
            f"IVC_SPEC=env/{self.env}.toml\n" + extra)
        return env_dir

    def secgroup_lines(self, description: str) -> list[str]:
        """The declaration of the world's security group (SSH from anywhere), if it has one."""
        if not self.secgroup:
            return []
        return [f'[secgroups.{self.secgroup}]', f'description = "{description}"',
                'rules = [ { protocol = "tcp", ports = "22", '
                'remote_ip_prefix = "0.0.0.0/0" } ]', '']

    def write(self) -> None:
        env_dir = self.write_env()
        (env_dir / "t.j2").write_text('#cloud-config\nfinal_message: "{{ greeting }}"\n')
        lines = ['[defaults]', 'image = "ivc-tiny"', 'flavor = "m1.tiny"',
                 'keypair = "ivc-demo"', 'userdata = "t.j2"',
                 f'userdata_vars = {{ greeting = "{self.greeting}" }}', '',
                 # today's local cloud runs no guest: nothing prints cloud-init's final line
                 '[defaults.checks]', 'cloud_init = false', '']
        lines += self.secgroup_lines("ivc rotate test")
        for name, opts in self.servers.items():
            vols = ", ".join(f'"{v}"' for v in opts.get("volumes", ()))
            groups = f'["{self.secgroup}"]' if self.secgroup else "[]"
            lines += [f'[servers.{name}]', 'networks = ["private"]', f'volumes = [{vols}]',
                      *([f'flavor = "{opts["flavor"]}"'] if opts.get("flavor") else []),
                      f'floating_ip = {"true" if opts.get("floating_ip") else "false"}',
                      f'security_groups = {groups}', '',
                      *([f'[servers.{name}.checks]', opts["checks"], '']
                        if opts.get("checks") else [])]
        (env_dir / f"{self.env}.toml").write_text("\n".join(lines))

    def environ(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("IVC_", "OS_"))}
        env.update(IVC_ROOT=str(self.root), IVC_ENV=self.env, PYTHONPATH=str(ROOT))
        env.update(extra)
        return env

    # -- running ivc --------------------------------------------------------------------------
    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "invoke", *args]

    def run(self, *args: str, timeout: float = 240, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), cwd=ROOT, env=self.environ(**extra),
                              capture_output=True, text=True, timeout=timeout)

    def popen(self, *args: str, **extra: str) -> subprocess.Popen:
        return subprocess.Popen(self.command(*args), cwd=ROOT, env=self.environ(**extra),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def cloud(self):
        """ivc's own Cloud for this environment, in this process."""
        from ivc_tasks.cloud import connect
        from ivc_tasks.settings import load_settings
        from ivc_tasks.spec import load_spec

        settings = load_settings(self.env, root=self.root, environ={})
        return connect(settings), load_spec(settings.spec_path, env_name=self.env)

    # -- the cloud's view ---------------------------------------------------------------------
    def managed(self, name: str | None = None) -> list:
        """ivc's servers of this env (of ``name``, if given) that are not gone: a server Nova
        still lists as DELETED right after a delete counts as gone, as it does for ivc
        (``resources.servers.is_gone``)."""
        out = []
        for server in present(self.conn.compute.servers(details=True)):
            meta = server.metadata or {}
            if meta.get("ivc_env") == self.env and (name is None or meta.get("ivc_name") == name):
                out.append(server)
        return out

    def fips(self, name: str) -> list:
        marker = f"ivc:{self.env}:{name}"
        return [f for f in self.conn.network.ips() if f.description == marker]

    def wait_volumes_settled(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [self.conn.block_storage.get_volume(v).status for v in self.volumes.values()]
            if all(s in ("available", "in-use") for s in states):
                return
            time.sleep(0.2)

    def assert_serving(self, name: str, *, gen: int | None = None, same_id: str | None = None,
                       gone: tuple[str, ...] = ()) -> object:
        """Exactly one ACTIVE server for ``name`` with no rotation markers, every declared volume
        in-use on it (data markers intact), its floating IP on its port, no lock left."""
        servers = self.managed(name)
        described = [(s.id, s.status, s.metadata) for s in servers]
        assert len(servers) == 1, f"expected one server for {name}: {described}"
        server = servers[0]
        assert server.status == "ACTIVE", described
        leftovers = [k for k in server.metadata if k.startswith(MARKER_KEYS_PREFIXES)]
        assert not leftovers, f"rotation markers left: {leftovers}"
        if gen is not None:
            assert int(server.metadata["ivc_gen"]) == gen, described
        if same_id is not None:
            assert server.id == same_id, described
        for vol_name in self.servers[name].get("volumes", ()):
            volume = self.conn.block_storage.get_volume(self.volumes[vol_name])
            holders = [a["server_id"] for a in volume.attachments or []]
            assert volume.status == "in-use" and holders == [server.id], \
                f"volume {vol_name}: {volume.status} {holders} (server {server.id})"
            assert volume.metadata.get("marker") == f"data-of-{vol_name}"
        if self.servers[name].get("floating_ip"):
            fips = self.fips(name)
            assert len(fips) == 1, [(f.floating_ip_address, f.port_id) for f in fips]
            port = self.conn.network.get_port(fips[0].port_id) if fips[0].port_id else None
            assert port is not None and port.device_id == server.id, \
                f"floating IP on port {fips[0].port_id}, not on server {server.id}"
        for old in gone:
            assert server_gone(self.conn, old), \
                f"old server {old} still there"
        locks = [k.name for k in self.conn.compute.keypairs()
                 if k.name.startswith(f"ivc-lock-{self.env}-")]
        assert not locks, f"lock left behind: {locks}"
        return server

    # -- set up and clean up ------------------------------------------------------------------
    def make_volumes(self, names: list[str]) -> None:
        made = [self.conn.block_storage.create_volume(size=1, name=n,
                                                      metadata={"marker": f"data-of-{n}"})
                for n in names]
        for volume in made:
            self.conn.block_storage.wait_for_status(volume, "available", interval=0.2, wait=60)
            self.volumes[volume.name] = volume.id

    def cleanup(self) -> None:
        conn = self.conn
        servers = self.managed()
        for server in servers:
            conn.compute.delete_server(server, ignore_missing=True)
        for server in servers:
            conn.compute.wait_for_delete(server, interval=0.3, wait=120)
        for fip in conn.network.ips():
            if str(fip.description or "").startswith(f"ivc:{self.env}:"):
                conn.network.delete_ip(fip, ignore_missing=True)
        for keypair in conn.compute.keypairs():
            if keypair.name.startswith(f"ivc-lock-{self.env}-"):
                conn.compute.delete_keypair(keypair, ignore_missing=True)
        for volume_id in self.volumes.values():
            volume = find_or_none(conn.block_storage.find_volume, volume_id)
            if volume is None:
                continue
            if volume.name in ("web1-data", "web1-logs"):  # never, whatever happens
                continue
            deadline = time.monotonic() + 60
            while volume.status not in ("available", "error") and time.monotonic() < deadline:
                time.sleep(0.3)
                volume = conn.block_storage.get_volume(volume_id)
            conn.block_storage.delete_volume(volume_id, ignore_missing=True)
        if self.secgroup:
            group = find_or_none(conn.network.find_security_group, self.secgroup)
            if group is not None:
                conn.network.delete_security_group(group, ignore_missing=True)
