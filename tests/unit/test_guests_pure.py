"""The guests' pure pieces: the switch, the console tail, disk names, the seed written for a
boot, the disks file, the mirror from apt's sources, the devcloud.guest task's arguments."""

import json
from pathlib import Path

import pytest

from ivc_tasks.devcloud import guests, layout
from ivc_tasks.devcloud.layout import Layout

guest = guests.plugin_module("guest")
guest_mode = guests.plugin_module("guest_mode")


@pytest.mark.parametrize("config, name, expected", [
    ({}, "web1", True),                                            # no file: on
    ({"mode": "off"}, "web1", False),
    ({"mode": "off", "rules": [{"prefix": "g-", "mode": "on"}]}, "g-1-s1", True),
    ({"mode": "off", "rules": [{"prefix": "g-", "mode": "on"}]}, "t-1-s1", False),
    ({"mode": "on", "rules": [{"prefix": "t-", "mode": "off"}]}, "t-1-s1", False),
    ({"mode": "on", "rules": [{"prefix": "t-", "mode": "off"}]}, "web1", True),
    # the longest matching prefix wins, whatever the order
    ({"mode": "on", "rules": [{"prefix": "b-x", "mode": "on"}, {"prefix": "b-", "mode": "off"}]},
     "b-x1", True),
    ({"mode": "on", "rules": [{"prefix": "b-x", "mode": "on"}, {"prefix": "b-", "mode": "off"}]},
     "b-y1", False),
    ({"mode": "on", "rules": [{"prefix": "", "mode": "off"}]}, "web1", True),  # empty: ignored
])
def test_switch_decides_per_name(config, name, expected):
    assert guest_mode.enabled(config, name) is expected


def test_switch_updates_rules_and_defaults():
    config = guest_mode.updated({}, "off", "t-")
    assert config == {"mode": "on", "rules": [{"prefix": "t-", "mode": "off"}]}
    config = guest_mode.updated(config, "on", "t-")  # replaces the rule for the same prefix
    assert config == {"mode": "on", "rules": [{"prefix": "t-", "mode": "on"}]}
    config = guest_mode.updated(config, "off", "b-")
    assert [r["prefix"] for r in config["rules"]] == ["t-", "b-"]
    assert guest_mode.updated(config, "off") == {"mode": "off", "rules": []}  # no --only: reset
    with pytest.raises(ValueError, match="use on or off"):
        guest_mode.updated({}, "maybe")


def test_set_mode_writes_the_file_the_driver_reads(tmp_path):
    layout = Layout(tmp_path)
    guests.set_mode("off", "t-", layout)
    guests.set_mode("on", "g-", layout)
    written = json.loads((tmp_path / "state" / "guests").read_text())
    assert written == {"mode": "on", "rules": [{"prefix": "t-", "mode": "off"},
                                               {"prefix": "g-", "mode": "on"}]}
    assert guest_mode.read(tmp_path) == written
    assert guests.describe_mode(written) == \
        "guests: on by default; off for names starting 't-'; on for names starting 'g-'"
    assert guests.mode(Layout(tmp_path / "none")) == {"mode": "on", "rules": []}


def test_console_is_the_log_tail_without_a_half_line(tmp_path):
    folder = tmp_path / "data" / "guests" / "u1"
    folder.mkdir(parents=True)
    (folder / "console.log").write_bytes(b"".join(b"line %03d\n" % i for i in range(100)))
    assert guest.console("u1", tmp_path).endswith(b"line 099\n")
    tail = guest.console("u1", tmp_path, limit=30)  # 9 bytes a line: 3 whole lines, no half
    assert tail == b"line 097\nline 098\nline 099\n"
    assert guest.console("absent", tmp_path) == b""


@pytest.mark.parametrize("used, expected", [
    ([], "/dev/vdb"),
    (["/dev/vda"], "/dev/vdb"),
    (["/dev/vda", "/dev/vdb", None], "/dev/vdc"),
    (["/dev/sda", "/dev/sdb"], "/dev/vdc"),   # a server named before: sdb is the guest's vdb
])
def test_next_device_is_virtio(used, expected):
    assert guest.next_device(used) == expected


