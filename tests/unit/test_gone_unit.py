"""What "gone" means, decided once (issue 15): a server is gone when Nova answers 404 for it OR
shows it DELETED or SOFT_DELETED. Nova lists a deleted server as DELETED for a moment after a
GET already shows it so: every look ivc takes (destroy, rotate, status, the listings) and the
tests count it as gone."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fakecloud import FakeConnection, ticking_cloud
from test_destroy_status_unit import SPEC, tags  # noqa: F401 (conftest reads SPEC)

from ivc_tasks.resources.servers import (
    GONE_STATUSES,
    is_gone,
    managed_servers,
    present,
    unmanaged_twins,
)
from ivc_tasks.resources.waits import get_server
from ivc_tasks.steps.destroy import destroy
from ivc_tasks.steps.status import status

ENV = "test"   # SPEC is test_destroy_status_unit's; spec and conn are conftest's


@pytest.mark.parametrize("server,gone", [
    (None, True), (SimpleNamespace(status="DELETED"), True),
    (SimpleNamespace(status="SOFT_DELETED"), True), (SimpleNamespace(status="deleted"), True),
    (SimpleNamespace(status="ACTIVE"), False), (SimpleNamespace(status="ERROR"), False),
    (SimpleNamespace(status="SHUTOFF"), False), (SimpleNamespace(status="BUILD"), False),
])
def test_is_gone(server, gone):
    assert is_gone(server) is gone
    assert present([server] if server is not None else []) == ([] if gone else [server])


def test_the_gone_statuses_are_defined_once():
    assert GONE_STATUSES == ("DELETED", "SOFT_DELETED")


@pytest.mark.parametrize("gone_status", GONE_STATUSES)
def test_a_server_nova_still_lists_as_deleted_counts_nowhere(spec, gone_status):
    conn = FakeConnection()
    kept = conn.add_server("web2", metadata=tags(spec, "web2"), networks=["net-priv"])
    deleted = conn.add_server("web1", metadata=tags(spec), networks=["net-priv"],
                              status=gone_status)
    twin = conn.add_server("web1", status=gone_status)  # one ivc did not make, deleted too
    cloud = ticking_cloud(conn, ENV)
    assert managed_servers(cloud, "web1") == [] and unmanaged_twins(cloud, "web1") == []
    assert [s.id for s in managed_servers(cloud)] == [kept.id]
    assert get_server(cloud, deleted.id) is None and get_server(cloud, twin.id) is None
    report = {s.name: s for s in status(ticking_cloud(conn, ENV), spec).servers}
    assert report["web1"].id is None and report["web2"].id == kept.id
    result = destroy(ticking_cloud(conn, ENV), spec, "web1")
    assert result.actions == [] and conn.mutations() == []  # nothing left to delete
