"""Version discovery is retried like any transient failure (issue 15): a connection reset while
openstacksdk discovers a service's versions surfaces as ``NotSupported`` ("exists but does not
have any supported versions"), since keystoneauth swallows the reset. No cloud is contacted."""

from __future__ import annotations

import json

import pytest
import requests
import tenacity
from keystoneauth1 import discover
from keystoneauth1 import session as ksa_session
from openstack import exceptions as sdk

from ivc_tasks.cloud import (
    DISCOVERY_CONNECT_RETRIES,
    Cloud,
    CloudCallError,
    connect,
    retry_discovery,
)
from ivc_tasks.retry import is_transient
from ivc_tasks.settings import load_settings, make_settings

NO_VERSIONS = sdk.NotSupported(
    "The image service for ivc-local:RegionOne exists but does not have any supported versions.")
VERSIONS = {"versions": [{"id": "v2.15", "status": "CURRENT",
                          "links": [{"rel": "self", "href": "http://fake/image/v2/"}]}]}


class Flaky(requests.adapters.BaseAdapter):
    """A transport that resets the first ``resets`` connections, then answers ``body``."""

    def __init__(self, resets: int, body: dict):
        super().__init__()
        self.resets, self.body, self.sent = resets, body, 0

    def send(self, request, **kwargs):
        self.sent += 1
        if self.sent <= self.resets:
            raise requests.ConnectionError("Connection reset by peer")
        response = requests.Response()
        response.status_code, response.url, response.request = 200, request.url, request
        response._content = json.dumps(self.body).encode()
        response.headers["Content-Type"] = "application/json"
        return response

    def close(self):
        pass


@pytest.fixture
def no_sleep(monkeypatch):
    slept = []
    monkeypatch.setattr(ksa_session.time, "sleep", slept.append)
    return slept


def discover_through(session, transport):
    session.session.mount("http://fake/", transport)
    return discover.get_discovery(session, "http://fake/image/", authenticated=False)


def test_a_reset_during_discovery_is_retried_by_the_session(no_sleep):
    session = ksa_session.Session()
    retry_discovery(session)
    transport = Flaky(resets=DISCOVERY_CONNECT_RETRIES, body=VERSIONS)
    found = discover_through(session, transport)
    assert transport.sent == DISCOVERY_CONNECT_RETRIES + 1
    assert [v["version"] for v in found.version_data()] == [(2, 15)]
    assert no_sleep == [0.5, 1.0, 2.0]  # keystoneauth's own back-off


def test_without_it_the_reset_fails_discovery_at_once(no_sleep):
    transport = Flaky(resets=1, body=VERSIONS)
    with pytest.raises(Exception) as info:
        discover_through(ksa_session.Session(), transport)
    assert "reset" in str(info.value) and transport.sent == 1 and no_sleep == []


def test_connect_retries_discovery_but_never_ivcs_own_calls(tmp_path):
    (tmp_path / "env").mkdir()
    (tmp_path / "clouds.yaml").write_text(
        "clouds:\n  c:\n    auth:\n      auth_url: http://127.0.0.1:9/\n      username: u\n"
        "      password: p\n      project_name: p\n      user_domain_name: Default\n"
        "      project_domain_name: Default\n")
    (tmp_path / "env" / "x.env").write_text("OS_CLOUD=c\nOS_CLIENT_CONFIG_FILE=clouds.yaml\n")
    cloud = connect(load_settings("x", root=tmp_path, environ={}), authenticate=False)
    assert cloud.conn.session._connect_retries == DISCOVERY_CONNECT_RETRIES
    for service in ("compute", "network", "image", "block-storage", "identity"):
        assert cloud.conn.config.get_connect_retries(service) == 0, service  # proxies: ivc's


def test_no_versions_is_transient_and_other_not_supported_is_not():
    assert is_transient(NO_VERSIONS) is True
    assert is_transient(sdk.ServiceDiscoveryException(
        "Failed to create a working proxy for service image: No endpoint data found.")) is True
    assert is_transient(sdk.NotSupported("resize is not supported by this cloud")) is False
    assert is_transient(sdk.ServiceDiscoveryException(
        "Failed to create a working proxy for service image: No valid endpoint")) is False


def make_cloud(**kw):
    return Cloud(conn=None, settings=make_settings("test", poll_interval=0, **kw),
                 sleep=lambda s: None, retry_overrides={"wait": tenacity.wait_none()})


def test_a_call_whose_discovery_failed_is_sent_again():
    attempts = []

    def find_image():
        attempts.append(1)
        if len(attempts) < 3:
            raise NO_VERSIONS
        return "ivc-tiny"

    assert make_cloud().call("find image ivc-tiny", find_image) == "ivc-tiny"
    assert len(attempts) == 3


def test_a_genuine_no_versions_fails_once_the_budget_is_spent():
    attempts = []

    def find_image():
        attempts.append(1)
        raise NO_VERSIONS

    with pytest.raises(CloudCallError, match="find image ivc-tiny failed: .*does not have any "
                                             "supported versions"):
        make_cloud(retry_attempts=3).call("find image ivc-tiny", find_image)
    assert len(attempts) == 3