def test_device_names_in_the_guest():
    assert guest.guest_device("/dev/sdc") == "vdc"
    assert guest.guest_device("/dev/vdd") == "vdd"
    assert guest.guest_device("/dev/xvdb") == "vdb"
    assert guest.by_id_name("0123456789abcdef0123456789") == "virtio-0123456789abcdef0123"


def test_prepare_writes_the_seed_once_and_the_boot_files_every_time(tmp_path):
    seed = {"openstack/latest/meta_data.json": b'{"uuid": "u1"}',
            "openstack/latest/user_data": "#cloud-config\n"}
    folder = guest.prepare("u1", hostname="web1", macs=["fa:16:3e:00:00:01"], seed=seed,
                           base=tmp_path)
    upper = folder / "upper"
    drive = upper / "var/lib/cloud/seed/config_drive/openstack/latest"
    assert (drive / "meta_data.json").read_bytes() == b'{"uuid": "u1"}'
    assert (drive / "user_data").read_text() == "#cloud-config\n"
    assert (folder / "macs").read_text() == "fa:16:3e:00:00:01\n"
    assert (folder / "hostname").read_text() == "web1"
    cfg = (upper / "etc/cloud/cloud.cfg.d/90-ivc-devcloud.cfg").read_text()
    assert "datasource_list: [ ConfigDrive, OpenStack ]" in cfg
    assert "network: {config: disabled}" in cfg
    assert (upper / "usr/local/sbin/ivc-init").stat().st_mode & 0o111
    # a later boot (power on) does not rewrite the drive: the guest may have changed it
    (drive / "user_data").write_text("changed by the guest\n")
    guest.prepare("u1", hostname="web1", macs=[], seed=seed, base=tmp_path)
    assert (drive / "user_data").read_text() == "changed by the guest\n"
    assert (folder / "macs").read_text() == ""


def test_prepare_without_a_config_drive_writes_no_seed(tmp_path):
    folder = guest.prepare("u2", hostname="bare", seed=None, base=tmp_path)
    assert not (folder / "upper/var/lib/cloud/seed").exists()


def test_disks_file_round_trip(tmp_path):
    (tmp_path / "data" / "guests" / "u1").mkdir(parents=True)
    entries = [{"device": "vdb", "majmin": "7:3", "by_id": "virtio-abc", "loop": "/dev/loop3",
                "file": "/x/abc.img"}]
    guest._write_disks("u1", entries, tmp_path)
    assert guest.disks("u1", tmp_path) == entries
    assert guest.disks("u9", tmp_path) == []


def test_exec_argv_enters_every_namespace_of_the_init():
    argv = guest.exec_argv(4242, ["cat", "/etc/hostname"])
    assert argv[:9] == ["nsenter", "--target=4242", "--mount", "--uts", "--ipc", "--net",
                        "--pid", "--root", "--wd"]
    assert argv[-2:] == ["cat", "/etc/hostname"]


@pytest.mark.parametrize("files, expected", [
    ({"sources.list.d/debian.sources":
      "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\n"
      "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\n"
      "Suites: bookworm bookworm-updates\nComponents: main\n"},
     "http://mirror.example/debian"),
    ({"sources.list": "deb [arch=amd64] http://ftp.example/debian bookworm main\n"},
     "http://ftp.example/debian"),
    ({"sources.list": "deb http://ftp.example/debian bullseye main\n"},
     guests.DEFAULT_MIRROR),
    ({}, guests.DEFAULT_MIRROR),
])
def test_mirror_from_apt_sources(tmp_path, files, expected):
    (tmp_path / "sources.list.d").mkdir()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert guests.mirror(tmp_path) == expected


def test_guest_init_is_standalone():
    """The init runs on the guest's python3 with only the standard library."""
    source = (Path(layout.PLUGIN_DIR) / "ivc_devcloud_plugin" / "guest_init.py").read_text()
    imports = {line.split()[1].split(".")[0] for line in source.splitlines()
               if line.startswith(("import ", "from "))}
    assert imports <= {"json", "os", "signal", "socket", "subprocess", "sys", "threading",
                       "time"}


