"""Cloud = the connection + the run's Settings + the run's state (issue 15): no copy of a
Settings field, typed listings per worker view, typed state shared by every view."""

from __future__ import annotations

import dataclasses

import pytest
import tenacity
from fakecloud import FakeConnection

from ivc_tasks.cloud import Cloud
from ivc_tasks.resources.resolve import forget, list_servers
from ivc_tasks.run_state import Listings, RunShared
from ivc_tasks.settings import Settings, make_settings


def test_cloud_copies_no_settings_field():
    """Timings, retries, floating network, workers: read from ``cloud.settings`` only."""
    own = {f.name for f in dataclasses.fields(Cloud)}
    assert own == {"conn", "settings", "counter", "run_id", "retry_overrides", "sleep", "clock",
                   "wall_clock", "listings", "shared"}
    assert own & {f.name for f in dataclasses.fields(Settings)} == set()


def test_make_settings_builds_what_load_settings_would_hold(tmp_path):
    settings = make_settings("e1", root=tmp_path, poll_interval=0, parallel=3)
    assert (settings.env, settings.poll_interval, settings.parallel) == ("e1", 0, 3)
    assert settings.env_file == tmp_path / "env" / "e1.env"
    assert settings.spec_path == tmp_path / "env" / "e1.toml"
    assert settings.boot_timeout == 300.0 and settings.floating_network is None  # defaults
    with pytest.raises(TypeError):
        make_settings("e1", boot_timout=1)  # a typo is no silent default


def test_a_worker_view_shares_the_run_and_has_its_own_listings():
    conn = FakeConnection()
    conn.add_server("web1")
    cloud = Cloud(conn=conn, settings=make_settings("e", poll_interval=0),
                  retry_overrides={"wait": tenacity.wait_none()})
    assert [s.name for s in list_servers(cloud)] == ["web1"]
    view = cloud.worker_view()
    assert (view.conn, view.settings, view.counter, view.run_id, view.shared) == (
        cloud.conn, cloud.settings, cloud.counter, cloud.run_id, cloud.shared)
    assert view.shared is cloud.shared and isinstance(view.shared, RunShared)
    assert view.listings is not cloud.listings
    before = conn.count("compute.servers")
    assert [s.name for s in list_servers(view)] == ["web1"]  # copied: no new request
    forget(view, "servers")  # a worker's change makes ITS listing stale ...
    assert "servers" in cloud.listings and "servers" not in view.listings  # ... not the run's
    assert conn.count("compute.servers") == before


def test_a_view_with_its_own_server_listing_gives_back_only_the_rest():
    """rotate's preflight plans a new server against a listing without the old one."""
    cloud = Cloud(conn=None, settings=make_settings("e"))
    cloud.listings.put("servers", ["old", "other"])
    view = cloud.worker_view(servers=["other"])
    assert view.listings.get("servers") == ["other"]
    view.listings.put("images:ivc-tiny", ["img"])
    cloud.listings.take_from(view.listings, skip=("servers",))
    assert cloud.listings.get("servers") == ["old", "other"]
    assert cloud.listings.get("images:ivc-tiny") == ["img"]


def test_listings_hold_forget_and_copy():
    listings = Listings({"a": [1]})
    assert "a" in listings and listings.get("b") is None
    assert listings.put("b", [2]) == [2] and listings.get("b") == [2]
    copy = listings.copy(a=[9])
    listings.forget("a", "missing")
    assert "a" not in listings and copy.get("a") == [9] and copy.get("b") == [2]
