"""Reading and checking a declarations file into the model of ``spec.py``: before any cloud call,
everything the cloud itself would refuse (Nova's names, metadata and public keys; Neutron's
lengths), every file and template named. ``load_spec`` (in ``spec.py``) is the way in.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from ivc_tasks.cloudconfig import (
    JINJA_HEADER,
    SUPPORTED_VERSIONS,
    check_cloud_config,
    declared_final_message,
)
from ivc_tasks.console_log import FinalMessageError
from ivc_tasks.errors import ConfigError, clip_message
from ivc_tasks.errors import clip_repr as _r
from ivc_tasks.hints import did_you_mean, type_name
from ivc_tasks.spec_checks import ChecksReader
from ivc_tasks.spec_model import (
    CINDER_NAME_MAX,
    GLANCE_NAME_MAX,
    NEUTRON_NAME_MAX,
    NOVA_NAME_MAX,
    FileSpec,
    Keypair,
    Server,
    Spec,
)
from ivc_tasks.spec_rules import SecGroupReader
from ivc_tasks.userdata import CLOUD_CONFIG_HEADER, RESERVED_VARS, render_userdata_digest

SERVER_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # one DNS label, lower case
KEYPAIR_NAME = re.compile(r"^[A-Za-z0-9_ -]{1,255}$")  # what every Nova microversion accepts
# Nova's metadata schema (nova/api/validation/parameter_types.py), pattern copied as is: in
# Python's re, "9-_" is the range 0x39-0x5F, so ";<=>?@[\]^" pass too, but "/" or "," do not.
NOVA_METADATA_KEY = re.compile(r"^[a-zA-Z0-9-_:. ]{1,255}$")
PERMISSIONS = re.compile(r"^0?[0-7]{3}$")
RESERVED_METADATA_PREFIX = "ivc_"
METADATA_MAX = 255
PUBLIC_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-", "sk-ssh-ed25519@", "sk-ecdsa-sha2-",
                    "ssh-dss")

TOP_KEYS = ("defaults", "keypairs", "secgroups", "servers")
SERVER_KEYS = ("image", "flavor", "keypair", "security_groups", "networks", "volumes",
               "floating_ip", "config_drive", "userdata", "userdata_vars", "files", "metadata",
               "keep_address", "checks", "ssh_user")
# a volume attaches to one server
DEFAULT_KEYS = tuple(k for k in SERVER_KEYS if k != "volumes") + ("cloud_init_version",)
KEYPAIR_KEYS = ("public_key_file",)
FILE_KEYS = ("path", "source", "permissions", "owner")
MERGED_KEYS = ("userdata_vars", "metadata")


class Loader(SecGroupReader, ChecksReader):
    """Validate one file; ``fail`` raises the one-line ConfigError."""

    def __init__(self, path: Path):
        self.path = path
        self.folder = path.parent

    def fail(self, entry: str, problem: str, fix: str) -> NoReturn:
        message = f"{self.path}: {clip_message(entry, word=80)}: {problem}; {fix}"
        raise ConfigError(clip_message(re.sub(r"\s*\n\s*", " ", message)))

    # -- generic checks -----------------------------------------------------------------------
    def table(self, value: Any, entry: str) -> dict:
        if not isinstance(value, dict):
            fix = "write it as { key = value }" if entry.endswith("]") else \
                f"write it as [{entry}] or {{ key = value }}"
            self.fail(entry, f"expected a table, got {type_name(value)}", fix)
        return value

    def keys(self, table: dict, entry: str, allowed: tuple[str, ...]) -> None:
        for key in table:
            if key not in allowed:
                where = f"{entry}.{key}" if entry else key
                self.fail(where, "unknown key",
                          did_you_mean(key, allowed, otherwise=f"valid keys: {', '.join(allowed)}"))

    def string(self, value: Any, entry: str) -> str:
        if not isinstance(value, str) or not value.strip():
            got = "an empty string" if isinstance(value, str) else type_name(value)
            self.fail(entry, f"expected a non-empty string, got {got}", 'quote it: key = "value"')
        return value.strip()

    def boolean(self, value: Any, entry: str) -> bool:
        if not isinstance(value, bool):
            self.fail(entry, f"expected true or false, got {type_name(value)} {_r(value)}",
                      "write true or false without quotes")
        return value

    def names(self, value: Any, entry: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            self.fail(entry, f"expected a list of names, got {type_name(value)}",
                      'write it as ["name1", "name2"]')
        items = tuple(self.string(v, f"{entry}[{i}]") for i, v in enumerate(value))
        for i, item in enumerate(items):
            if item in items[:i]:
                self.fail(f"{entry}[{i}]", f"{_r(item)} is listed twice", "list it once")
        return items

    def existing_file(self, value: Any, entry: str, what: str) -> Path:
        target = self.folder / self.string(value, entry)
        if not target.is_file():
            self.fail(entry, f"{what} {target} does not exist",
                      f"create it or fix the path (relative to {self.folder})")
        return target

    # -- the file ---------------------------------------------------------------------------
    def load(self, env_name: str) -> Spec:
        try:
            doc = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.fail("spec", "file not found", "create it or point IVC_SPEC at the declarations")
        except IsADirectoryError:
            self.fail("spec", "is a folder, not a file",
                      "point IVC_SPEC at the declarations file (e.g. env/NAME.toml)")
        except UnicodeDecodeError as exc:
            self.fail("spec", f"is not UTF-8 text ({exc.reason} at byte {exc.start})",
                      "save it as UTF-8")
        except tomllib.TOMLDecodeError as exc:
            self.fail("toml", f"invalid TOML: {exc}", "fix the syntax")
        self.keys(doc, "", TOP_KEYS)
        secgroups_raw = self.table(doc.get("secgroups", {}), "secgroups")
        secgroups = {name: self.secgroup(name, raw, secgroups_raw) for name, raw in secgroups_raw.items()}
        keypairs = {name: self.keypair(name, raw)
                    for name, raw in self.table(doc.get("keypairs", {}), "keypairs").items()}
        defaults_raw = self.table(doc.get("defaults", {}), "defaults")
        if "volumes" in defaults_raw:
            self.fail("defaults.volumes", "a volume attaches to one server",
                      "declare volumes in each [servers.NAME]")
        self.keys(defaults_raw, "defaults", DEFAULT_KEYS)
        version = self.cloud_init_version(defaults_raw.pop("cloud_init_version", None))
        defaults = self.server_fields(defaults_raw, "defaults")
        servers = {name: self.server(name, raw, defaults)
                   for name, raw in self.table(doc.get("servers", {}), "servers").items()}
        self.check_volumes_unique(servers)
        spec = Spec(path=self.path, env_name=env_name, keypairs=keypairs, secgroups=secgroups,
                    servers=servers, cloud_init_version=version)
        rendered = {name: self.rendered(spec, s) for name, s in servers.items()}
        return replace(spec, servers=rendered)

    def rendered(self, spec: Spec, server: Server) -> Server:
        """The server with its user_data rendered and checked against cloud-init's schema, and
        ``checks.cloud_init`` decided (True for a ``#cloud-config``, unless said)."""
        userdata, digest = render_userdata_digest(spec, server)
        text = (userdata or b"").decode("utf-8", errors="replace").lstrip("\ufeff")
        lines = text.split("\n", 2)
        is_cloud_config = text.startswith(CLOUD_CONFIG_HEADER) or (
            lines[0].strip() == JINJA_HEADER and len(lines) > 1
            and lines[1].startswith(CLOUD_CONFIG_HEADER))
        if is_cloud_config:
            check_cloud_config(text, version=spec.cloud_init_version, spec_path=self.path,
                               entry=f"servers.{server.name}.userdata",
                               template=server.userdata_template)
        checks = server.checks
        if checks.cloud_init is None:
            checks = replace(checks, cloud_init=is_cloud_config)
        if checks.cloud_init and is_cloud_config:
            checks = replace(checks, final_message=self.final_message(text, server))
        return replace(server, userdata=userdata, userdata_digest=digest, checks=checks)

    def final_message(self, text: str, server: Server) -> str | None:
        """The ``final_message`` the ``cloud_init`` check waits for (None: cloud-init's own)."""
        try:
            return declared_final_message(text)
        except FinalMessageError as exc:
            self.fail(f"servers.{server.name}.userdata: final_message",
                      f"the cloud_init check cannot recognise the line cloud-init prints for "
                      f"it: {exc}", f"set checks.cloud_init = false ([servers.{server.name}"
                      ".checks]) or keep a literal word in final_message (placeholders: "
                      "$version, $timestamp, $datasource, $uptime)")

    def cloud_init_version(self, raw: Any) -> str:
        """``[defaults] cloud_init_version``, else ``IVC_CLOUD_INIT_VERSION``, else 22.4."""
        import os

        entry = "defaults.cloud_init_version"
        if raw is None:
            raw = os.environ.get("IVC_CLOUD_INIT_VERSION") or SUPPORTED_VERSIONS[0]
            entry = "IVC_CLOUD_INIT_VERSION"
        version = self.string(raw, entry) if isinstance(raw, str) else raw
        if version not in (*SUPPORTED_VERSIONS, "none"):
            self.fail(entry, f"no cloud-init schema for version {_r(version)} "
                      f"(ivc ships {', '.join(SUPPORTED_VERSIONS)})",
                      f'use one of {", ".join(SUPPORTED_VERSIONS)}, or "none" to skip the check')
        return version

    # -- keypairs ---------------------------------------------------------------------------
    def keypair(self, name: str, raw: Any) -> Keypair:
        entry = f"keypairs.{name}"
        self.keypair_name(name, entry)
        self.keys(self.table(raw, entry), entry, KEYPAIR_KEYS)
        if "public_key_file" not in raw:
            self.fail(f"{entry}.public_key_file", "is missing", 'set public_key_file = "keys/NAME.pub"')
        key_file = self.existing_file(raw["public_key_file"], f"{entry}.public_key_file",
                                      "public key file")
        text = key_file.read_text(encoding="utf-8", errors="replace").strip()
        if "PRIVATE KEY" in text:
            self.fail(f"{entry}.public_key_file", f"{key_file} holds a PRIVATE key",
                      "point it at the .pub file, and keep the private key out of the repo")
        if not text.startswith(PUBLIC_KEY_TYPES):
            self.fail(f"{entry}.public_key_file", f"{key_file} is not an OpenSSH public key",
                      "use the one-line .pub file made by ssh-keygen")
        problem = public_key_problem(text)
        if problem is not None:
            self.fail(f"{entry}.public_key_file", f"{key_file}: {problem} (Nova would refuse it)",
                      "use the one-line .pub file made by ssh-keygen, unchanged")
        return Keypair(name=name, public_key_file=key_file, public_key=text)

    def keypair_name(self, name: str, entry: str) -> None:
        """Nova's keypair name: 1-255 of letters, digits, '_', '-', ' ' (every microversion),
        without leading or trailing spaces."""
        if not KEYPAIR_NAME.match(name) or name != name.strip():
            self.fail(entry, f"{_r(name)} is not a valid keypair name",
                      "use 1-255 letters, digits, '_', '-' or inner spaces")

    def neutron_text(self, value: Any, entry: str) -> str:
        """A Neutron description: a string of at most 255 characters."""
        if not isinstance(value, str):
            self.fail(entry, f"expected a string, got {type_name(value)}",
                      'quote it: description = "..."')
        if len(value) > NEUTRON_NAME_MAX:
            self.fail(entry, f"is {len(value)} characters, over Neutron's {NEUTRON_NAME_MAX}",
                      "shorten it")
        return value

    def cloud_refs(self, value: Any, entry: str, kind: str, service: str, limit: int,
                   many: bool) -> Any:
        """A name or id of ``kind`` in the cloud (a list of them with ``many``), each at most
        ``limit`` characters: a longer one names nothing ``service`` holds."""
        items = self.names(value, entry) if many else (self.string(value, entry),)
        for i, item in enumerate(items):
            if len(item) > limit:
                self.fail(f"{entry}[{i}]" if many else entry,
                          f"{_r(item)} is longer than the {limit} characters {service} takes "
                          f"for {kind}'s name or id, so it names nothing there",
                          f"write the name or id of {kind} as the cloud shows it")
        return items if many else items[0]

    # -- servers ---------------------------------------------------------------------------
    def server_fields(self, raw: dict, entry: str) -> dict[str, Any]:
        def refs(kind: str, service: str, limit: int, many: bool = False
                 ) -> Callable[[Any, str], Any]:
            return lambda value, entry: self.cloud_refs(value, entry, kind, service, limit, many)

        parsers: dict[str, Callable[[Any, str], Any]] = {
            "image": refs("an image", "Glance", GLANCE_NAME_MAX),
            "flavor": refs("a flavor", "Nova", NOVA_NAME_MAX), "keypair": self.keypair_ref,
            "security_groups": refs("a security group", "Neutron", NEUTRON_NAME_MAX, True),
            "networks": refs("a network", "Neutron", NEUTRON_NAME_MAX, True),
            "volumes": refs("a volume", "Cinder", CINDER_NAME_MAX, True),
            "floating_ip": self.boolean, "config_drive": self.boolean, "keep_address": self.names,
            "userdata": lambda v, e: self.existing_file(v, e, "userdata template"),
            "userdata_vars": self.userdata_vars, "files": self.files, "metadata": self.metadata,
            "checks": self.checks_table, "ssh_user": self.string,
        }
        return {key: parsers[key](value, f"{entry}.{key}") for key, value in raw.items()}

    def server(self, name: str, raw: Any, defaults: dict[str, Any]) -> Server:
        entry = f"servers.{name}"
        if not SERVER_NAME.match(name):
            self.fail(entry, f"{_r(name)} is not a valid server name",
                      "use 1-63 lower-case letters, digits and '-', not starting or ending with '-'")
        self.keys(self.table(raw, entry), entry, SERVER_KEYS)
        own = self.server_fields(raw, entry)
        merged = {**defaults, **own}
        for key in MERGED_KEYS:
            merged[key] = {**defaults.get(key, {}), **own.get(key, {})}
        for key in ("image", "flavor", "networks"):
            if not merged.get(key):
                problem = "is empty" if key in merged else "is missing"
                self.fail(f"{entry}.{key}", problem, f"set {key} in [{entry}] or in [defaults]")
        return Server(
            name=name, image=merged["image"], flavor=merged["flavor"],
            networks=merged["networks"], volumes=merged.get("volumes", ()),
            security_groups=merged.get("security_groups", ()), keypair=merged.get("keypair"),
            floating_ip=merged.get("floating_ip", False), config_drive=merged.get("config_drive"),
            keep_address=self.kept_networks(merged, entry),
            userdata_template=merged.get("userdata"), userdata_vars=merged["userdata_vars"],
            files=merged.get("files", ()), metadata=merged["metadata"],
            checks=self.merged_checks(defaults.get("checks"), own.get("checks")),
            user=merged.get("ssh_user", "debian"),
        )

    def kept_networks(self, merged: dict[str, Any], entry: str) -> tuple[str, ...]:
        """``keep_address``: networks of the server's ``networks``, written the same way."""
        kept = merged.get("keep_address", ())
        for i, ref in enumerate(kept):
            if ref not in merged["networks"]:
                self.fail(f"{entry}.keep_address[{i}]", f"{_r(ref)} is not one of the server's "
                          f"networks ({', '.join(merged['networks'])})",
                          "name a network of its networks list, written the same way")
        return kept

    def keypair_ref(self, value: Any, entry: str) -> str:
        name = self.string(value, entry)
        self.keypair_name(name, entry)
        return name

    def userdata_vars(self, value: Any, entry: str) -> dict[str, Any]:
        for key in self.table(value, entry):
            if key in RESERVED_VARS:
                self.fail(f"{entry}.{key}", "is set by ivc for every template",
                          f"rename it ({', '.join(RESERVED_VARS)} are reserved)")
            if not key.isidentifier():
                self.fail(f"{entry}.{key}", "is not usable as a template variable",
                          "use letters, digits and '_', not starting with a digit")
        return dict(value)

    def metadata(self, value: Any, entry: str) -> dict[str, str]:
        for key, item in self.table(value, entry).items():
            where = f"{entry}.{key}"
            if key.lower().startswith(RESERVED_METADATA_PREFIX):
                self.fail(where, f"keys starting with {_r(RESERVED_METADATA_PREFIX)} are reserved for ivc",
                          "rename the key")
            if not isinstance(item, str):
                self.fail(where, f"expected a string, got {type_name(item)}",
                          f'quote it: {clip_message(key, word=80)} = "{clip_message(str(item), word=80)}"')
            if not key or len(key) > METADATA_MAX:
                self.fail(where, f"the key is {len(key)} characters; Nova takes keys of "
                          f"1-{METADATA_MAX} characters", "shorten it")
            if not NOVA_METADATA_KEY.fullmatch(key):
                bad = sorted({c for c in key if not NOVA_METADATA_KEY.fullmatch(c)})
                self.fail(where, f"Nova refuses this metadata key (character(s) "
                          f"{_r(''.join(bad))})", "use letters, digits, '-', '_', ':', '.' "
                          "and spaces")
            if len(item) > METADATA_MAX:
                self.fail(where, f"the value is {len(item)} characters; Nova takes keys of "
                          f"1-{METADATA_MAX} characters and values of at most {METADATA_MAX}",
                          "shorten it")
        return dict(value)

    def files(self, value: Any, entry: str) -> tuple[FileSpec, ...]:
        if not isinstance(value, list):
            self.fail(entry, f"expected a list of files, got {type_name(value)}",
                      'write files = [ { path = "/etc/motd", source = "files/motd" } ]')
        out: list[FileSpec] = []
        for i, raw in enumerate(value):
            where = f"{entry}[{i}]"
            self.keys(self.table(raw, where), where, FILE_KEYS)
            for key in ("path", "source"):
                if key not in raw:
                    self.fail(f"{where}.{key}", "is missing", f"set {key} for every file")
            target = self.string(raw["path"], f"{where}.path")
            if not target.startswith("/"):
                self.fail(f"{where}.path", f"{_r(target)} is not an absolute path", 'write e.g. "/etc/motd"')
            if any(f.path == target for f in out):
                self.fail(f"{where}.path", f"{_r(target)} is declared twice", "declare each path once")
            source = self.folder / self.string(raw["source"], f"{where}.source")
            is_folder = source.is_dir()
            permissions = raw.get("permissions", None if is_folder else "0644")
            if permissions is not None and (not isinstance(permissions, str)
                                            or not PERMISSIONS.match(permissions)):
                self.fail(f"{where}.permissions", f"{_r(permissions)} is not an octal mode",
                          'quote it: permissions = "0644"')
            owner = raw.get("owner")
            out.append(FileSpec(
                path=target,
                source=source if is_folder else
                self.existing_file(raw["source"], f"{where}.source", "source file"),
                permissions=None if permissions is None else permissions.rjust(4, "0"),
                owner=None if owner is None else self.string(owner, f"{where}.owner"),
            ))
        return tuple(out)

    def check_volumes_unique(self, servers: Mapping[str, Server]) -> None:
        seen: dict[str, str] = {}
        for server in servers.values():
            for volume in server.volumes:
                if volume in seen:
                    self.fail(f"servers.{server.name}.volumes", f"{_r(volume)} is also a volume of "
                              f"servers.{seen[volume]}", "a volume attaches to one server: keep it on one")
                seen[volume] = server.name


def public_key_problem(text: str) -> str | None:
    """Return why Nova would refuse ``text`` as a keypair's public key, else None.

    Nova (``nova.crypto.generate_fingerprint``) loads the key with ``cryptography``'s
    ``load_ssh_public_key`` (which checks the base64 and that the type inside it matches the
    type in front), then base64-decodes its second space-separated field; so does this.
    """
    import base64
    import binascii

    from cryptography.hazmat.primitives import serialization

    if "\n" in text or "\r" in text:
        return "holds more than one line (one key per file)"
    try:
        serialization.load_ssh_public_key(text.encode("utf-8"))
    except (ValueError, TypeError) as exc:
        return f"not a valid OpenSSH public key ({clip_message(str(exc), word=80, limit=160)})"
    except Exception as exc:  # noqa: BLE001 (cryptography's UnsupportedAlgorithm and the like)
        return f"not a public key Nova can read ({type(exc).__name__})"
    try:
        base64.b64decode(text.split(" ")[1], validate=False)
    except (IndexError, binascii.Error):
        return "its key data is not separated from its type by one space"
    return None
