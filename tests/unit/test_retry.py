"""The retry policy: which errors are transient, how long it waits, what it logs."""

import json
import logging

import pytest
import requests
import tenacity
from keystoneauth1 import exceptions as ksa
from openstack import exceptions as sdk
from requests.structures import CaseInsensitiveDict

from ivc_tasks.retry import (
    cloud_retrying,
    describe_cloud_error,
    is_transient,
    request_id,
    retry_after_seconds,
    wait_retry_after,
)


def response(status, body=None, **headers):
    """A requests.Response as the cloud would send it."""
    resp = requests.Response()
    resp.status_code = status
    resp.reason = "Reason"
    resp.headers = CaseInsensitiveDict(headers)
    if body is not None:
        resp.headers.setdefault("content-type", "application/json")
        resp._content = json.dumps(body).encode()
    else:
        resp._content = b""
    return resp


def http_error(status, message=None, **headers):
    """The openstacksdk exception for a response, built the way openstacksdk builds it."""
    body = {"Error": {"message": message}} if message else None
    try:
        sdk.raise_from_response(response(status, body, **headers))
    except sdk.HttpException as exc:
        return exc
    raise AssertionError("no exception raised")


class ConnectFailure(Exception):
    """A look-alike recognised by its class name (no keystoneauth1 import needed)."""


class SSLError(Exception):
    pass


@pytest.mark.parametrize(("exc", "conflict", "expected"), [
    # connection failures and timeouts
    (ksa.ConnectFailure("refused"), False, True),
    (ksa.ConnectTimeout("slow"), False, True),
    (ksa.SSLError("bad cert"), False, False),
    (ksa.UnknownConnectionError("?", ValueError()), False, False),
    (requests.ConnectionError("reset"), False, True),
    (requests.ReadTimeout("read"), False, True),
    (requests.exceptions.SSLError("bad cert"), False, False),
    (ConnectFailure("by name"), False, True),
    (SSLError("by name"), False, False),
    # HTTP statuses
    (http_error(429), False, True),
    (http_error(502), False, True),
    (http_error(503), False, True),
    (http_error(504), False, True),
    (http_error(500), False, False),
    (http_error(400), False, False),
    (http_error(401), False, False),
    (http_error(403), False, False),
    (http_error(404), False, False),
    (http_error(413), False, False),
    (http_error(409), False, False),
    (http_error(409), True, True),
    (http_error(400), True, False),
    # quota errors never, whatever the status
    (http_error(409, "Quota exceeded for resources: ['port']."), True, False),
    (http_error(403, "Quota exceeded for cores"), False, False),
    (http_error(503, "quota service unavailable"), False, False),
    # keystoneauth1's own HTTP errors carry http_status
    (ksa.ServiceUnavailable(), False, True),
    (ksa.NotFound(), False, False),
    (ksa.Conflict(), True, True),
    # anything else
    (ValueError("boom"), False, False),
    (sdk.ResourceTimeout("waited"), False, False),
])
def test_is_transient(exc, conflict, expected):
    assert is_transient(exc, conflict_is_transient=conflict) is expected


