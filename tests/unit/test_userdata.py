"""User_data rendering: template context, embedded files, size limit, change detection."""

import base64
import gzip
import hashlib
from pathlib import Path

import pytest
import yaml

from ivc_tasks.errors import ConfigError
from ivc_tasks.spec import FileSpec, Server, Spec
from ivc_tasks.userdata import (
    USERDATA_LIMIT,
    base64_size,
    gzip_b64,
    render_userdata,
    userdata_sha256,
    write_files_entry,
)


def make(tmp_path: Path, template: str | None, files=(), **server) -> tuple[Spec, Server]:
    """A one-server Spec whose template (if any) has the given text."""
    path = None
    if template is not None:
        path = tmp_path / "t.j2"
        path.write_text(template)
    srv = Server(name=server.pop("name", "web1"), image="i", flavor="f", networks=("n",),
                 userdata_template=path, files=tuple(files), **server)
    spec = Spec(path=tmp_path / "spec.toml", env_name="staging", servers={srv.name: srv})
    return spec, srv


def source(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_context_has_vars_server_env_and_metadata(tmp_path):
    spec, srv = make(
        tmp_path,
        "#!/bin/sh\n# {{ server }} {{ env }} {{ metadata.role }} {{ greeting }} {{ n + 1 }}\n",
        userdata_vars={"greeting": "hi", "n": 41}, metadata={"role": "web"},
    )
    assert render_userdata(spec, srv) == b"#!/bin/sh\n# web1 staging web hi 42\n"


def test_nothing_to_render(tmp_path):
    spec, srv = make(tmp_path, None)
    assert render_userdata(spec, srv) is None


def test_cloud_config_without_files_is_kept_verbatim(tmp_path):
    text = "#cloud-config\n# a comment survives\nhostname: {{ server }}\n"
    spec, srv = make(tmp_path, text)
    assert render_userdata(spec, srv) == b"#cloud-config\n# a comment survives\nhostname: web1\n"


def test_files_are_appended_to_write_files(tmp_path):
    motd = source(tmp_path, "motd", b"hello\n")
    key = source(tmp_path, "key", b"\x00\x01binary")
    template = ("#cloud-config\nhostname: {{ server }}\n"
                "write_files:\n  - path: /etc/own\n    content: mine\n")
    spec, srv = make(tmp_path, template, files=[
        FileSpec("/etc/motd", motd), FileSpec("/etc/key", key, "0600", "root:root")])
    data = render_userdata(spec, srv)
    assert data.startswith(b"#cloud-config\n")
    config = yaml.safe_load(data)
    assert config["hostname"] == "web1"
    assert [(f["path"], f.get("encoding"), f.get("permissions"), f.get("owner"))
            for f in config["write_files"]] == [
        ("/etc/own", None, None, None),
        ("/etc/motd", "gz+b64", "0644", None),
        ("/etc/key", "gz+b64", "0600", "root:root"),
    ]
    contents = [gzip.decompress(base64.b64decode(f["content"])) for f in config["write_files"][1:]]
    assert contents == [b"hello\n", b"\x00\x01binary"]


def test_files_without_a_template_make_a_cloud_config(tmp_path):
    motd = source(tmp_path, "motd", b"hi\n")
    spec, srv = make(tmp_path, None, files=[FileSpec("/etc/motd", motd)])
    assert render_userdata(spec, srv) == (
        "#cloud-config\nwrite_files:\n- path: /etc/motd\n  encoding: gz+b64\n"
        f"  content: {gzip_b64(b'hi' + bytes([10]))}\n  permissions: '0644'\n").encode()


def test_rendering_is_deterministic(tmp_path):
    motd = source(tmp_path, "motd", b"same\n")
    spec, srv = make(tmp_path, "#cloud-config\n{}\n", files=[FileSpec("/etc/motd", motd)])
    first = render_userdata(spec, srv)
    assert render_userdata(spec, srv) == first
    assert userdata_sha256(first) == hashlib.sha256(first).hexdigest()


@pytest.mark.parametrize(("data", "digest"), [
    (None, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
])
def test_userdata_sha256(data, digest):
    assert userdata_sha256(data) == digest


@pytest.mark.parametrize(("size", "encoded"), [(0, 0), (1, 4), (2, 4), (3, 4), (4, 8), (49149, 65532),
                                               (49150, 65536)])
def test_base64_size(size, encoded):
    assert base64_size(b"x" * size) == encoded == len(base64.b64encode(b"x" * size))


def test_gzip_b64_has_no_timestamp():
    raw = base64.b64decode(gzip_b64(b"hello"))
    assert raw[4:8] == b"\x00\x00\x00\x00"  # gzip MTIME field
    assert gzip.decompress(raw) == b"hello"
    assert gzip_b64(b"hello") == gzip_b64(b"hello")


def test_write_files_entry(tmp_path):
    path = source(tmp_path, "f", b"x")
    assert write_files_entry(FileSpec("/f", path, "0640")) == {
        "path": "/f", "encoding": "gz+b64", "content": gzip_b64(b"x"), "permissions": "0640"}


@pytest.mark.parametrize(("size", "ok"), [(49149, True), (49150, False)])
def test_size_limit_boundary(tmp_path, size, ok):
    # 49149 bytes encode to 65532 base64 bytes (the largest multiple of 4 under 65535)
    spec, srv = make(tmp_path, "x" * size)
    if ok:
        assert len(render_userdata(spec, srv)) == size
        return
    with pytest.raises(ConfigError) as info:
        render_userdata(spec, srv)
    assert str(info.value) == (
        f"{spec.path}: servers.web1.userdata: user_data is 65536 bytes after base64, over Nova's "
        f"limit of {USERDATA_LIMIT}; shrink the template or the embedded files (or fetch large "
        "files at boot)")


MAPPING = "rendered #cloud-config is not a YAML mapping; make the template a mapping of cloud-init "\
    "modules"


@pytest.mark.parametrize(("template", "files", "entry", "rest"), [  # the message after "<entry>: "
    ("#cloud-config\nx: {{ nope }}\n", False, "servers.web1.userdata",
     "template {t} uses undefined variable 'nope'; add it to servers.web1.userdata_vars or "
     "defaults.userdata_vars"),
    ("#cloud-config\nx: {{ metadata.nope }}\n", False, "servers.web1.userdata",
     "template {t} uses an undefined value ('dict object' has no attribute 'nope'); declare it "
     "(servers.web1.userdata_vars, defaults.userdata_vars or metadata) or test it with "
     "`is defined`"),
    ("#cloud-config\n{% include 'other.j2' %}\n", False, "servers.web1.userdata",
     "template {t}: cannot find 'other.j2'; create the file or fix the path (relative to the "
     "spec file's folder)"),
    ("{% for %}", False, "servers.web1.userdata", "template {t} line 1: Expected an expression, "
     "got 'end of statement block'; fix the Jinja syntax"),
    ("#!/bin/sh\n", True, "servers.web1.files", "files need #cloud-config user_data but {t} "
     "renders something else; start the template with a '#cloud-config' line or drop 'files'"),
    ("#cloud-config\n- a\n- b\n", True, "servers.web1.userdata", MAPPING),
    ("#cloud-config\n- a\n- b\n", False, "servers.web1.userdata", MAPPING),
    ("#cloud-config\nwrite_files: nope\n", True, "servers.web1.userdata",
     "the template's write_files is not a list; make write_files a list or drop it"),
    ("#cloud-config\nx: 'unterminated\n", False, "servers.web1.userdata",
     "rendered #cloud-config is not valid YAML: while scanning a quoted scalar in \"<unicode "
     "string>\", line 2, column 4: x: 'unterminated ^ found unexpected end of stream in "
     "\"<unicode string>\", line 3, column 1: ^; fix the template (quote values with the tojson "
     "filter)"),
])
def test_render_errors(tmp_path, template, files, entry, rest):
    motd = source(tmp_path, "motd", b"m")
    spec, srv = make(tmp_path, template, files=[FileSpec("/etc/motd", motd)] if files else [])
    with pytest.raises(ConfigError) as info:
        render_userdata(spec, srv)
    assert str(info.value) == f"{spec.path}: {entry}: {rest.format(t=srv.userdata_template)}"


@pytest.mark.parametrize(("template", "rest"), [  # the message after "<spec>: <entry>: "
    ("#cloud-config\nx: {{ 1 // 0 }}\n", "template {t} line 2 raised ZeroDivisionError: integer "
     "division or modulo by zero; fix the template"),
    ("{% for x in 5 %}{% endfor %}", "template {t} line 1 raised TypeError: 'int' object is not "
     "iterable; fix the template"),
    ("{{ {}[('k' * 10 ** 7)] }}", "template {t} uses an undefined value ('dict object' has no "
     "attribute '" + "k" * 48 + "... (10000033 characters)); declare it "
     "(servers.web1.userdata_vars, defaults.userdata_vars or metadata) or test it with "
     "`is defined`"),
    (b"#cloud-config\nx: \xff\n", "template {t} is not UTF-8 text (invalid start byte at byte 17); "
     "save it as UTF-8"),
], ids=["1 // 0", "iterates a number", "long value", "not UTF-8"])
def test_a_template_failing_at_render_time_is_a_config_error_naming_it(tmp_path, template,
                                                                       rest):
    spec, srv = make(tmp_path, "")
    if isinstance(template, bytes):
        srv.userdata_template.write_bytes(template)
    else:
        srv.userdata_template.write_text(template)
    with pytest.raises(ConfigError) as info:
        render_userdata(spec, srv)
    assert str(info.value) == (f"{spec.path}: servers.web1.userdata: "
                               f"{rest.format(t=srv.userdata_template)}")  # a 10 MB value is cut


def test_an_unreadable_embedded_file_names_it(tmp_path):
    spec, srv = make(tmp_path, None, files=[FileSpec("/etc/motd", tmp_path / "gone")])
    with pytest.raises(ConfigError) as info:
        render_userdata(spec, srv)
    assert str(info.value) == (f"{tmp_path}/gone: cannot read the file for /etc/motd: No such file "
                               "or directory; fix the source path or the file's permissions")


# -- write_files from a folder -----------------------------------------------------------------
import os  # noqa: E402

from ivc_tasks.spec import load_spec  # noqa: E402
from ivc_tasks.userdata import tree_files, write_files_entries  # noqa: E402


def tree(tmp_path: Path) -> Path:
    """files/app: a nested tree with a script (0755), a secret (0600), binary data."""
    root = tmp_path / "files" / "app"
    (root / "bin").mkdir(parents=True)
    (root / "conf.d" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    source(root, "README", b"readme\n")
    os.chmod(source(root / "bin", "run.sh", b"#!/bin/sh\necho hi\n"), 0o755)
    os.chmod(source(root / "conf.d", "secret.key", bytes(range(256)) * 4), 0o600)
    source(root / "conf.d" / "deep", "a.conf", b"x = 1\n")
    os.chmod(root / "README", 0o644)
    os.chmod(root / "conf.d" / "deep" / "a.conf", 0o644)
    return root


def written(data: bytes) -> dict[str, tuple[bytes, str, str | None]]:
    """What cloud-init would write: {path: (bytes, permissions, owner)}."""
    config = yaml.safe_load(data)
    return {e["path"]: (gzip.decompress(base64.b64decode(e["content"])) if e.get("encoding")
                        else e["content"].encode(), e.get("permissions"), e.get("owner"))
            for e in config["write_files"]}


def test_a_folder_lands_file_by_file_with_its_modes_byte_for_byte(tmp_path):
    root = tree(tmp_path)
    spec, srv = make(tmp_path, None, files=[FileSpec("/opt/app/", root, None, "app:app")])
    out = written(render_userdata(spec, srv))
    assert out == {
        "/opt/app/README": (b"readme\n", "0644", "app:app"),
        "/opt/app/bin/run.sh": (b"#!/bin/sh\necho hi\n", "0755", "app:app"),
        "/opt/app/conf.d/deep/a.conf": (b"x = 1\n", "0644", "app:app"),
        "/opt/app/conf.d/secret.key": (bytes(range(256)) * 4, "0600", "app:app"),
    }
    assert list(out) == sorted(out)  # a stable order: the same tree, the same user_data
    assert render_userdata(spec, srv) == render_userdata(spec, srv)


def test_declared_permissions_apply_to_every_file_of_a_folder(tmp_path):
    root = tree(tmp_path)
    entries = write_files_entries(FileSpec("/srv", root, "0640"))
    assert {e["permissions"] for e in entries} == {"0640"} and len(entries) == 4
    assert write_files_entries(FileSpec("/", root, None))[0]["path"] == "/README"


def test_a_folder_declared_in_the_spec_keeps_modes_unless_permissions_are_given(tmp_path):
    tree(tmp_path)
    path = tmp_path / "spec.toml"
    path.write_text('[servers.web1]\nimage = "i"\nflavor = "f"\nnetworks = ["n"]\nfiles = [\n'
                    '  { path = "/opt/app", source = "files/app" },\n'
                    '  { path = "/opt/copy", source = "files/app", permissions = "0640" },\n'
                    '  { path = "/etc/readme", source = "files/app/README" },\n]\n')
    server = load_spec(path, env_name="e").servers["web1"]
    assert [f.permissions for f in server.files] == [None, "0640", "0644"]
    out = written(server.userdata)
    assert out["/opt/app/bin/run.sh"][1] == "0755" and out["/opt/copy/bin/run.sh"][1] == "0640"
    assert len(out) == 9


def test_an_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    spec, srv = make(tmp_path, None, files=[FileSpec("/opt", tmp_path / "empty", None)])
    with pytest.raises(ConfigError) as info:
        render_userdata(spec, srv)
    assert str(info.value) == (f"{tmp_path}/empty: the folder for /opt holds no file; put the "
                               "files in it or drop the declaration")


def test_symlinks_to_files_are_read_to_folders_refused(tmp_path):
    root = tree(tmp_path)
    (root / "link.txt").symlink_to(root / "README")
    assert ("link.txt", root / "link.txt") in tree_files(root)
    (root / "loop").symlink_to(root)
    with pytest.raises(ConfigError) as info:
        tree_files(root)
    assert str(info.value) == (f"{root}/loop: a symlink to a folder in the files tree {root}; ivc "
                               "does not follow them: copy the folder or declare it apart")


def test_a_broken_symlink_in_a_folder_is_named(tmp_path):
    root = tree(tmp_path)
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError) as info:
        tree_files(root)
    assert str(info.value) == (f"{root}/dangling: a broken symlink in the files tree {root}; "
                               "remove it or declare the files one by one")


def test_a_path_written_twice_is_refused(tmp_path):
    root = tree(tmp_path)
    readme = source(tmp_path, "readme", b"other\n")
    spec, srv = make(tmp_path, None, files=[FileSpec("/opt/app", root, None),
                                            FileSpec("/opt/app/README", readme)])
    with pytest.raises(ConfigError) as info:
        render_userdata(spec, srv)
    assert str(info.value) == (f"{spec.path}: servers.web1.files[1]: {readme} writes "
                               f"/opt/app/README, which servers.web1.files[0] ({root}) writes too; "
                               "write each path once")
    spec, srv = make(tmp_path, "#cloud-config\nwrite_files:\n  - path: /opt/app/README\n"
                     "    content: mine\n", files=[FileSpec("/opt/app", root, None)])
    with pytest.raises(ConfigError) as info:
        render_userdata(spec, srv)
    assert str(info.value) == (f"{spec.path}: servers.web1.files[0]: {root} writes "
                               "/opt/app/README, which the template's write_files writes too; "
                               "write each path once")


def test_a_tree_over_the_limit_is_refused_early_naming_the_heaviest(tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    for i in range(40):
        source(root, f"f{i:02}.bin", os.urandom(2000))  # incompressible: ~2.7 kB each
    small = source(tmp_path, "motd", b"hi\n")
    spec, srv = make(tmp_path, None, files=[FileSpec("/etc/motd", small),
                                            FileSpec("/data", root, None)])
    with pytest.raises(ConfigError) as info:
        render_userdata(spec, srv)
    message = str(info.value)
    assert message.startswith(f"{spec.path}: servers.web1.userdata: the embedded files "
                              "(servers.web1.files) are over Nova's limit of 65535 bytes")
    assert f"heaviest: servers.web1.files[1] ({root}): 2" in message  # 2x files, first
    assert "/data/f2" in message  # stopped there, before reading the rest
    assert "fetch large ones at boot" in message


def test_a_tree_under_the_files_limit_but_over_with_the_yaml_says_what_it_weighs(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    for i in range(23):
        source(root, f"f{i:02}.bin", os.urandom(2000))
    spec, srv = make(tmp_path, "#cloud-config\n# " + "x" * 4000 + "\n",
                     files=[FileSpec("/data", root, None)])
    with pytest.raises(ConfigError, match=r"over Nova's limit of 65535 \(embedded files: 23 "
                                          r"file\(s\), \d+ bytes gzipped and base64-encoded; "
                                          r"heaviest: servers.web1.files\[0\]"):
        render_userdata(spec, srv)
