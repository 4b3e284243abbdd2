"""The declarations (keypairs, security groups, servers), parsed and validated before any cloud call.

The model is here; the reading and checking in ``spec_loader.py`` (servers, keypairs, files)
and ``spec_rules.py`` (security groups and their rules).

Every error is a ConfigError on one line: ``<file>: <entry>: <problem>; <how to fix>``, where the
entry is a dotted path such as ``servers.web1.networks`` or ``secgroups.web.rules[0].ports``.
Paths in the file (templates, files, public keys) are relative to the spec file's folder.
Lists given in a server replace those of ``[defaults]``; ``userdata_vars`` and ``metadata`` merge.

The checks mirror the cloud's own rules for everything ivc sends, so that a declaration the cloud
would refuse fails here, before any change (a deploy that creates the security groups and then
gets Nova's 400 on the server would be a half-made change): Nova's metadata keys and values,
keypair names and public keys (parsed as Nova parses them, with ``cryptography``), Neutron's
names and descriptions (255 characters), rule fields. Values quoted in messages are cut to 80
characters (their length is given); any other failure while reading a file or rendering a
template is a ConfigError naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivc_tasks.errors import ConfigError, clip_message

NEUTRON_NAME_MAX = 255  # security group names and descriptions, rule descriptions


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


@dataclass(frozen=True)
class Spec:
    """Everything one spec file declares."""

    path: Path
    env_name: str
    keypairs: Mapping[str, Keypair] = field(default_factory=dict)
    secgroups: Mapping[str, SecGroup] = field(default_factory=dict)
    servers: Mapping[str, Server] = field(default_factory=dict)


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


def load_spec(path: Path, *, env_name: str) -> Spec:
    """Read, validate and render a spec file.

    :param path: the TOML declarations file.
    :param env_name: the environment's name (``env`` in user_data templates).
    :raises ConfigError: anything invalid, named by file and entry, before any cloud call.
    """
    path = Path(path)
    try:
        from ivc_tasks.spec_loader import Loader  # noqa: PLC0415 (it imports this model)

        return Loader(path).load(env_name)
    except ConfigError:
        raise
    except OSError as exc:  # a path too long, a folder where a file was expected, no permission
        name = exc.filename if exc.filename is not None else path
        raise ConfigError(clip_message(f"{path}: cannot read {name}: {exc.strerror or exc}; fix the "
                                       "path or the file's permissions")) from None
    except Exception as exc:  # noqa: BLE001 (never a traceback: name the file)
        raise ConfigError(clip_message(f"{path}: {type(exc).__name__}: {exc}; fix the "
                                       "declarations")) from None