def test_guest_task_passes_the_words_after_the_double_dash_and_exits_with_their_status(
        monkeypatch):
    import sys as system

    from invoke import Context, Exit

    from ivc_tasks.devcloud import seed
    from ivc_tasks.devcloud.bootstrap import DevcloudError
    from ivc_tasks.tasks import devcloud as tasks

    calls = []
    monkeypatch.setattr(seed, "admin_connection", lambda secrets: "conn")
    monkeypatch.setattr("ivc_tasks.devcloud.layout.load_secrets", lambda layout: {})
    monkeypatch.setattr(guests, "find_server_uuid",
                        lambda conn, name, project: calls.append((name, project)) or "uuid-1")
    monkeypatch.setattr(guests, "exec_in", lambda layout, uuid, argv: calls.append(argv) or 3)
    monkeypatch.setattr(system, "argv", ["invoke", "devcloud.guest", "web1", "--", "sh", "-c",
                                         "echo 'a b'; exit 3"])
    with pytest.raises(Exit) as raised:
        tasks.guest(Context(), "web1")
    assert raised.value.code == 3
    assert calls == [("web1", "ivc"), ["sh", "-c", "echo 'a b'; exit 3"]]

    def missing(conn, name, project):
        raise DevcloudError(f"no server {name!r} in project {project!r}")
    monkeypatch.setattr(guests, "find_server_uuid", missing)
    with pytest.raises(Exit) as raised:
        tasks.guest(Context(), "nope", project="ivc-ovh")
    assert raised.value.code == 2
    assert "no server 'nope' in project 'ivc-ovh'" in str(raised.value.message)


def test_up_says_in_one_line_that_a_machine_without_namespaces_gets_no_guests(tmp_path,
                                                                               monkeypatch):
    monkeypatch.setattr(guests.os, "geteuid", lambda: 1000)
    said = []
    assert guests.ensure_root(Layout(tmp_path), said.append) is False
    assert said == ["guests: off, this machine cannot make them (not root, so no namespaces); "
                    "servers boot without a guest"]
    assert not (tmp_path / "guest-root").exists()
    monkeypatch.setattr(guest.os, "geteuid", lambda: 1000)
    assert guest.available(tmp_path) == "not root: cannot make namespaces"


def test_the_driver_needs_the_root_filesystem(tmp_path):
    assert "no guest root filesystem" in guest.available(tmp_path)
    (tmp_path / "guest-root/bookworm/usr/bin").mkdir(parents=True)
    (tmp_path / "guest-root/bookworm/usr/bin/cloud-init").touch()
    assert guest.available(tmp_path) is None


def test_demo_reads_the_data_volume_by_its_by_id_path_before_and_after_the_rotate():
    from ivc_tasks.tasks import demo
    steps = demo.steps("/dev/disk/by-id/virtio-0123")
    notes = [i for i, s in enumerate(steps) if "d=/dev/disk/by-id/virtio-0123;" in s]
    rotate = steps.index("rotate --name web1")
    assert len(notes) == 2 and notes[0] < rotate < notes[1]
    assert "devcloud.guest web1 -- cat /etc/ivc-greeting" in steps
    assert steps[:2] == ["deploy", "deploy"] and steps[-1] == "status"


def test_a_root_that_cannot_be_built_leaves_the_cloud_up_without_guests(tmp_path, monkeypatch):
    from ivc_tasks.devcloud.bootstrap import DevcloudError

    def fails(layout, say):
        raise DevcloudError("`debootstrap --variant=minbase` failed (exit 1)")
    monkeypatch.setattr(guests, "ensure_root", fails)
    said = []
    assert guests.ensure_root_or_say(Layout(tmp_path), said.append) is False
    assert said == ["guests: off, the Debian root could not be built (`debootstrap "
                    "--variant=minbase` failed (exit 1)); servers boot without a guest; the next "
                    "`up` tries again"]
