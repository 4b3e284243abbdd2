"""Render a server's user_data: its Jinja template plus embedded files, within Nova's size limit.

The template context is ``defaults.userdata_vars | server.userdata_vars`` plus ``server`` (the
server's name), ``env`` (the environment's name) and ``metadata`` (the server's user metadata).
Declared ``files`` become cloud-init ``write_files`` entries (``encoding: gz+b64``), so a server
with files needs ``#cloud-config`` user_data.

What ``ivc_userdata`` records is ``userdata_digest``, a hash of a canonical form that does not
depend on the Python that renders: without files, the rendered bytes themselves; with files,
the rendered template and each file's path, mode, owner and the sha256 of its raw content (not
the gzip bytes: Python 3.13's gzip output differs from 3.11's for the same input).
``legacy_digest`` is what earlier ivc recorded (the sha256 of the rendered bytes, gzip
included): a server recorded with it is recognised, and re-recorded in place.

A ``source`` may be a folder: every file under it (recursively, in sorted order) becomes one
entry at the same place under ``path``, with its own mode (``0755`` stays ``0755``) unless
``permissions`` is declared, which then applies to every file. Symlinks to files are read as
files; a symlink to a folder, or anything that is not a regular file, is refused (a loop, a
device). Empty folders are not made (cloud-init writes files). The whole user_data counts
against Nova's 65535 bytes after base64; a tree that passes it is refused as soon as it does,
naming the declarations that weigh most.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import posixpath
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ivc_tasks.errors import ConfigError, clip, clip_message
from ivc_tasks.errors import clip_repr as _r

if TYPE_CHECKING:
    from ivc_tasks.spec_model import FileSpec, Server, Spec

USERDATA_LIMIT = 65535  # bytes after base64 (Nova)
CLOUD_CONFIG_HEADER = "#cloud-config"
RESERVED_VARS = ("server", "env", "metadata")


def userdata_sha256(data: bytes | None) -> str:
    """Return the SHA-256 hex digest of rendered user_data (of b"" when there is none)."""
    return hashlib.sha256(data or b"").hexdigest()


DIGEST_SHORT = 16  # hex digits kept in the ivc_userdata metadata


def canonical_digest(template_text: str | None, files: list[tuple[str, str, str | None, bytes]]
                     ) -> str:
    """The sha256 hex digest of user_data's canonical form (see the module's docstring).

    :param template_text: the rendered template before files were added (None: no user_data).
    :param files: ``(path, mode, owner, raw content)`` of every embedded file, in order.
    """
    if template_text is None:
        return userdata_sha256(None)
    if not files:
        return userdata_sha256(template_text.encode("utf-8"))
    form = {"canonical": 1, "template": template_text,
            "files": [[path, mode, owner or "", hashlib.sha256(data).hexdigest()]
                      for path, mode, owner, data in files]}
    return hashlib.sha256(json.dumps(form, sort_keys=True).encode("utf-8")).hexdigest()


def userdata_digest(server: Server) -> str:
    """The short digest recorded in ``ivc_userdata`` for a declared server (canonical form)."""
    digest = getattr(server, "userdata_digest", None)
    return (digest or userdata_sha256(server.userdata))[:DIGEST_SHORT]


def legacy_digest(server: Server) -> str:
    """The short digest earlier ivc recorded: of the rendered bytes (gzip included), as this
    Python renders them."""
    return userdata_sha256(server.userdata)[:DIGEST_SHORT]


def base64_size(data: bytes) -> int:
    """Return how many bytes ``data`` takes once base64-encoded."""
    return 4 * ((len(data) + 2) // 3)


def gzip_b64(data: bytes) -> str:
    """Return ``data`` gzipped (with no timestamp, so the output is stable) then base64-encoded."""
    return base64.b64encode(gzip.compress(data, mtime=0)).decode("ascii")


def write_files_entry(file: FileSpec) -> dict[str, Any]:
    """Return the cloud-init ``write_files`` entry that writes one declared (single) file."""
    return _entry(*_raw_file(file))


def _raw_file(file: FileSpec) -> tuple[str, bytes, str, str | None]:
    try:
        data = file.source.read_bytes()
    except OSError as exc:
        raise ConfigError(clip_message(f"{file.source}: cannot read the file for {file.path}: "
                                       f"{exc.strerror or exc}; fix the source path or the "
                                       "file's permissions")) from None
    return file.path, data, file.permissions or "0644", file.owner


def _entry(path: str, data: bytes, permissions: str, owner: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": path,
        "encoding": "gz+b64",
        "content": gzip_b64(data),
        "permissions": permissions,
    }
    if owner:
        entry["owner"] = owner
    return entry


def file_mode(path: Path) -> str:
    """A file's permission bits as cloud-init takes them (``"0755"``); set-id bits dropped."""
    return f"0{stat.S_IMODE(os.stat(path).st_mode) & 0o777:03o}"


