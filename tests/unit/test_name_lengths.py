"""Names longer than the cloud takes (issue 15): an image, flavor, network, security group or
volume reference over the service's 255 characters names nothing there, so it is exit 2 before
any request (a 10 MB image name used to reach Glance and come back as HTTP 414, exit 1).

Same harness as test_bad_inputs.py: the task runs as a user runs it (``--json``); the fake
cloud must see no call at all."""

import json

import pytest
from invoking import run
from test_bad_inputs import SECRET, SPEC, TEMPLATE, World  # noqa: F401 (conftest reads SPEC, TEMPLATE)

from ivc_tasks.spec import CINDER_NAME_MAX, GLANCE_NAME_MAX, NEUTRON_NAME_MAX, NOVA_NAME_MAX

OVER = "n" * 256  # one over every service's 255
MEGA = "x" * 1_000_000  # tomllib takes ~0.4 s for it (10 MB: ~4 s; the integration test)


@pytest.fixture
def world(tmp_path, monkeypatch, task_env):
    return World(tmp_path, monkeypatch, task_env)


def test_the_limits_are_the_services_own():
    assert (GLANCE_NAME_MAX, NOVA_NAME_MAX, NEUTRON_NAME_MAX, CINDER_NAME_MAX) == (255,) * 4


CASES = [
    ("image of 1 MB", f'[servers.app2]\nimage = "{MEGA}"\n', "servers.app2.image",
     "Glance", "an image", 1_000_000),
    ("image in defaults", None, "defaults.image", "Glance", "an image", 256),
    ("flavor", f'[servers.app2]\nflavor = "{OVER}"\n', "servers.app2.flavor", "Nova", "a flavor",
     256),
    ("network", f'[servers.app2]\nnetworks = ["private", "{OVER}"]\n',
     "servers.app2.networks[1]", "Neutron", "a network", 256),
    ("security group", f'[servers.app2]\nsecurity_groups = ["{OVER}"]\n',
     "servers.app2.security_groups[0]", "Neutron", "a security group", 256),
    ("volume", f'[servers.app2]\nvolumes = ["{OVER}"]\n', "servers.app2.volumes[0]", "Cinder",
     "a volume", 256),
]


TASKS = [["deploy"], ["create-instance", "--name", "app"], ["status"]]


@pytest.mark.parametrize("argv,case,text,entry,service,kind,length", [
    pytest.param(argv, *case, id=f"{case[0]}: {' '.join(argv)}")
    for case in CASES for argv in TASKS])
def test_a_name_longer_than_the_cloud_takes_is_exit_2_before_any_request(
        world, capsys, argv, case, text, entry, service, kind, length):
    if text is None:  # in [defaults]: every server inherits it
        world.spec.write_text(world.spec.read_text().replace(
            'image = "ivc-tiny"', f'image = "{OVER}"'))
    else:
        world.add(text)
    assert run(*argv, "--json") == 2
    out, err = capsys.readouterr()
    data = json.loads(out)
    shown = ("n" if length == 256 else "x") * 80
    expected = (f"{world.spec}: {entry}: '{shown}'... ({length} characters) is longer than the "
                f"255 characters {service} takes for {kind}'s name or id, so it names nothing "
                f"there; write the name or id of {kind} as the cloud shows it")
    assert data["exit_code"] == 2 and data["error"] == expected, data["error"]
    assert expected in err and "Traceback" not in out + err and SECRET not in out + err
    assert world.fake.calls == []  # not one request, not even a listing


@pytest.mark.parametrize("length", [255, 36])
def test_a_name_of_the_services_length_is_taken(world, capsys, length):
    """The control: 255 characters pass the check (the fake cloud then finds no such image)."""
    world.add(f'[servers.app2]\nimage = "{"i" * length}"\n')
    assert run("deploy", "--json") == 2
    data = json.loads(capsys.readouterr().out)
    assert "longer than" not in data["error"] and "no image" in data["error"].lower(), data
