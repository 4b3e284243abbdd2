"""Quota before any change (issue 18): the plan's peak need against Nova's limits and Neutron's
quota details; too little is exit 2 with zero mutating requests."""

import pytest
from fakecloud import FakeConnection, http_error
from test_ops import SPEC, new_cloud  # noqa: F401 (conftest's spec_of reads SPEC)

from ivc_tasks.errors import EXIT_INVALID
from ivc_tasks.resources.quota import Need, Quota, QuotaTooLow, check, fits
from ivc_tasks.steps.deploy import deploy
from ivc_tasks.steps.quota_check import check_quota


@pytest.fixture
def conn():
    conn = FakeConnection()
    conn.add_volume("data")
    return conn


def test_a_deploy_that_needs_more_servers_than_the_quota_is_exit_2_and_changes_nothing(
        conn, spec_of):
    conn.limits["instances"] = 1
    with pytest.raises(QuotaTooLow) as info:
        deploy(new_cloud(conn), spec_of())
    assert info.value.exit_code == EXIT_INVALID
    assert "instances: limit 1, used 0, this run needs 2 more" in str(info.value)
    assert conn.mutations() == [] and conn.servers == []


def test_a_deploy_within_the_quota_goes_ahead(conn, spec_of):
    conn.limits.update(instances=2, ports=2)
    result = deploy(new_cloud(conn), spec_of())
    assert len(conn.servers) == 2 and result.changed


def test_rotations_need_one_extra_server_each_in_flight_and_the_fitting_count_is_named(
        conn, spec_of):
    spec = spec_of()
    deploy(new_cloud(conn), spec)
    conn.limits["instances"] = 3  # 2 used: one rotation at a time fits, two do not
    cloud = new_cloud(conn)
    assert check_quota(cloud, spec, rotations=["app"], in_flight=1) == []
    calls = len(conn.calls)
    with pytest.raises(QuotaTooLow) as info:
        check_quota(new_cloud(conn), spec, rotations=["app", "edge"], in_flight=2)
    assert str(info.value) == (
        "quota too low for this run (nothing changed): instances: limit 3, used 2, this run "
        "needs 2 more; --max-unavailable 1 would fit; raise the project's quota or free some "
        "of it")
    assert not [c for c in conn.calls[calls:] if c[0].split(".")[1].startswith("create")]


def test_ram_and_ports_are_named_with_their_units(conn, spec_of):
    conn.limits.update(ram=100, ports=0)
    for flavor in conn.flavors:
        flavor.ram, flavor.vcpus = 512, 1
    with pytest.raises(QuotaTooLow) as info:
        check_quota(new_cloud(conn), spec_of(), creates=["edge"])
    message = str(info.value)
    assert "ram: limit 100 MiB, used 0 MiB, this run needs 512 MiB more" in message
    assert "ports: limit 0, used 0, this run needs 1 more" in message


def test_a_hidden_quota_is_assumed_to_allow_and_said_once(conn, spec_of):
    conn.fail_next("compute.get_limits", http_error(403, "Forbidden"))
    warnings = check_quota(new_cloud(conn), spec_of(), creates=["edge", "app"])
    assert warnings == ["the cloud does not show the quota of instances, cores, ram: assumed "
                        "to allow what this run needs"]


def test_fits_and_need_totals():
    quota = Quota(limit={"instances": 4, "cores": -1}, used={"instances": 1})
    need = Need(fixed={"instances": 1}, per_rotation={"instances": 1, "cores": 8},
                rotations=5, in_flight=3)
    assert need.total("instances") == 4 and need.total("cores") == 24
    assert not fits(quota, need, 3) and fits(quota, need, 2)
    assert quota.free("cores") is None  # unlimited
    assert check(None, Need()) == []  # nothing needed: not even a request
