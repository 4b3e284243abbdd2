"""Render a server's user_data: its Jinja template plus embedded files, within Nova's size limit.

The template context is ``defaults.userdata_vars | server.userdata_vars`` plus ``server`` (the
server's name), ``env`` (the environment's name) and ``metadata`` (the server's user metadata).
Declared ``files`` become cloud-init ``write_files`` entries (``encoding: gz+b64``), so a server
with files needs ``#cloud-config`` user_data. Output is deterministic (gzip without a timestamp),
so ``userdata_sha256`` can detect a change.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ivc_tasks.errors import ConfigError, clip_message
from ivc_tasks.errors import clip_repr as _r

if TYPE_CHECKING:
    from ivc_tasks.spec import FileSpec, Server, Spec

USERDATA_LIMIT = 65535  # bytes after base64 (Nova)
CLOUD_CONFIG_HEADER = "#cloud-config"
RESERVED_VARS = ("server", "env", "metadata")


def userdata_sha256(data: bytes | None) -> str:
    """Return the SHA-256 hex digest of rendered user_data (of b"" when there is none)."""
    return hashlib.sha256(data or b"").hexdigest()


def base64_size(data: bytes) -> int:
    """Return how many bytes ``data`` takes once base64-encoded."""
    return 4 * ((len(data) + 2) // 3)


def gzip_b64(data: bytes) -> str:
    """Return ``data`` gzipped (with no timestamp, so the output is stable) then base64-encoded."""
    return base64.b64encode(gzip.compress(data, mtime=0)).decode("ascii")


def write_files_entry(file: FileSpec) -> dict[str, Any]:
    """Return the cloud-init ``write_files`` entry that writes one declared file."""
    try:
        data = file.source.read_bytes()
    except OSError as exc:
        raise ConfigError(clip_message(f"{file.source}: cannot read the file for {file.path}: "
                                       f"{exc.strerror or exc}")) from None
    entry: dict[str, Any] = {
        "path": file.path,
        "encoding": "gz+b64",
        "content": gzip_b64(data),
        "permissions": file.permissions,
    }
    if file.owner:
        entry["owner"] = file.owner
    return entry


def render_userdata(spec: Spec, server: Server) -> bytes | None:
    """Render one server's user_data; None when it declares neither a template nor files.

    :raises ConfigError: template missing or invalid, undefined variable, files without
        ``#cloud-config``, invalid cloud-config YAML, or a result over the 65535-byte limit.
    """
    entry = f"servers.{server.name}.userdata"
    if server.userdata_template is None and not server.files:
        return None
    if server.userdata_template is None:
        text = CLOUD_CONFIG_HEADER + "\n"
    else:
        context = {**server.userdata_vars, "server": server.name, "env": spec.env_name,
                   "metadata": dict(server.metadata)}
        text = _render_template(spec.path, entry, server.userdata_template, context)
    is_cloud_config = text.lstrip("\ufeff").startswith(CLOUD_CONFIG_HEADER)
    if server.files and not is_cloud_config:
        _fail(spec.path, f"servers.{server.name}.files",
              f"files need #cloud-config user_data but {server.userdata_template} renders "
              "something else", f"start the template with a '{CLOUD_CONFIG_HEADER}' line "
              "or drop 'files'")
    if is_cloud_config:
        text = _with_files(spec.path, entry, text, server.files)
    data = text.encode("utf-8")
    size = base64_size(data)
    if size > USERDATA_LIMIT:
        _fail(spec.path, entry,
              f"user_data is {size} bytes after base64, over Nova's limit of {USERDATA_LIMIT}",
              "shrink the template or the embedded files (or fetch large files at boot)")
    return data


def _render_template(spec_path: Path, entry: str, template: Path, context: dict) -> str:
    import jinja2  # noqa: PLC0415 (keep `invoke --list` light)

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template.parent)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    try:
        return env.get_template(template.name).render(context)
    except jinja2.TemplateNotFound as exc:
        _fail(spec_path, entry, f"template {template}: cannot find {_r(exc.name)}",
              "create the file or fix the path (relative to the spec file's folder)")
    except jinja2.UndefinedError as exc:
        match = re.search(r"'([^']+)' is undefined", str(exc))
        what = f"variable {_r(match.group(1))}" if match else str(exc)
        _fail(spec_path, entry, f"template {template} uses undefined {what}",
              f"add it to {entry}_vars or defaults.userdata_vars")
    except jinja2.TemplateSyntaxError as exc:
        _fail(spec_path, entry, f"template {template} line {exc.lineno}: {exc.message}",
              "fix the Jinja syntax")
    except jinja2.TemplateError as exc:
        _fail(spec_path, entry, f"template {template}: {exc}", "fix the template")
    except UnicodeDecodeError as exc:
        _fail(spec_path, entry, f"template {template} is not UTF-8 text ({exc.reason} at byte "
              f"{exc.start})", "save it as UTF-8")
    except OSError as exc:
        _fail(spec_path, entry, f"template {template}: cannot read "
              f"{exc.filename or template}: {exc.strerror or exc}", "fix the path or permissions")
    except Exception as exc:  # noqa: BLE001 (an expression that raises at render time)
        _fail(spec_path, entry, f"template {template}{_template_line(exc, template)} raised "
              f"{type(exc).__name__}: {exc}", "fix the template")
    raise AssertionError("unreachable")  # pragma: no cover


def _template_line(exc: BaseException, template: Path) -> str:
    """`` line N`` where the template raised (Jinja maps its frames back to the template)."""
    import traceback  # noqa: PLC0415

    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__)
             if frame.filename == str(template) or frame.filename.endswith(f"/{template.name}")]
    return f" line {lines[-1]}" if lines else ""


def _with_files(spec_path: Path, entry: str, text: str, files: tuple[FileSpec, ...]) -> str:
    """Check cloud-config YAML and append the declared files to its ``write_files``."""
    import yaml  # noqa: PLC0415

    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        _fail(spec_path, entry, f"rendered #cloud-config is not valid YAML: {exc}",
              "fix the template (quote values with the tojson filter)")
    config = {} if config is None else config
    if not isinstance(config, dict):
        _fail(spec_path, entry, "rendered #cloud-config is not a YAML mapping",
              "make the template a mapping of cloud-init modules")
    if not files:
        return text
    write_files = config.setdefault("write_files", [])
    if not isinstance(write_files, list):
        _fail(spec_path, entry, "the template's write_files is not a list",
              "make write_files a list or drop it")
    write_files.extend(write_files_entry(f) for f in files)
    body = yaml.dump(config, Dumper=_block_dumper(), sort_keys=False, default_flow_style=False,
                     allow_unicode=True)
    return f"{CLOUD_CONFIG_HEADER}\n{body}"


def _block_dumper() -> type:
    import yaml  # noqa: PLC0415

    class BlockDumper(yaml.SafeDumper):
        """Dump multi-line strings as literal blocks, so the user_data stays readable."""

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    BlockDumper.add_representer(str, text)
    return BlockDumper


def _fail(path: Path, entry: str, problem: str, fix: str) -> NoReturn:
    raise ConfigError(clip_message(re.sub(r"\s*\n\s*", " ", f"{path}: {entry}: {problem}; {fix}")))
