"""inventory: the formats (ssh-config, ansible YAML, json), groups, and the host clients reach
during a rotation, from the fake cloud's Neutron records."""

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from declared import DEFAULTS, WEB1
from fakecloud import FakeConnection, ticking_cloud
from test_rotate_unit import ENV, deployed, mid_rotation

from ivc_tasks.errors import ConfigError
from ivc_tasks.spec import load_spec
from ivc_tasks.steps.inventory import Host, ansible, groups_of, inventory, ssh_config

WEB = Host("web1", "id-1", "203.0.113.5", "debian", "/k/ivc-demo.key", "/r/.ivc/known_hosts.t",
           ["t", "web"])
DB = Host("db1", "id-2", "10.0.0.7", "admin", None, "/r/.ivc/known_hosts.t", ["t"])


def test_ssh_config_blocks():
    assert ssh_config([WEB, DB, Host("x", "id-3", None, "debian", None, "/kh")]) == (
        "Host web1\n  HostName 203.0.113.5\n  User debian\n  IdentityFile /k/ivc-demo.key\n"
        "  IdentitiesOnly yes\n  UserKnownHostsFile /r/.ivc/known_hosts.t\n"
        "  StrictHostKeyChecking yes\n\n"
        "Host db1\n  HostName 10.0.0.7\n  User admin\n  UserKnownHostsFile /r/.ivc/known_hosts.t\n"
        "  StrictHostKeyChecking yes\n")


def test_ansible_yaml_inventory():
    data = yaml.safe_load(ansible([WEB, DB], "t"))
    assert data["all"]["hosts"]["web1"] == {
        "ansible_host": "203.0.113.5", "ansible_user": "debian",
        "ansible_ssh_common_args": "-o UserKnownHostsFile=/r/.ivc/known_hosts.t "
                                   "-o StrictHostKeyChecking=yes",
        "ivc_server_id": "id-1", "ansible_ssh_private_key_file": "/k/ivc-demo.key"}
    assert data["all"]["children"] == {"t": {"hosts": {"web1": None, "db1": None}},
                                       "web": {"hosts": {"web1": None}}}


@pytest.mark.parametrize(("meta", "expected"), [
    ({}, ["prod"]), ({"role": "web"}, ["prod", "web"]),
    ({"role": "web", "groups": "front-end, eu,web"}, ["prod", "web", "front_end", "eu"]),
])
def test_groups_from_metadata(meta, expected):
    assert groups_of("prod", meta) == expected


SPEC = DEFAULTS + WEB1 + """\
ssh_user = "admin"
metadata = { role = "web" }
"""


def test_inventory_from_neutron_shows_the_server_holding_the_floating_ip(tmp_path):
    (tmp_path / "t.j2").write_text("#cloud-config\nhostname: {{ server }}\n")
    (tmp_path / "spec.toml").write_text(textwrap.dedent(SPEC))
    spec = load_spec(tmp_path / "spec.toml", env_name=ENV)
    conn = FakeConnection()
    conn.add_volume("web1-data")
    conn.add_volume("web1-logs")
    old, fip = deployed(conn, spec)
    mid_rotation(conn, spec, old, fip)  # a newer server, no floating IP yet
    cloud = ticking_cloud(conn, ENV)
    result = inventory(cloud, spec, fmt="json", key_file="/k/key",
                       known_hosts=Path("/r/kh"))
    (host,) = result.hosts
    assert (host.name, host.id, host.address, host.user, host.groups) == (
        "web1", old.id, fip.floating_ip_address, "admin", [ENV, "web"])
    assert json.loads(result.text())["hosts"][0]["known_hosts"] == "/r/kh"
    with pytest.raises(ConfigError, match="--format 'ini'"):
        inventory(cloud, spec, fmt="ini")
