"""Credentials: which cloud entry, from which clouds file, with which secret, checked before the
first request (a missing password is a clear error, never keystoneauth's bare exception; a
password is asked for only at an interactive terminal outside CI).

openstacksdk is imported inside functions only, so that ``invoke --list`` stays fast.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ivc_tasks.errors import ConfigError, clip, clip_repr

if TYPE_CHECKING:
    from ivc_tasks.settings import Settings


@contextlib.contextmanager
def _environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Set ``variables`` in os.environ for the duration of the block, then restore it."""
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


MISSING_SECRET_FIX = ("set OS_PASSWORD (environment or env file), add auth.password to the entry "
                      "(or to secure.yaml), or use an application credential "
                      "(auth_type: v3applicationcredential)")
ENV_CLOUD = "envvars"  # openstacksdk's name for the cloud made of OS_* variables


@dataclass
class Credentials:
    """What ``resolve_credentials`` found: the cloud region to connect with, the entry's name,
    the file it came from (None for ``OS_*`` variables), and where the secret came from (for
    the log; never the secret itself)."""

    region: Any
    name: str
    file: str | None
    source: str

    @property
    def where(self) -> str:
        if self.file is None:
            return f"cloud {self.name!r} (the OS_* variables)"
        return f"cloud entry {self.name!r} in {self.file}"


def interactive() -> bool:
    """Return True when ivc may prompt: stdin is a terminal and ``CI`` is not set."""
    import sys

    try:
        tty = sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        tty = False
    return tty and not os.environ.get("CI")


def _getpass(text: str) -> str:
    import getpass

    return getpass.getpass(text)


def clouds_files() -> list[str]:
    """The clouds.yaml files openstacksdk reads, in its order (``OS_CLIENT_CONFIG_FILE`` first)."""
    from openstack.config import loader

    files = list(loader.CONFIG_FILES)
    override = os.environ.get("OS_CLIENT_CONFIG_FILE")
    return [override, *files] if override else files


def check_clouds_file(settings: Settings) -> str | None:
    """Return the clouds file openstacksdk will use (None if there is none), after checking it.

    openstacksdk skips a malformed file with a warning (then says the cloud "was not found");
    this names the file, the YAML problem and its line instead.

    :raises ConfigError: ``OS_CLIENT_CONFIG_FILE`` names a file that does not exist, or the
        file is not readable, not UTF-8, not YAML, or not a mapping.
    """
    import yaml

    override = os.environ.get("OS_CLIENT_CONFIG_FILE")
    if override:
        try:
            exists, is_file = os.path.exists(override), os.path.isfile(override)
        except (OSError, ValueError):
            exists = is_file = False
        if not exists or not is_file:
            problem = "does not exist" if not exists else "is not a file"
            raise ConfigError(f"{settings.env_file}: OS_CLIENT_CONFIG_FILE: the clouds file "
                              f"{clip(override)} {problem}; create it or fix the path") from None
    for path in clouds_files():
        try:
            if not os.path.isfile(path):
                continue
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except PermissionError:
            continue  # openstacksdk skips it too
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                              "save the clouds file as UTF-8") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{path}: not valid YAML: {problem}{line}; fix the clouds "
                              "file (openstacksdk would skip it)") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the clouds file: {exc.strerror}") from None
        if data is not None and not (isinstance(data, dict) and
                                     isinstance(data.get("clouds", {}), dict)):
            raise ConfigError(f"{path}: not a clouds file (expected a mapping with a 'clouds' "
                              "key of cloud entries); fix the file")
        return path
    return None