def tree_files(root: Path) -> list[tuple[str, Path]]:
    """Every file under folder ``root``, as ``(relative POSIX path, path)``, sorted.

    :raises ConfigError: a symlink to a folder, or something that is not a regular file (named).
    """
    out: list[tuple[str, Path]] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in dirs:
            if os.path.islink(os.path.join(folder, name)):
                raise ConfigError(clip_message(
                    f"{os.path.join(folder, name)}: a symlink to a folder in the files tree "
                    f"{root}; ivc does not follow them: copy the folder or declare it apart"))
        for name in sorted(names):
            path = Path(folder, name)
            if not path.is_file():
                what = "a broken symlink" if path.is_symlink() else "not a regular file"
                raise ConfigError(clip_message(f"{path}: {what} in the files tree {root}; "
                                               "remove it or declare the files one by one"))
            out.append((path.relative_to(root).as_posix(), path))
    return sorted(out)


def write_files_entries(file: FileSpec) -> list[dict[str, Any]]:
    """Return the ``write_files`` entries of one declaration: one for a file, one per file
    for a folder (see the module's docstring).

    :raises ConfigError: a file that cannot be read, a folder without files, a symlink to a
        folder or a special file in the tree.
    """
    return [_entry(*raw) for raw in raw_files(file)]


def raw_files(file: FileSpec) -> list[tuple[str, bytes, str, str | None]]:
    """``(path, raw content, mode, owner)`` of every file one declaration writes.

    :raises ConfigError: as ``write_files_entries``.
    """
    if not file.source.is_dir():
        return [_raw_file(file)]
    files = tree_files(file.source)
    if not files:
        raise ConfigError(clip_message(f"{file.source}: the folder for {file.path} holds no "
                                       "file; put the files in it or drop the declaration"))
    entries = []
    for rel, path in files:
        try:
            data = path.read_bytes()
            mode = file.permissions or file_mode(path)
        except OSError as exc:
            raise ConfigError(clip_message(f"{path}: cannot read the file for "
                                           f"{file.path}: {exc.strerror or exc}; fix the file's "
                                           "permissions")) from None
        entries.append((posixpath.join(file.path.rstrip("/") or "/", rel), data, mode,
                        file.owner))
    return entries


def render_userdata(spec: Spec, server: Server) -> bytes | None:
    """Render one server's user_data; None when it declares neither a template nor files.

    :raises ConfigError: template missing or invalid, undefined variable, files without
        ``#cloud-config``, invalid cloud-config YAML, or a result over the 65535-byte limit.
    """
    return render_userdata_digest(spec, server)[0]


def render_userdata_digest(spec: Spec, server: Server) -> tuple[bytes | None, str]:
    """Render one server's user_data and its canonical digest (``canonical_digest``, full).

    :raises ConfigError: as ``render_userdata``.
    """
    entry = f"servers.{server.name}.userdata"
    if server.userdata_template is None and not server.files:
        return None, canonical_digest(None, [])
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
    template_text = text
    canon: list[tuple[str, str, str | None, bytes]] = []
    if is_cloud_config:
        text, weight = _with_files(spec.path, entry, text, server.files, canon)
    else:
        weight = ""
    data = text.encode("utf-8")
    size = base64_size(data)
    if size > USERDATA_LIMIT:
        _fail(spec.path, entry,
              f"user_data is {size} bytes after base64, over Nova's limit of {USERDATA_LIMIT}"
              + (f" (embedded files: {weight})" if weight else ""),
              "shrink the template or the embedded files (or fetch large files at boot)")
    return data, canonical_digest(template_text, canon)


