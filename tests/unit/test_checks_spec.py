"""Declared checks ([servers.NAME.checks], [defaults.checks]) and the rendered #cloud-config
checked against cloud-init 22.4's own schema: parsing, defaults, refusals naming key and line."""

from pathlib import Path

import pytest

from ivc_tasks.cloudconfig import check_cloud_config, line_of, load_schema, problems, top_level_keys
from ivc_tasks.errors import ConfigError
from ivc_tasks.spec import Checks, load_spec
from ivc_tasks.spec_checks import fill, placeholders

SERVER = '[servers.a]\nimage = "i"\nflavor = "f"\nnetworks = ["n"]\n'


def load(tmp_path: Path, text: str, template: str | None = None):
    if template is not None:
        (tmp_path / "t.j2").write_text(template)
        text = text.replace("[servers.a]\n", '[servers.a]\nuserdata = "t.j2"\n', 1)
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return load_spec(path, env_name="x")


def test_checks_parsed_and_merged_over_defaults(tmp_path):
    spec = load(tmp_path, '[defaults.checks]\ntcp = [22]\ntimeout = 60\n' + SERVER +
                '[servers.a.checks]\nhttp = ["http://{address}:8080/health"]\n'
                'command = ["sh -c \'test {name} = a\'"]\ninterval = 0.5\n')
    assert spec.servers["a"].checks == Checks(
        cloud_init=False, tcp=(22,), http=("http://{address}:8080/health",),
        command=("sh -c 'test {name} = a'",), timeout=60.0, interval=0.5)


def test_cloud_init_defaults_to_true_for_a_cloud_config_only(tmp_path):
    spec = load(tmp_path, SERVER, "#cloud-config\nhostname: {{ server }}\n")
    assert spec.servers["a"].checks.cloud_init is True
    (tmp_path / "s").mkdir()
    spec = load(tmp_path / "s", SERVER, "#!/bin/sh\necho hi\n")
    assert spec.servers["a"].checks.cloud_init is False
    spec = load(tmp_path, SERVER + "[servers.a.checks]\ncloud_init = false\n",
                "#cloud-config\nhostname: {{ server }}\n")
    assert spec.servers["a"].checks == Checks(cloud_init=False)
    assert not spec.servers["a"].checks.any


@pytest.mark.parametrize(("checks", "words"), [
    ("tpc = [22]", ["servers.a.checks.tpc", "unknown key", "did you mean 'tcp'?"]),
    ("tcp = 22", ["servers.a.checks.tcp", "expected a list"]),
    ("tcp = [0]", ["servers.a.checks.tcp[0]", "1 to 65535"]),
    ("tcp = [65536]", ["servers.a.checks.tcp[0]", "65536"]),
    ('tcp = ["22"]', ["servers.a.checks.tcp[0]", "'22'"]),
    ("cloud_init = 1", ["servers.a.checks.cloud_init", "true or false"]),
    ('http = ["ftp://{address}/"]', ["servers.a.checks.http[0]", "not an http:// or https:// URL"]),
    ('http = ["http://{adress}/"]', ["servers.a.checks.http[0]", "unknown placeholder {adress}"]),
    ('command = ["echo {address!r}"]', ["servers.a.checks.command[0]", "conversion"]),
    ('command = ["echo {"]', ["servers.a.checks.command[0]", "use {address}"]),
    ('command = ["echo \'unbalanced"]', ["servers.a.checks.command[0]", "cannot be split"]),
    ('command = [""]', ["servers.a.checks.command[0]", "empty string"]),
    ("timeout = 0", ["servers.a.checks.timeout", "above 0"]),
    ('interval = "5"', ["servers.a.checks.interval", "above 0"]),
])
def test_bad_checks_refused_naming_the_key(tmp_path, checks, words):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, SERVER + "[servers.a.checks]\n" + checks + "\n")
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_bad_default_checks_named_as_defaults(tmp_path):
    with pytest.raises(ConfigError, match=r"defaults\.checks\.tcp\[1\]: 70000"):
        load(tmp_path, "[defaults.checks]\ntcp = [22, 70000]\n" + SERVER)


def test_placeholders_and_fill():
    assert placeholders("ssh {address} -l {name} {{x}} {id}") == ["address", "name", "id"]
    assert fill("http://{address}:8080/{{x}}", {"address": "10.0.0.5"}) == \
        "http://10.0.0.5:8080/{x}"
    with pytest.raises(ValueError):
        placeholders("{address:>10}")


# -- cloud-config against cloud-init 22.4's schema ------------------------------------------
BAD = """#cloud-config
hostname: a
write_file:
  - path: /etc/x
runcmd: echo hi
write_files:
  - content: hi
"""


def test_schema_finds_unknown_top_level_key_wrong_type_and_missing_property():
    errors, warnings = problems(BAD, "22.4")
    assert ("write_file", 3, "is not a cloud-init 22.4 key (did you mean 'write_files'?)") \
        in errors
    assert ("runcmd", 5, "'echo hi' is not of type 'array'") in errors
    assert ("write_files.0", 7, "'path' is a required property") in errors
    assert warnings == []


