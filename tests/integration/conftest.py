"""Fixtures for tests against the local cloud.

When a test to run is marked ``cloud``, the session first makes sure the cloud is up (cloudup.py):
used as it is when it answers, brought up by what `invoke devcloud.up` runs when it does not,
and the whole session stops with devcloud.up's reason when it cannot come up.
"""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from openstack.compute.v2.server import Server

from ivc_tasks.resources.servers import present
from ivc_tasks.retry import cloud_retrying

from .cloudup import pytest_collection_finish  # noqa: F401  (brings the cloud up for `cloud` tests)
from .rotateworld import connection

ROOT = Path(__file__).resolve().parents[2]
CLOUDS_YAML = Path(os.environ.get("DEVCLOUD_DIR", ROOT / ".devcloud")) / "clouds.yaml"


def _connect(cloud: str):
    if not CLOUDS_YAML.exists():
        pytest.fail(f"{CLOUDS_YAML} is missing: is this test marked `cloud`? (the session "
                    "brings the cloud up before the first test marked so)")
    return connection(cloud)


# Servers of the tests that never look inside them boot without a guest (a guest costs a
# second or two of CPU on a 2-core machine); tests that look inside name their servers g-...
# (the ``givc`` fixture, test_guests.py), for which guests stay on.
NO_GUEST_PREFIXES = ("t-",)
GUEST_PREFIX = "g-"


@pytest.fixture(scope="session", autouse=True)
def guests_only_where_looked_at():
    from ivc_tasks.devcloud import guests
    from ivc_tasks.devcloud.layout import Layout
    if os.environ.get("IVC_TEST_GUESTS", "") == "all":  # every server gets one (measuring)
        return
    for prefix in NO_GUEST_PREFIXES:
        guests.set_mode("off", prefix, Layout(CLOUDS_YAML.parent))
    guests.set_mode("on", GUEST_PREFIX, Layout(CLOUDS_YAML.parent))


@pytest.fixture(scope="session")
def conn():
    """The demo user (member role in project ivc), as ivc's users are."""
    return _connect("ivc-local")


@pytest.fixture(scope="session")
def admin_conn():
    return _connect("ivc-local-admin")


@pytest.fixture
def unique():
    """A prefix for this test's resources, so that tests never collide."""
    return f"t-{uuid.uuid4().hex[:8]}"


# -- running ivc's own tasks against the local cloud -------------------------------------------
class IvcRun:
    """One `invoke` run: exit code, the JSON object it printed (None if not JSON), stdout, stderr."""

    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err
        try:
            self.data = json.loads(out)
        except ValueError:
            self.data = None

    def __repr__(self):
        return f"IvcRun(code={self.code}, err={self.err[-2000:]!r})"


