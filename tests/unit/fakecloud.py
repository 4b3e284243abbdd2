"""A small in-memory stand-in for an openstacksdk Connection, for ops tests without a cloud.

It holds servers, groups, volumes... as SimpleNamespace objects, records every call in
``calls`` (``("compute.create_server", {...})``), and can be told to fail the next call of a
method (``fail_next("compute.create_server", exc, after=True)`` makes the call take effect, then
raise, as when a response is lost).
"""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace
from typing import Any

import requests
from openstack import exceptions as sdk
from requests.structures import CaseInsensitiveDict

PROJECT = "p-1"
_ids = itertools.count(1)


def new_id(kind: str) -> str:
    return f"{kind}-{next(_ids)}"


def http_error(status: int, message: str | None = None, **headers: str) -> Exception:
    """The openstacksdk exception for a response, built the way openstacksdk builds it."""
    resp = requests.Response()
    resp.status_code = status
    resp.reason = "Reason"
    resp.headers = CaseInsensitiveDict(headers)
    if message:
        resp.headers["content-type"] = "application/json"
        resp._content = json.dumps({"NeutronError": {"message": message}}).encode()
    else:
        resp._content = b""
    try:
        sdk.raise_from_response(resp)
    except sdk.HttpException as exc:
        return exc
    raise AssertionError("no exception raised")


def default_egress(group_id: str) -> list[dict[str, Any]]:
    return [{"id": new_id("rule"), "security_group_id": group_id, "direction": "egress",
             "ethertype": family, "protocol": None, "port_range_min": None,
             "port_range_max": None, "remote_ip_prefix": None, "remote_group_id": None}
            for family in ("IPv4", "IPv6")]


class _Proxy:
    def __init__(self, cloud: "FakeConnection", service: str):
        self._cloud, self._service = cloud, service

    def __getattr__(self, name: str):
        method = getattr(self._cloud, f"{self._service}_{name}")

        def call(*args, **kwargs):
            key = f"{self._service}.{name}"
            self._cloud.calls.append((key, args, kwargs))
            failures = self._cloud.failures.get(key)
            if failures:
                exc, after = failures.pop(0)
                if not after:
                    raise exc
                method(*args, **kwargs)
                raise exc
            return method(*args, **kwargs)

        return call