def test_schema_deprecated_value_is_a_warning_not_an_error():
    errors, warnings = problems("#cloud-config\nusers:\n  - name: a\n    sudo: false\n", "22.4")
    assert errors == []
    assert len(warnings) == 1 and warnings[0].startswith("users.0.sudo (line 4): DEPRECATED")


def test_schema_accepts_the_repo_templates_and_common_modules():
    text = ("#cloud-config\nhostname: web1\ntimezone: \"UTC\"\npackages: [nginx]\n"
            "runcmd:\n  - [systemctl, start, nginx]\n  - echo done\nwrite_files:\n"
            "  - path: /etc/motd\n    permissions: '0644'\n    content: hi\n"
            "final_message: bye\nssh_pwauth: false\n")
    assert problems(text, "22.4") == ([], [])


def test_top_level_keys_are_the_schema_modules_own():
    keys = top_level_keys(load_schema("22.4"))
    assert {"runcmd", "write_files", "users", "bootcmd", "hostname", "final_message"} <= keys
    assert "write_file" not in keys and len(keys) > 80


def test_line_of_maps_a_yaml_path_to_its_line():
    assert line_of(BAD, ["write_files", 0]) == 7
    assert line_of(BAD, ["runcmd"]) == 5
    assert line_of(BAD, ["nowhere"]) == 2  # the closest node found: the top-level mapping


def test_load_refuses_a_bad_cloud_config_naming_key_line_and_template(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, SERVER, "#cloud-config\nhostname: {{ server }}\nruncmd: echo\n")
    message = str(info.value)
    for word in ("servers.a.userdata", "cloud-config key runcmd", "line 3 of the rendered "
                 "user_data", f"template {tmp_path / 't.j2'}", "not of type 'array'",
                 "cloud-init 22.4"):
        assert word in message, (word, message)


def test_cloud_init_version_none_skips_and_unknown_version_refused(tmp_path, monkeypatch):
    bad = "#cloud-config\nwrite_file: []\n"
    spec = load(tmp_path, '[defaults]\ncloud_init_version = "none"\n' + SERVER, bad)
    assert spec.cloud_init_version == "none"
    with pytest.raises(ConfigError, match=r"defaults\.cloud_init_version: no cloud-init schema "
                                          r"for version '19\.1'"):
        load(tmp_path, '[defaults]\ncloud_init_version = "19.1"\n' + SERVER, bad)
    monkeypatch.setenv("IVC_CLOUD_INIT_VERSION", "none")
    assert load(tmp_path, SERVER, bad).cloud_init_version == "none"
    monkeypatch.setenv("IVC_CLOUD_INIT_VERSION", "23.1")
    with pytest.raises(ConfigError, match="IVC_CLOUD_INIT_VERSION: no cloud-init schema"):
        load(tmp_path, SERVER, bad)


def test_jinja_user_data_is_not_checked_but_said(tmp_path):
    text = "## template: jinja\n#cloud-config\nwrite_file: []\n"
    spec = load(tmp_path, SERVER, text)
    assert spec.servers["a"].userdata.startswith(b"## template: jinja")
    assert spec.servers["a"].checks.cloud_init is True
    warnings = check_cloud_config(text, version="22.4", spec_path=Path("s.toml"),
                                  entry="servers.a.userdata", template=Path("t.j2"))
    assert warnings == ["servers.a.userdata: template t.j2 is a '## template: jinja' user_data, "
                        "rendered by cloud-init at boot: not checked against the schema"]


def test_final_message_is_what_the_cloud_init_check_waits_for(tmp_path):
    spec = load(tmp_path, SERVER, '#cloud-config\nfinal_message: "{{ server }} up ${uptime}s"\n')
    assert spec.servers["a"].checks.final_message == "a up ${uptime}s"
    (tmp_path / "s").mkdir()
    assert load(tmp_path / "s", SERVER, "#cloud-config\nhostname: h\n"
                ).servers["a"].checks.final_message is None


@pytest.mark.parametrize(("template", "words"), [
    ('#cloud-config\nfinal_message: "$version $uptime"\n', "no literal word"),
    ("#cloud-config\nfinal_message: |\n  ## template: jinja\n  {{ '{{' }} v1.region }}\n",
     "jinja"),
    ("## template: jinja\n#cloud-config\nfinal_message: \"done {{ '{{' }} v1.region }}\"\n",
     "the user_data is a '## template: jinja'"),
    ('#cloud-config\nfinal_message: "done on $HOSTNAME"\n', "'$HOSTNAME'"),
])
def test_final_message_that_cannot_be_recognised_is_refused_before_any_change(
        tmp_path, template, words):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, SERVER, template)
    message = str(info.value)
    assert "\n" not in message
    for word in ("servers.a.userdata: final_message", "the cloud_init check cannot recognise",
                 words, "set checks.cloud_init = false ([servers.a.checks]) or keep a literal "
                 "word in final_message"):
        assert word in message, (word, message)
    assert ConfigError.exit_code == 2
    # without the cloud_init check there is nothing to recognise
    spec = load(tmp_path, SERVER + "[servers.a.checks]\ncloud_init = false\ntcp = [22]\n",
                template)
    assert spec.servers["a"].checks.final_message is None
