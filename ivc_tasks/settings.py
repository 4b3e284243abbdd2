"""Settings: one env file plus the real environment, validated once into a frozen Settings.

``IVC_ENV`` (default ``local``) picks ``<root>/env/<name>.env``; a variable set in the real
environment wins over the file. ``IVC_ROOT`` moves the root; by default it is the nearest folder,
from the current one upward, that holds an ``env/`` folder (a checkout of ivc, or a user's own
repository of declarations with ivc pip-installed), else the current folder.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ivc_tasks.errors import ConfigError, clip, clip_repr

DEFAULT_ENV = "local"
SECRET_MARKERS = ("PASSWORD", "SECRET", "TOKEN")
REDACTED = "***"

# variable -> (Settings field, default, type)
_NUMBERS: dict[str, tuple[str, float, type]] = {
    "IVC_BOOT_TIMEOUT": ("boot_timeout", 300.0, float),
    "IVC_VOLUME_TIMEOUT": ("volume_timeout", 120.0, float),
    "IVC_DELETE_TIMEOUT": ("delete_timeout", 120.0, float),
    "IVC_STOP_TIMEOUT": ("stop_timeout", 120.0, float),
    "IVC_POLL_INTERVAL": ("poll_interval", 0.5, float),
    "IVC_RETRY_ATTEMPTS": ("retry_attempts", 6, int),
    "IVC_RETRY_MAX_SECONDS": ("retry_max_seconds", 120.0, float),
    "IVC_LOCK_TTL": ("lock_ttl", 3600.0, float),
    "IVC_PARALLEL": ("parallel", 1, int),  # deploy and rotate: servers at once (--parallel)
}
DEFAULTS: dict[str, float] = {attr: default for attr, default, _ in _NUMBERS.values()}
_ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # 64 at most: names go into
# Nova metadata and the lock keypair's name (255 characters with the server's name)


def is_secret(key: str) -> bool:
    """Return True if a variable's name says it holds a secret (PASSWORD, SECRET, TOKEN)."""
    upper = key.upper()
    return any(marker in upper for marker in SECRET_MARKERS)


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one run. Durations are in seconds.

    ``os_vars`` holds every ``OS_*`` variable (file, then environment); ``values`` every variable
    of the env file plus the ``IVC_*``/``OS_*`` ones of the environment. Both may hold secrets,
    so they stay out of ``repr``: print ``redacted()`` instead.
    """

    env: str
    root: Path
    env_file: Path
    spec_path: Path
    os_cloud: str | None
    boot_timeout: float = DEFAULTS["boot_timeout"]
    volume_timeout: float = DEFAULTS["volume_timeout"]
    delete_timeout: float = DEFAULTS["delete_timeout"]
    stop_timeout: float = DEFAULTS["stop_timeout"]
    poll_interval: float = DEFAULTS["poll_interval"]
    retry_attempts: int = int(DEFAULTS["retry_attempts"])
    retry_max_seconds: float = DEFAULTS["retry_max_seconds"]
    lock_ttl: float = DEFAULTS["lock_ttl"]
    parallel: int = int(DEFAULTS["parallel"])
    floating_network: str | None = None
    os_vars: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    values: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def redacted(self) -> dict[str, Any]:
        """Return the settings as a dict safe to print: secret-looking values show ``***``."""
        def mask(mapping: Mapping[str, str]) -> dict[str, str]:
            return {k: REDACTED if is_secret(k) else v for k, v in sorted(mapping.items())}

        out: dict[str, Any] = {
            "env": self.env,
            "root": str(self.root),
            "env_file": str(self.env_file),
            "spec_path": str(self.spec_path),
            "os_cloud": self.os_cloud,
            "floating_network": self.floating_network,
        }
        out.update({attr: getattr(self, attr) for attr, _, _ in _NUMBERS.values()})
        out["os_vars"] = mask(self.os_vars)
        out["values"] = mask(self.values)
        return out


def find_root(start: Path | None = None) -> Path:
    """Return the nearest folder, from ``start`` (default: the current folder) upward, that holds
    an ``env/`` folder; ``start`` itself when none does.

    :raises OSError: the current folder no longer exists.
    """
    here = (Path.cwd() if start is None else Path(start)).resolve()
    return next((folder for folder in (here, *here.parents) if (folder / "env").is_dir()), here)


def make_settings(env: str = DEFAULT_ENV, *, root: Path | None = None, os_cloud: str | None = None,
                  **fields: Any) -> Settings:
    """Settings built in code rather than read from an env file (tests, benchmarks, a program
    that embeds ivc): ``fields`` are Settings fields (``poll_interval=0``...), the rest their
    defaults; the paths are where ``load_settings`` would look under ``root`` (default: the
    current folder).

    :raises TypeError: a name that is not a Settings field.
    """
    root = Path(root or Path.cwd())
    return Settings(env=env, root=root, env_file=root / "env" / f"{env}.env",
                    spec_path=root / "env" / f"{env}.toml", os_cloud=os_cloud, **fields)


def available_envs(root: Path) -> list[str]:
    """Return the names of the env files under ``<root>/env``, sorted."""
    return sorted(p.stem for p in (root / "env").glob("*.env") if p.is_file())


def load_settings(
    env: str | None = None,
    *,
    root: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the env file and the environment into a validated Settings.

    :param env: the environment name; default ``IVC_ENV``, else ``local``.
    :param root: the project root; default ``IVC_ROOT``, else ``find_root()``.
    :param environ: the real environment (default ``os.environ``); its values win over the file.
    :raises ConfigError: unknown env name or missing env file, or a value that is not valid.
    """
    from dotenv import dotenv_values

    environ = os.environ if environ is None else environ
    root = Path(root or environ.get("IVC_ROOT") or find_root()).resolve()
    name = env or environ.get("IVC_ENV") or DEFAULT_ENV
    env_file = root / "env" / f"{name}.env"
    if not _ENV_NAME.match(name):
        raise ConfigError(
            f"{clip(str(env_file))}: IVC_ENV: {clip_repr(name)} is not an environment name; use "
            f"up to 64 letters, digits, '.', '_' or '-' "
            f"(available: {', '.join(available_envs(root)) or 'none'})"
        )
    if not (root / "env").is_dir():
        raise ConfigError(
            f"{env_file}: IVC_ENV: no env/ folder in {root} or any folder above it; run ivc from "
            f"the folder that holds env/{name}.env (or below it), or set IVC_ROOT to that folder"
        )
    if env_file.is_dir():
        raise ConfigError(f"{env_file}: IVC_ENV: is a folder, not an env file; make it a file of "
                          "KEY=value lines (as env/example.env)")
    if not env_file.is_file():
        raise ConfigError(
            f"{env_file}: IVC_ENV: no env file for environment {name!r}; create it or pick one of: "
            f"{', '.join(available_envs(root)) or 'none (env/ has no *.env file)'}"
        )
    from_file = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    values = {**from_file, **{k: v for k, v in environ.items()
                              if k in from_file or k.startswith(("IVC_", "OS_"))}}

    def source(key: str) -> str:
        return f"{env_file} (overridden by the environment)" if key in environ else str(env_file)

    os_vars = {k: v for k, v in values.items() if k.startswith("OS_")}
    if os_vars.get("OS_CLIENT_CONFIG_FILE"):
        os_vars["OS_CLIENT_CONFIG_FILE"] = str(_under(root, os_vars["OS_CLIENT_CONFIG_FILE"]))
    numbers = {attr: _number(values.get(key), key, default, kind, source(key))
               for key, (attr, default, kind) in _NUMBERS.items()}
    return Settings(
        env=name,
        root=root,
        env_file=env_file,
        spec_path=_under(root, values.get("IVC_SPEC") or f"env/{name}.toml"),
        os_cloud=values.get("OS_CLOUD") or None,
        floating_network=values.get("IVC_FLOATING_NETWORK", "").strip() or None,
        os_vars=MappingProxyType(os_vars),
        values=MappingProxyType(values),
        **numbers,
    )


def _under(root: Path, path: str) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else root / candidate


def _number(raw: str | None, key: str, default: float, kind: type, where: str) -> float:
    """Convert one numeric setting; empty or unset gives the default.

    :raises ConfigError: naming the variable and the file when the value is not valid.
    """
    if raw is None or raw.strip() == "":
        return default
    what = "a whole number" if kind is int else "a number of seconds"
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ConfigError(
            f"{where}: {key}: {clip_repr(raw)} is not {what}; set it to e.g. {default:g} or remove it"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"{where}: {key}: {clip_repr(raw)} must be greater than 0; set it to e.g. {default:g} "
            "or remove it"
        )
    return value
