"""inventory: every managed server of the environment, from Neutron's truth, for ssh and Ansible.

One host per declared name: its newest ACTIVE server (a rotation under way shows the server that
holds the floating IP, i.e. the one clients reach). The address is ``{address}`` of the checks
(``resources/console.pick_address``: the floating IP, else the public port's address, else the
first fixed address), read from Neutron's ports and floating IPs (Nova's address cache lags a
move by seconds, ansible/ansible #63946). The user is ``ssh_user`` (default ``debian``), the key
``IVC_SSH_KEY`` (relative to the root), the known_hosts file the environment's
(``known_hosts.py``), written by create and rotate. Groups: the environment's name, the
``role`` metadata value, and the comma-separated ``groups`` metadata value.

Formats: ``ssh-config`` (``ssh -F <(invoke inventory --format ssh-config) web1``), ``ansible``
(a YAML inventory: ``ansible-inventory -i inventory.yml``), ``json``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ivc_tasks.errors import ConfigError
from ivc_tasks.resources.console import pick_address
from ivc_tasks.resources.resolve import list_floating_ips, list_networks, prefetch
from ivc_tasks.resources.servers import META_NAME, managed_servers
from ivc_tasks.spec import Spec

FORMATS = ("ssh-config", "ansible", "json")
GROUP_NAME = re.compile(r"[^A-Za-z0-9_]")


@dataclass
class Host:
    name: str
    id: str
    address: str | None
    user: str
    key_file: str | None
    known_hosts: str
    groups: list[str] = field(default_factory=list)


@dataclass
class InventoryResult:
    env: str
    format: str
    hosts: list[Host] = field(default_factory=list)
    changed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"step": "inventory", "changed": False, "actions": [], "env": self.env,
                "hosts": [asdict(h) for h in self.hosts], "warnings": self.warnings()}

    def warnings(self) -> list[str]:
        return [f"server {h.name} ({h.id}) has no address: left out" for h in self.hosts
                if h.address is None]

    def lines(self) -> list[str]:
        return self.text().splitlines()

    def text(self) -> str:
        """The inventory in ``format`` (json: ``to_dict``)."""
        if self.format == "ssh-config":
            return ssh_config(self.hosts)
        if self.format == "ansible":
            return ansible(self.hosts, self.env)
        import json

        return json.dumps(self.to_dict(), indent=2) + "\n"


def ssh_config(hosts: Iterable[Host]) -> str:
    """An ssh_config(5) text: one ``Host`` block per server with an address."""
    blocks = []
    for h in hosts:
        if h.address is None:
            continue
        lines = [f"Host {h.name}", f"  HostName {h.address}", f"  User {h.user}"]
        if h.key_file:
            lines += [f"  IdentityFile {h.key_file}", "  IdentitiesOnly yes"]
        lines += [f"  UserKnownHostsFile {h.known_hosts}", "  StrictHostKeyChecking yes"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n" if blocks else ""


def ansible(hosts: Iterable[Host], env: str) -> str:
    """A YAML inventory (Ansible's ``yaml`` inventory plugin) with each host's connection vars
    and its groups as children of ``all``."""
    import yaml

    all_hosts: dict[str, Any] = {}
    children: dict[str, Any] = {}
    for h in hosts:
        if h.address is None:
            continue
        host_vars = {"ansible_host": h.address, "ansible_user": h.user,
                     "ansible_ssh_common_args": f"-o UserKnownHostsFile={h.known_hosts} "
                                                "-o StrictHostKeyChecking=yes",
                     "ivc_server_id": h.id}
        if h.key_file:
            host_vars["ansible_ssh_private_key_file"] = h.key_file
        all_hosts[h.name] = host_vars
        for group in h.groups:
            children.setdefault(group, {"hosts": {}})["hosts"][h.name] = None
    inventory = {"all": {"hosts": all_hosts, "children": children}}
    return f"# ivc inventory of environment {env}\n" + yaml.safe_dump(
        inventory, sort_keys=False, default_flow_style=False)


def groups_of(env: str, metadata: dict[str, str]) -> list[str]:
    """Ansible group names (letters, digits, ``_``): the env, ``role``, ``groups`` (a,b)."""
    raw = [env, metadata.get("role", ""), *metadata.get("groups", "").split(",")]
    return list(dict.fromkeys(GROUP_NAME.sub("_", g.strip()) for g in raw if g.strip()))


def inventory(cloud: Any, spec: Spec, *, fmt: str = "ssh-config", key_file: str | None = None,
              known_hosts: Path | None = None) -> InventoryResult:
    """Every managed server of the environment (see the module's docstring); three listings
    (servers, ports, floating IPs) and the networks.

    :raises ConfigError: an unknown format.
    """
    from ivc_tasks.steps.status import list_ports

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    known = known_hosts or cloud.shared.known_hosts or Path("known_hosts")
    key_file = key_file or cloud.shared.ssh_key
    prefetch(cloud, managed_servers, list_ports, list_floating_ips, list_networks)
    ports = list_ports(cloud)
    fips, networks = list_floating_ips(cloud), list_networks(cloud)
    result = InventoryResult(env=cloud.env, format=fmt)
    by_name: dict[str, list[Any]] = {}
    for server in managed_servers(cloud):  # newest generation first
        if server.status == "ACTIVE":
            name = (server.metadata or {}).get(META_NAME) or server.name
            by_name.setdefault(name, []).append(server)
    with_fip = {f.port_id for f in fips if f.port_id}
    for name, servers in by_name.items():
        # mid-rotation: the server that holds the floating IP is the one clients reach
        server = next((s for s in servers if any(p.device_id == s.id and p.id in with_fip
                                                  for p in ports)), servers[0])
        declared = spec.servers.get(name)
        result.hosts.append(Host(
            name=name, id=server.id,
            address=pick_address([p for p in ports if p.device_id == server.id], fips, networks),
            user=declared.user if declared is not None else "debian",
            key_file=key_file, known_hosts=str(known),
            groups=groups_of(cloud.env, server.metadata or {})))
    result.hosts.sort(key=lambda h: h.name)
    return result
