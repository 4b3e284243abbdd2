"""The declaration model: what a declarations file says (keypairs, security groups, servers),
as plain frozen data, and the cloud's name limits it is checked against.

``spec.load_spec`` builds it (reading and checking in ``spec_loader.py`` and ``spec_rules.py``);
this module imports nothing of ivc, so that every layer may use the model and no operation can
creep into it (a unit test walks the imports).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The longest name each service takes, as read in its own code (the versions the local cloud
# runs): a declared reference longer than that names nothing, so it is refused before any
# request (a 10 MB image name used to reach Glance and come back as HTTP 414).
GLANCE_NAME_MAX = 255  # glance/api/v2/images.py: the image schema's name, maxLength 255
NOVA_NAME_MAX = 255  # nova/api/validation/parameter_types.py `name` (flavors), maxLength 255
NEUTRON_NAME_MAX = 255  # neutron_lib/db/constants.py NAME_FIELD_SIZE: names and descriptions
CINDER_NAME_MAX = 255  # cinder/api/validation/validators.py: a volume's name, max_length 255


@dataclass(frozen=True)
class Rule:
    """One declared security group rule, in Neutron's terms.

    ``protocol`` is what is sent to Neutron (a lower-case name or a number string; None = any).
    ``port_range_min``/``max`` hold the ports, or the ICMP type/code. ``remote_group`` is the
    NAME of a declared group. ``description`` is not part of the rule's identity.
    """

    direction: str = "ingress"
    ethertype: str = "IPv4"
    protocol: str | None = None
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group: str | None = None
    description: str = ""


@dataclass(frozen=True)
class SecGroup:
    """A declared security group and its rules.

    ``default_egress``: whether Neutron's two default egress rules (IPv4 and IPv6, any) are part
    of the group; None (not set) means yes unless egress rules are declared, which replace them
    (``secgroup_rules.default_egress_wanted``).
    """

    name: str
    description: str = ""
    rules: tuple[Rule, ...] = ()
    default_egress: bool | None = None


@dataclass(frozen=True)
class Keypair:
    """A keypair ivc ensures from a public key file (read at load time)."""

    name: str
    public_key_file: Path
    public_key: str


@dataclass(frozen=True)
class FileSpec:
    """A file embedded in a server's user_data (cloud-init ``write_files``).

    ``source`` may be a folder: every file under it lands under ``path`` (see
    ``userdata.write_files_entries``); ``permissions`` None (a folder's default) keeps each
    file's own mode.
    """

    path: str
    source: Path
    permissions: str | None = "0644"
    owner: str | None = None


@dataclass(frozen=True)
class Checks:
    """What makes a server "working" (``[servers.NAME.checks]``, ``[defaults.checks]``).

    ``cloud_init`` None: not said; the loader decides (True for a ``#cloud-config`` user_data).
    ``tcp`` ports, ``http`` URLs and ``command`` lines keep their placeholders (``{address}``,
    ``{name}``, ``{id}``), filled in by ``steps/checks.py`` for a server. ``timeout`` and
    ``interval`` are seconds. ``final_message``: the user_data's own (its line replaces
    cloud-init's "finished at" line), set by the loader. See docs/checks.md.
    """

    cloud_init: bool | None = None
    tcp: tuple[int, ...] = ()
    http: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    timeout: float = 300.0
    interval: float = 5.0
    final_message: str | None = None

    @property
    def any(self) -> bool:
        """Whether anything is to be checked."""
        return bool(self.cloud_init or self.tcp or self.http or self.command)


@dataclass(frozen=True)
class Server:
    """A declared server, with ``[defaults]`` applied and its user_data rendered.

    ``config_drive`` None means "decide from the networks" (see ``needs_config_drive``).
    ``userdata_vars`` already merges the defaults' and the server's.
    """

    name: str
    image: str
    flavor: str
    networks: tuple[str, ...]
    volumes: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    keypair: str | None = None
    floating_ip: bool = False
    keep_address: tuple[str, ...] = ()  # networks (as in ``networks``) whose address a rotate keeps
    config_drive: bool | None = None
    userdata_template: Path | None = None
    userdata_vars: Mapping[str, Any] = field(default_factory=dict)
    files: tuple[FileSpec, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    userdata: bytes | None = None
    userdata_digest: str | None = field(default=None, compare=False)  # canonical; set on load
    checks: Checks = field(default_factory=Checks)
    user: str = "debian"  # the login user (inventory, ssh); ``ssh_user`` in the declarations


@dataclass(frozen=True)
class Spec:
    """Everything one spec file declares."""

    path: Path
    env_name: str
    keypairs: Mapping[str, Keypair] = field(default_factory=dict)
    secgroups: Mapping[str, SecGroup] = field(default_factory=dict)
    servers: Mapping[str, Server] = field(default_factory=dict)
    cloud_init_version: str = "22.4"  # the schema the cloud-configs are checked against


def needs_config_drive(network_is_external: list[bool], override: bool | None) -> bool:
    """Decide whether a server gets a config drive.

    :param network_is_external: for each of the server's networks, whether it is external.
    :param override: the server's ``config_drive`` setting; when not None it wins.
    :returns: True when no network of the server is external (a private-only server cannot
        reach a metadata service through a router of ours).
    """
    if override is not None:
        return override
    return not any(network_is_external)