class Ivc:
    """ivc's tasks run as a user runs them (`python -m invoke ...`), with this test's own env file
    and spec under tmp_path: environment `<unique>`, so every server ivc makes carries
    `ivc_env=<unique>` and can be found and deleted afterwards."""

    def __init__(self, tmp_path, unique, conn):
        self.root, self.env, self.conn = tmp_path, unique, conn
        self.prefix = unique
        self.volumes = []
        (tmp_path / "env" / "templates").mkdir(parents=True)
        (tmp_path / "env" / "templates" / "ci.j2").write_text(
            "#cloud-config\nhostname: {{ server }}\nwrite_files:\n  - path: /etc/ivc-test\n"
            "    content: {{ (greeting ~ ' ' ~ env) | tojson }}\n")
        self.env_file = tmp_path / "env" / f"{unique}.env"
        self.write_env()

    @property
    def spec_path(self):
        return self.root / "env" / f"{self.env}.toml"

    def write_env(self, extra=""):
        self.env_file.write_text(f"OS_CLOUD=ivc-local\nOS_CLIENT_CONFIG_FILE={CLOUDS_YAML}\n"
                                 f"IVC_POLL_INTERVAL=0.5\n{extra}")

    def write_spec(self, text, *, guests=False):
        """Write the declarations; without ``guests`` (servers named ``t-...`` boot no guest:
        nothing prints cloud-init's final line) and unless the text declares checks itself,
        they say ``cloud_init = false`` for every server."""
        if not guests and "checks" not in text:
            text += "\n[defaults.checks]\ncloud_init = false\n"
        self.spec_path.write_text(text.replace("PREFIX", self.prefix))
        return self.spec_path

    def run(self, *args, env=None):
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("IVC_", "OS_"))}
        environ.update({"IVC_ROOT": str(self.root), "IVC_ENV": self.env, **(env or {})})
        proc = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=environ,
                              capture_output=True, text=True, timeout=600)
        return IvcRun(proc.returncode, proc.stdout, proc.stderr)

    def volume(self, suffix, name=None):
        """A 1 GB volume made for this test with plain openstacksdk (deleted afterwards)."""
        volume = self.conn.block_storage.create_volume(name=name or f"{self.prefix}-{suffix}",
                                                       size=1)
        self.volumes.append(volume)
        return self.conn.block_storage.wait_for_status(volume, "available", interval=0.5,
                                                       wait=120)

    def servers(self):
        """ivc's servers of this env that are not gone (``resources.servers.is_gone``)."""
        return [s for s in present(self.conn.compute.servers(details=True))
                if (s.metadata or {}).get("ivc_env") == self.env]

    def cleanup(self):
        servers = self.servers() + [s for s in self.conn.compute.servers()
                                    if s.name.startswith(self.prefix)]
        for server in {s.id: s for s in servers}.values():
            self.conn.compute.delete_server(server, ignore_missing=True)
        for server in servers:
            self.conn.compute.wait_for_delete(server, interval=0.5, wait=120)
        for fip in self.conn.network.ips():
            if (fip.description or "").startswith(f"ivc:{self.env}:"):
                self.conn.network.delete_ip(fip)
        for group in self.conn.network.security_groups():
            if group.name.startswith(self.prefix):
                self.conn.network.delete_security_group(group)
        for key in self.conn.compute.keypairs():
            if key.name.startswith(self.prefix):
                self.conn.compute.delete_keypair(key)
        for volume in self.volumes:  # only the volumes this test made
            volume = self.conn.block_storage.get_volume(volume.id)
            for attachment in volume.attachments or []:
                self.conn.compute.delete_volume_attachment(Server.new(id=attachment["server_id"]),
                                                           volume.id)
            volume = self.conn.block_storage.wait_for_status(volume, "available", interval=0.5,
                                                             wait=120)
            self.conn.block_storage.delete_volume(volume)


@pytest.fixture
def ivc(tmp_path, unique, conn):
    """Run ivc's tasks with this test's own env and spec; delete what it made afterwards."""
    helper = Ivc(tmp_path, unique, conn)
    yield helper
    helper.cleanup()


@pytest.fixture
def givc(tmp_path, conn):
    """As ``ivc``, under a name (``g-...``) whose servers get real guests (cloud-init runs,
    sshd listens); declare their checks with ``write_spec(..., guests=True)``."""
    helper = Ivc(tmp_path, f"{GUEST_PREFIX}{uuid.uuid4().hex[:8]}", conn)
    yield helper
    helper.cleanup()


def cloud_state(conn, prefix, env=None):
    """What the project holds that a test named ``prefix`` (environment ``env``) could touch,
    to compare before and after a run that must change nothing.

    Other tests (and other sessions) share the project, so the comparison is limited to this
    test's resources: servers, groups, volumes and keypairs named ``prefix...``, servers tagged
    ``ivc_env=env``, floating IPs described for ``env`` or on this test's servers, and the
    shared keypair ``ivc-demo``. Runs that print JSON also prove it directly:
    ``mutating_requests`` is 0. Listings are retried like ivc's (the cloud is shared and busy).
    """
    return cloud_retrying(operation="list the test's resources", attempts=4, max_seconds=60)(
        _cloud_state, conn, prefix, env or prefix)


def _cloud_state(conn, prefix, env):
    servers = [s for s in present(conn.compute.servers(details=True))
               if s.name.startswith(prefix) or (s.metadata or {}).get("ivc_env") == env]
    ports = {p.id for s in servers for p in conn.network.ports(device_id=s.id)}
    return {
        "servers": sorted((s.id, s.name, s.status, tuple(sorted(s.metadata.items())))
                          for s in servers),
        "groups": sorted((g.id, g.name, len(g.security_group_rules or []))
                         for g in conn.network.security_groups() if g.name.startswith(prefix)),
        "volumes": sorted((v.id, v.status, tuple(sorted(a["server_id"] for a in v.attachments)))
                          for v in conn.block_storage.volumes() if (v.name or "").startswith(prefix)),
        "keypairs": sorted((k.name, k.fingerprint) for k in conn.compute.keypairs()
                           if k.name.startswith(prefix) or k.name == "ivc-demo"),
        "floating_ips": sorted((f.id, f.port_id) for f in conn.network.ips()
                               if (f.description or "").startswith(f"ivc:{env}:")
                               or f.port_id in ports),
    }