def resolve_credentials(settings: Settings, *, prompt: Callable[[str], str] | None = None,
                        password_origin: str = "the environment") -> Credentials:
    """Find the cloud entry and its credentials, without any request (run inside the env vars).

    Longer than most functions here: one check after another, in the order a user meets the
    problems (file, entry, auth type, secret), each with its own one-line message.

    Precedence for a password: the entry's ``auth.password`` (clouds.yaml, or secure.yaml beside
    it), then ``OS_PASSWORD``, then (at an interactive terminal only) one prompt. With no
    ``OS_CLOUD`` and ``OS_AUTH_URL`` etc. set, the ``OS_*`` variables are the cloud.

    :raises ConfigError: naming the entry, the file and the fix.
    """
    import openstack
    from keystoneauth1 import exceptions as ksa
    from keystoneauth1 import loading

    path = check_clouds_file(settings)
    try:
        config = openstack.config.OpenStackConfig(app_name="ivc")
    except openstack.exceptions.ConfigException as exc:
        raise ConfigError(f"{path or 'clouds.yaml'}: {clip(str(exc))}") from None
    name = settings.os_cloud or config.default_cloud
    entries = sorted(k for k in config.cloud_config.get("clouds", {}) if k != ENV_CLOUD)
    if settings.os_cloud and settings.os_cloud not in config.cloud_config.get("clouds", {}):
        where = f"{settings.env_file}: OS_CLOUD={clip_repr(settings.os_cloud)}"
        if path is None:
            raise ConfigError(f"{where}: no clouds file found (looked for {', '.join(clouds_files())}); "
                              "create one with that entry, or set OS_CLIENT_CONFIG_FILE")
        have = f" (it has: {', '.join(entries)})" if entries else " (it has none)"
        raise ConfigError(f"{where}: no such cloud entry in {path}{have}; fix OS_CLOUD or the "
                          "clouds.yaml entry")
    if not name or name == "defaults":
        raise ConfigError(f"{settings.env_file}: no cloud configured: set OS_CLOUD to an entry of "
                          "clouds.yaml, or the OS_AUTH_URL, OS_USERNAME... variables")
    file = None if name == ENV_CLOUD else path
    creds = Credentials(region=None, name=name, file=file, source="")
    try:
        raw = config.get_one(cloud=name, validate=False).config
        auth_type = raw.get("auth_type") or "password"
        options = loading.get_plugin_loader(auth_type).get_options()
    except ksa.NoMatchingPlugin:
        raise ConfigError(f"{creds.where}: unknown auth_type {clip(str(raw.get('auth_type')))}; "
                          "use password or v3applicationcredential") from None
    except (openstack.exceptions.ConfigException, ksa.ClientException) as exc:
        raise ConfigError(f"{creds.where}: {clip(str(exc))}; fix the cloud entry") from None
    auth = raw.get("auth") or {}
    extra: dict[str, Any] = {}
    secrets = [o.dest for o in options if o.secret and (o.prompt or o.required)]
    source = f"{auth_type}, no secret needed"
    for dest in secrets:
        if auth.get(dest) or raw.get(dest):
            source = f"{auth_type}, {dest} from " + (
                "the OS_* variables" if file is None else "the entry (clouds.yaml/secure.yaml)")
            continue
        if dest == "password" and os.environ.get("OS_PASSWORD"):
            extra[dest] = os.environ["OS_PASSWORD"]
            source = f"{auth_type}, password from OS_PASSWORD ({password_origin})"
            continue
        what = f"no {dest.replace('_', ' ')} (auth_type {auth_type})"
        asked = next((o.prompt for o in options if o.dest == dest and o.prompt), None)
        if asked is None:
            raise ConfigError(f"{creds.where}: {what}; add auth.{dest} to the entry (or to "
                              "secure.yaml beside it)")
        ask = prompt if prompt is not None else (_getpass if interactive() else None)
        if ask is None:
            raise ConfigError(f"{creds.where}: {what}, and ivc asks only at a terminal (stdin "
                              f"is not one, or CI is set); {MISSING_SECRET_FIX}")
        value = ask(f"{asked.rstrip(': ')} for cloud {name} ({file or 'OS_* variables'}): ")
        if not value:
            raise ConfigError(f"{creds.where}: nothing given at the prompt; {MISSING_SECRET_FIX}")
        extra[dest] = value
        source = f"{auth_type}, {dest} typed at the prompt"
    try:
        creds.region = config.get_one(cloud=name, auth=extra) if extra else config.get_one(cloud=name)
    except ksa.MissingRequiredOptions as exc:
        missing = ", ".join(o.dest for o in exc.options)
        raise ConfigError(f"{creds.where}: missing {missing} (auth_type {auth_type}); add them to "
                          "the entry's auth (or the matching OS_* variables)") from None
    except (openstack.exceptions.ConfigException, ksa.ClientException) as exc:
        raise ConfigError(f"{creds.where}: {clip(str(exc))}; fix the cloud entry") from None
    creds.source = source
    return creds


_REAL_ENVIRON: dict[str, str] = dict(os.environ)


def _real_environ() -> Mapping[str, str]:
    """The process environment as it was before ``_environment`` applied the env file."""
    return _REAL_ENVIRON
