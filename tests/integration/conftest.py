"""Fixtures for tests against the local cloud (`invoke devcloud.up` must have run).

These tests fail, rather than skip, when the cloud does not answer: CI brings it up first.
"""

import os
import uuid
from pathlib import Path

import openstack
import pytest

ROOT = Path(__file__).resolve().parents[2]
CLOUDS_YAML = Path(os.environ.get("DEVCLOUD_DIR", ROOT / ".devcloud")) / "clouds.yaml"


def _connect(cloud: str):
    if not CLOUDS_YAML.exists():
        pytest.fail(f"{CLOUDS_YAML} is missing: run `invoke devcloud.up` first")
    config = openstack.config.OpenStackConfig(config_files=[str(CLOUDS_YAML)])
    return openstack.connection.Connection(config=config.get_one(cloud=cloud))


@pytest.fixture(scope="session")
def conn():
    """The demo user (member role in project ivc), as ivc's users are."""
    return _connect("ivc-local")


@pytest.fixture(scope="session")
def admin_conn():
    return _connect("ivc-local-admin")


@pytest.fixture
def unique():
    """A prefix for this test's resources, so that tests never collide."""
    return f"t-{uuid.uuid4().hex[:8]}"