class FakeConnection:
    """The parts of openstacksdk's Connection that ivc uses."""

    current_project_id = PROJECT

    def __init__(self):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.failures: dict[str, list] = {}
        self.groups: list[SimpleNamespace] = []
        self.servers: list[SimpleNamespace] = []
        self.volumes: list[SimpleNamespace] = []
        self.fips: list[SimpleNamespace] = []
        self.ports: list[SimpleNamespace] = []
        self.keys: list[SimpleNamespace] = [SimpleNamespace(name="ivc-demo",
                                                            public_key="ssh-ed25519 AAAA demo")]
        self.images = [SimpleNamespace(id="img-1", name="ivc-tiny")]
        self.flavors = [SimpleNamespace(id="fl-1", name="m1.tiny"),
                        SimpleNamespace(id="fl-2", name="m1.small")]
        self.networks = [SimpleNamespace(id="net-pub", name="public", is_router_external=True),
                         SimpleNamespace(id="net-priv", name="private", is_router_external=False)]
        self.boot_polls = 1  # GETs a new server stays in BUILD
        self.network = _Proxy(self, "network")
        self.compute = _Proxy(self, "compute")
        self.block_storage = _Proxy(self, "block_storage")
        self.image = _Proxy(self, "image")

    def fail_next(self, key: str, exc: Exception, *, after: bool = False) -> None:
        self.failures.setdefault(key, []).append((exc, after))

    def count(self, key: str) -> int:
        return sum(1 for k, _, _ in self.calls if k == key)

    # -- network ------------------------------------------------------------------------------
    def network_security_groups(self, project_id=None):
        return iter(list(self.groups))

    def network_create_security_group(self, name, description=""):
        group = SimpleNamespace(id=new_id("sg"), name=name, description=description)
        group.security_group_rules = default_egress(group.id)
        self.groups.append(group)
        return group

    def network_update_security_group(self, group, **attrs):
        for key, value in attrs.items():
            setattr(group, key, value)
        return group

    def network_create_security_group_rules(self, data):
        by_id = {g.id: g for g in self.groups}
        if len({body["security_group_id"] for body in data}) > 1:  # as Neutron (BadRequest)
            raise http_error(400, "Only allowed to update rules for one security profile at a "
                                  "time")
        made = []
        for body in data:
            rule = {"id": new_id("rule"), "remote_group_id": None, "remote_ip_prefix": None,
                    "protocol": None, "port_range_min": None, "port_range_max": None, **body}
            by_id[body["security_group_id"]].security_group_rules.append(rule)
            made.append(SimpleNamespace(**rule))
        return iter(made)

    def network_delete_security_group_rule(self, rule_id, ignore_missing=True):
        for group in self.groups:
            group.security_group_rules = [r for r in group.security_group_rules
                                          if r["id"] != rule_id]

    def network_networks(self):
        return iter(self.networks)

    def network_ports(self, device_id=None):
        return iter([p for p in self.ports if p.device_id == device_id])

    def network_ips(self, project_id=None):
        return iter(list(self.fips))

    def network_create_ip(self, floating_network_id, port_id=None, description=""):
        fip = SimpleNamespace(id=new_id("fip"), floating_ip_address=f"203.0.113.{len(self.fips) + 10}",
                              floating_network_id=floating_network_id, port_id=port_id,
                              description=description)
        self.fips.append(fip)
        return fip

    def network_update_ip(self, fip, port_id=None):
        fip.port_id = port_id
        return fip

    # -- compute ------------------------------------------------------------------------------
    def compute_servers(self, details=True):
        return iter(list(self.servers))

    def compute_flavors(self, details=True):
        return iter(self.flavors)

    def compute_keypairs(self):
        return iter(list(self.keys))

    def compute_create_keypair(self, name, public_key):
        key = SimpleNamespace(name=name, public_key=public_key)
        self.keys.append(key)
        return key

    def compute_create_server(self, **body):
        server = SimpleNamespace(
            id=new_id("srv"), name=body["name"], status="BUILD", task_state="spawning",
            metadata=dict(body.get("metadata", {})), addresses={}, fault=None,
            created_at="2026-01-01T00:00:00Z", attached_volumes=[], body=body, polls=0)
        for bdm in body.get("block_device_mapping", []):
            if bdm["source_type"] == "volume":
                server.attached_volumes.append({"id": bdm["uuid"]})
                self._attach(bdm["uuid"], server.id)
        for net in body.get("networks", []):
            self.ports.append(SimpleNamespace(id=new_id("port"), device_id=server.id,
                                              network_id=net["uuid"], fixed_ips=[{"ip": "x"}]))
        self.servers.append(server)
        return server

    def compute_get_server(self, server_id):
        server = next(s for s in self.servers if s.id == server_id)
        server.polls += 1
        if server.status == "BUILD" and server.polls >= self.boot_polls:
            server.status, server.task_state = "ACTIVE", None
        return server

    def compute_create_volume_attachment(self, server_id, volume_id):
        self._attach(volume_id, server_id)
        server = next(s for s in self.servers if s.id == server_id)
        server.attached_volumes.append({"id": volume_id})
        return SimpleNamespace(id=volume_id)

    def compute_set_server_metadata(self, server_id, **metadata):
        server = next(s for s in self.servers if s.id == server_id)
        server.metadata.update(metadata)
        return server

    # -- block storage / image ----------------------------------------------------------------
    def _attach(self, volume_id, server_id):
        volume = next(v for v in self.volumes if v.id == volume_id)
        volume.status = "in-use"
        volume.attachments = [{"server_id": server_id}]

    def block_storage_volumes(self, details=True):
        return iter(list(self.volumes))

    def block_storage_get_volume(self, volume_id):
        return next(v for v in self.volumes if v.id == volume_id)

    def image_images(self, name=None):
        return iter([i for i in self.images if i.name == name])

    def image_get_image(self, image_id):
        for image in self.images:
            if image.id == image_id:
                return image
        raise http_error(404, "image not found")

    # -- helpers for tests --------------------------------------------------------------------
    def add_volume(self, name, status="available", server_id=None):
        volume = SimpleNamespace(id=new_id("vol"), name=name, status=status, attachments=[])
        self.volumes.append(volume)
        if server_id:
            self._attach(volume.id, server_id)
        return volume

    def add_server(self, name, *, metadata=None, status="ACTIVE"):
        server = SimpleNamespace(id=new_id("srv"), name=name, status=status, task_state=None,
                                 metadata=dict(metadata or {}), addresses={}, fault=None,
                                 created_at="2025-01-01T00:00:00Z", attached_volumes=[], polls=0)
        self.servers.append(server)
        return server

    def mutations(self) -> list[str]:
        """The calls that change something, in order."""
        prefixes = ("create", "update", "delete", "set")
        return [k for k, _, _ in self.calls if k.split(".", 1)[1].startswith(prefixes)]