def _render_template(spec_path: Path, entry: str, template: Path, context: dict) -> str:
    import jinja2

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
        if match:
            _fail(spec_path, entry, f"template {template} uses undefined variable "
                  f"{_r(match.group(1))}", f"add it to {entry}_vars or defaults.userdata_vars")
        _fail(spec_path, entry, f"template {template} uses an undefined value ({clip(str(exc))})",
              f"declare it ({entry}_vars, defaults.userdata_vars or metadata) or test it with "
              "`is defined`")
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
    import traceback

    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__)
             if frame.filename == str(template) or frame.filename.endswith(f"/{template.name}")]
    return f" line {lines[-1]}" if lines else ""


def _with_files(spec_path: Path, entry: str, text: str, files: tuple[FileSpec, ...],
                canon: list[tuple[str, str, str | None, bytes]]) -> tuple[str, str]:
    """Check cloud-config YAML and append the declared files to its ``write_files``; return
    the text and what the files weigh (for the size message)."""
    import yaml

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
        return text, ""
    write_files = config.setdefault("write_files", [])
    if not isinstance(write_files, list):
        _fail(spec_path, entry, "the template's write_files is not a list",
              "make write_files a list or drop it")
    weight: dict[str, tuple[int, int]] = {}
    write_files.extend(_embedded(spec_path, entry, files, write_files, weight, canon))
    body = yaml.dump(config, Dumper=_block_dumper(), sort_keys=False, default_flow_style=False,
                     allow_unicode=True)
    count = sum(n for n, _ in weight.values())
    total = sum(size for _, size in weight.values())
    return (f"{CLOUD_CONFIG_HEADER}\n{body}",
            f"{count} file(s), {total} bytes gzipped and base64-encoded; {_heaviest(weight)}")


def _embedded(spec_path: Path, entry: str, files: tuple[FileSpec, ...], present: list[Any],
              weight: dict[str, tuple[int, int]],
              canon: list[tuple[str, str, str | None, bytes]]) -> list[dict[str, Any]]:
    """The entries of every declared file and folder, checked for paths written twice and
    refused as soon as their content alone passes Nova's limit (before reading the rest)."""
    files_entry = entry.replace(".userdata", ".files")
    out: list[dict[str, Any]] = []
    owner_of: dict[str, str] = {e.get("path"): "the template's write_files"
                                for e in present if isinstance(e, dict)}
    total = 0  # weight: declaration -> (files, base64 bytes of their content)
    for i, file in enumerate(files):
        where = f"{files_entry}[{i}]"
        label = f"{where} ({file.source})"
        for path, data, mode, owner in raw_files(file):
            canon.append((path, mode, owner, data))
            item = _entry(path, data, mode, owner)
            if item["path"] in owner_of:
                _fail(spec_path, where, f"{file.source} writes {item['path']}, which "
                      f"{owner_of[item['path']]} writes too", "write each path once")
            owner_of[item["path"]] = label
            count, size = weight.get(label, (0, 0))
            weight[label] = (count + 1, size + len(item["content"]))
            total += len(item["content"])
            out.append(item)
            if total > USERDATA_LIMIT:
                _fail(spec_path, entry, f"the embedded files ({files_entry}) are over Nova's "
                      f"limit of {USERDATA_LIMIT} bytes after base64 already at {item['path']} "
                      f"({total} bytes gzipped and base64-encoded; {_heaviest(weight)})",
                      "embed fewer or smaller files, or fetch large ones at boot")
    return out


def _heaviest(weight: dict[str, tuple[int, int]]) -> str:
    ranked = sorted(weight.items(), key=lambda kv: -kv[1][1])[:3]
    return "heaviest: " + ", ".join(f"{label}: {n} file(s), {size} bytes"
                                    for label, (n, size) in ranked)


def _block_dumper() -> type:
    import yaml

    class BlockDumper(yaml.SafeDumper):
        """Dump multi-line strings as literal blocks, so the user_data stays readable."""

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    BlockDumper.add_representer(str, text)
    return BlockDumper


def _fail(path: Path, entry: str, problem: str, fix: str) -> NoReturn:
    raise ConfigError(clip_message(re.sub(r"\s*\n\s*", " ", f"{path}: {entry}: {problem}; {fix}")))
