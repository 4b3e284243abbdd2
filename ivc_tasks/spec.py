"""The declarations (keypairs, security groups, servers), parsed and validated before any cloud call.

``load_spec`` is the way in. The model is in ``spec_model.py`` (its names are importable from
here too); the reading and checking in ``spec_loader.py`` (servers, keypairs, files) and
``spec_rules.py`` (security groups and their rules). Imports point one way: this module ->
spec_loader -> spec_rules, userdata -> spec_model (which imports nothing of ivc).

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

from pathlib import Path

from ivc_tasks.errors import ConfigError, clip, clip_message
from ivc_tasks.spec_loader import Loader
from ivc_tasks.spec_model import (
    CINDER_NAME_MAX,
    GLANCE_NAME_MAX,
    NEUTRON_NAME_MAX,
    NOVA_NAME_MAX,
    Checks,
    FileSpec,
    Keypair,
    Rule,
    SecGroup,
    Server,
    Spec,
    needs_config_drive,
)

__all__ = ["CINDER_NAME_MAX", "GLANCE_NAME_MAX", "NEUTRON_NAME_MAX", "NOVA_NAME_MAX", "Checks", "FileSpec",
           "Keypair", "Rule", "SecGroup", "Server", "Spec", "load_spec", "needs_config_drive"]


def load_spec(path: Path, *, env_name: str) -> Spec:
    """Read, validate and render a spec file.

    :param path: the TOML declarations file.
    :param env_name: the environment's name (``env`` in user_data templates).
    :raises ConfigError: anything invalid, named by file and entry, before any cloud call.
    """
    path = Path(path)
    try:
        return Loader(path).load(env_name)
    except ConfigError:
        raise
    except OSError as exc:  # a path too long, a folder where a file was expected, no permission
        name = exc.filename if exc.filename is not None else path
        what = "it" if str(name) == str(path) else clip(str(name))
        raise ConfigError(clip_message(f"{clip(str(path))}: cannot read {what}: "
                                       f"{exc.strerror or exc}; fix the path or the file's "
                                       "permissions")) from None
    except Exception as exc:  # noqa: BLE001 (never a traceback: name the file)
        raise ConfigError(clip_message(f"{path}: {type(exc).__name__}: {exc}; fix the "
                                       "declarations")) from None