@pytest.mark.parametrize(("exc", "expected"), [
    (http_error(429, **{"Retry-After": "7"}), 7.0),
    (http_error(429, **{"Retry-After": "0.5"}), 0.5),
    (http_error(429, **{"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), None),
    (http_error(429), None),
    (http_error(503, **{"Retry-After": "7"}), None),  # only a 429 is honoured
    (ksa.HttpError(http_status=429, retry_after=4), 4.0),
    (None, None),
])
def test_retry_after_seconds(exc, expected):
    assert retry_after_seconds(exc) == expected


def run(policy, outcomes):
    """Run policy over a function raising/returning ``outcomes`` in turn; return result, calls."""
    calls = []

    def fn():
        calls.append(1)
        item = outcomes[len(calls) - 1]
        if isinstance(item, BaseException):
            raise item
        return item

    return policy(fn), len(calls)


def test_retries_transient_then_succeeds():
    policy = cloud_retrying(wait=tenacity.wait_none())
    assert run(policy, [http_error(503), ksa.ConnectFailure("x"), "ok"]) == ("ok", 3)


def test_fails_fast_on_permanent_error():
    error = http_error(404, "Server not found")
    with pytest.raises(sdk.NotFoundException) as info:
        run(cloud_retrying(wait=tenacity.wait_none()), [error, "never"])
    assert info.value is error


def test_stops_after_attempts_and_reraises_the_cloud_error():
    errors = [http_error(503, f"down {i}") for i in range(4)]
    with pytest.raises(sdk.HttpException) as info:
        run(cloud_retrying(attempts=3, wait=tenacity.wait_none()), errors)
    assert info.value is errors[2]


@pytest.mark.parametrize(("conflict", "expected_calls"), [(False, 1), (True, 2)])
def test_conflict_only_when_asked(conflict, expected_calls):
    outcomes = [http_error(409, "volume is attaching"), "ok"]
    policy = cloud_retrying(conflict_is_transient=conflict, wait=tenacity.wait_none())
    try:
        _, calls = run(policy, outcomes)
    except sdk.ConflictException:
        calls = 1
    assert calls == expected_calls


@pytest.mark.parametrize(("retry_after", "expected_sleep"), [("3", 3.0), ("500", 60.0)])
def test_default_wait_honours_retry_after_capped(retry_after, expected_sleep):
    slept = []
    policy = cloud_retrying(sleep=slept.append)
    assert run(policy, [http_error(429, **{"Retry-After": retry_after}), "ok"]) == ("ok", 2)
    assert slept == [expected_sleep]


def test_default_wait_is_jittered_and_bounded():
    slept = []
    policy = cloud_retrying(sleep=slept.append, attempts=6)
    run(policy, [http_error(503)] * 5 + ["ok"])
    assert len(slept) == 5
    assert all(0 <= s <= 20 for s in slept)


def test_wait_retry_after_falls_back():
    wait = wait_retry_after(tenacity.wait_fixed(9), cap=5)
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.set_exception((sdk.HttpException, http_error(503), None))
    assert wait(state) == 9
    state.set_exception((sdk.HttpException, http_error(429, **{"Retry-After": "30"}), None))
    assert wait(state) == 5


def test_logs_a_warning_naming_operation_and_error(caplog):
    policy = cloud_retrying(operation="attach web1-data", wait=tenacity.wait_none())
    with caplog.at_level(logging.WARNING, logger="ivc"):
        run(policy, [http_error(503, "try later", **{"x-openstack-request-id": "req-1"}), "ok"])
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [(
        "ivc", logging.WARNING,
        "attach web1-data failed (attempt 1 of 6): HTTP 503: try later (request id req-1); "
        "retrying in 0.0 s",
    )]


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"max_seconds": 0}])
def test_rejects_unbounded_policies(kwargs):
    with pytest.raises(ValueError):
        cloud_retrying(**kwargs)


@pytest.mark.parametrize(("exc", "expected"), [
    (http_error(409, "Quota exceeded for resources: ['port'].",
                **{"x-openstack-request-id": "req-abc"}),
     "HTTP 409: Quota exceeded for resources: ['port']. (request id req-abc)"),
    (http_error(404, "Instance\nweb1 could not be found.", **{"x-compute-request-id": "req-n"}),
     "HTTP 404: Instance web1 could not be found. (request id req-n)"),
    (http_error(503), "HTTP 503: Reason"),
    (ksa.NotFound(message="no such thing", request_id="req-k"),
     "HTTP 404: no such thing (request id req-k)"),
    (ksa.ConnectFailure("Unable to establish connection to http://127.0.0.1:8774"),
     "ConnectFailure: Unable to establish connection to http://127.0.0.1:8774"),
    (ValueError(""), "ValueError: ValueError"),
])
def test_describe_cloud_error(exc, expected):
    assert describe_cloud_error(exc) == expected


def test_request_id_prefers_the_attribute():
    exc = http_error(500, **{"x-openstack-request-id": "req-os", "x-compute-request-id": "req-c"})
    assert request_id(exc) == "req-os"
    exc.request_id = None
    assert request_id(exc) == "req-os"  # from the response headers
    exc.response.headers.pop("x-openstack-request-id")
    assert request_id(exc) == "req-c"


# -- authentication: keystoneauth wraps what failed during discovery (issue 9) -----------------
def discovery_failure(cause):
    """A DiscoveryFailure raised while handling ``cause``, as keystoneauth's generic plugin does."""
    try:
        try:
            raise cause
        except Exception as exc:
            raise ksa.DiscoveryFailure(f"Could not find versioned identity endpoints. {exc}") from exc
    except ksa.DiscoveryFailure as failure:
        return failure


@pytest.mark.parametrize("cause,transient", [
    (ksa.ServiceUnavailable(), True), (ksa.BadGateway(), True), (ksa.GatewayTimeout(), True),
    (ksa.ConnectFailure("reset"), True), (ksa.Unauthorized(), False), (ksa.Forbidden(), False),
    (ksa.NotFound(), False), (ValueError("x"), False),
], ids=["503", "502", "504", "reset", "401", "403", "404", "other"])
def test_a_discovery_failure_is_transient_when_its_cause_is(cause, transient):
    assert is_transient(discovery_failure(cause)) is transient


def test_a_discovery_failure_with_no_cause_is_not_transient():
    assert is_transient(ksa.DiscoveryFailure("no versions")) is False


def test_a_token_request_answered_503_is_retried_then_succeeds():
    policy = cloud_retrying(operation="authenticate", wait=tenacity.wait_none())
    result, calls = run(policy, [discovery_failure(ksa.ServiceUnavailable()),
                                 ksa.ServiceUnavailable(), "token"])
    assert result == "token" and calls == 3
