"""A small in-memory stand-in for an openstacksdk Connection, for ops tests without a cloud.

It holds servers, groups, volumes, ports, floating IPs and keypairs, records every call in
``calls`` (``("compute.create_server", args, kwargs)``; ``requests`` counts them, as one HTTP
request each), and can be told to fail the next call of a method (``fail_next(
"compute.create_server", exc, after=True)`` makes the call take effect, then raise, as when a
response is lost).

What it answers the way the cloud does:
  * a GET, DELETE or update of an unknown id raises openstacksdk's ``NotFoundException`` (404),
    built from a response as openstacksdk builds it (``http_error``);
  * what a call returns is a copy of the cloud's record, as a fresh response is: a test's
    objects do not change under the code that holds them (servers, volumes, ports, floating IPs
    and keypairs; a server copy's ``set_metadata(session, metadata=..., replace=...)`` is
    the PUT of openstacksdk's ``Server.set_metadata``, recorded as ``server.set_metadata``);
  * things take time: a new server is BUILD for ``boot_polls`` GETs; stop, start and delete
    leave a task under way (``powering-off``, ``powering-on``, ``deleting``) for
    ``power_polls`` / ``delete_polls`` GETs of the server; a deleted server is then
    ``DELETED`` once and 404 after, its ports are deleted (their floating IPs disassociated)
    and its volumes detach; a volume attach goes through ``attach_states`` (default
    ``attaching``; ``("reserved", "attaching")`` for both) and a detach through ``detaching``,
    each state lasting ``volume_polls`` GETs of the volume;
  * Nova's refusals: 409 to stop a server that is not ACTIVE (or start one not SHUTOFF), to
    change the metadata of a server in BUILD or ERROR or with a task under way, to attach or
    detach on a server in ERROR or BUILD or with a task under way; 400 to attach a volume
    that is not available ("already attached to instances: <id>"); Neutron's 409 for a port
    that has a floating IP already; 409 to create a keypair whose name is taken (rotate's lock).

Listings do not advance anything; only the GETs of the thing itself do.

For tests: ``add_server(name, metadata=..., networks=[ids], status=...)``, ``add_volume``,
``add_fip(port_id, description)``, ``add_lock(name, public_key)`` (another run's lock),
``next_boot_fault`` (the next new server goes to ERROR with that fault), ``delete_now(id)``
and ``settle()`` (let time pass), and to read the end state ``server(id)`` (None when gone),
``deleted`` (ids, in order), ``holders(volume)``, ``ports_of(server id)``, ``fip_server(fip)``,
``mutations()``, ``count(key)``, ``requests`` and ``requests_by_method()``.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import re
import threading
from collections import Counter
from types import SimpleNamespace
from typing import Any

import requests
from openstack import exceptions as sdk
from requests.structures import CaseInsensitiveDict

PROJECT = "p-1"
# The fake cloud's wall clock (unix time: 2026-01-01T00:00:00Z), and the default of the runs
# ``ticking_cloud`` makes: a lock keypair's created_at and a run's "now" agree, whatever the day.
WALL_NOW = 1767225600.0
_ids = itertools.count(1)
# the metadata and attach/detach checks of Nova (check_instance_state): vm states allowed
METADATA_STATES = ("ACTIVE", "PAUSED", "SUSPENDED", "SHUTOFF")
VOLUME_ACTION_STATES = ("ACTIVE", "PAUSED", "SUSPENDED", "SHUTOFF", "SHELVED",
                        "SHELVED_OFFLOADED")


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


def not_found(kind: str, ident: Any) -> Exception:
    return http_error(404, f"{kind} {ident} could not be found.")


def conflict(message: str) -> Exception:
    return http_error(409, message)


def default_egress(group_id: str) -> list[dict[str, Any]]:
    return [{"id": new_id("rule"), "security_group_id": group_id, "direction": "egress",
             "ethertype": family, "protocol": None, "port_range_min": None,
             "port_range_max": None, "remote_ip_prefix": None, "remote_group_id": None}
            for family in ("IPv4", "IPv6")]


def _id(thing: Any) -> str:
    """An id, or the id of a resource (openstacksdk accepts either)."""
    return thing if isinstance(thing, str) else thing.id


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _stamp(unix: float) -> str:
    """A unix time as Nova writes created_at (UTC, no zone)."""
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


class Resource(SimpleNamespace):
    """A cloud record; callers get copies of it (``snapshot``), as from a fresh response."""

    def snapshot(self) -> Resource:
        out = copy.copy(self)
        for key, value in vars(self).items():
            if isinstance(value, (dict, list)):
                setattr(out, key, copy.deepcopy(value))
        return out


class FakeServer(Resource):
    """A server record; its copies carry openstacksdk's ``Server.set_metadata``."""

    def set_metadata(self, session: Any, metadata: dict | None = None, replace: bool = False):
        fresh = self._conn._call("server.set_metadata", self._conn._set_metadata,
                                 (self.id,), {"metadata": dict(metadata or {}),
                                              "replace": replace})
        self.metadata = dict(fresh.metadata)
        return self


class _Proxy:
    def __init__(self, cloud: FakeConnection, service: str):
        self._cloud, self._service = cloud, service

    def __getattr__(self, name: str):
        method = getattr(self._cloud, f"{self._service}_{name}")
        key = f"{self._service}.{name}"
        return lambda *args, **kwargs: self._cloud._call(key, method, args, kwargs)


FINISHED_CONSOLE = (
    "Cloud-init v. 22.4.2 running 'init-local' at Fri, 04 Dec 2026 14:00:01 +0000. Up 4.1 seconds.\n"
    "Cloud-init v. 22.4.2 running 'init' at Fri, 04 Dec 2026 14:00:02 +0000. Up 5.0 seconds.\n"
    "-----BEGIN SSH HOST KEY KEYS-----\n"
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkm6Y7mZkR0c1H4cVqvVn0l8m7m1o2aQ3n6q8kT5yXb root@{name}\n"
    "-----END SSH HOST KEY KEYS-----\n"
    "Cloud-init v. 22.4.2 finished at Fri, 04 Dec 2026 14:00:04 +0000. Datasource "
    "DataSourceConfigDrive [net,ver=2][source=/dev/sr0].  Up 7.0 seconds\n")


def is_lock_call(key: str, args: tuple, kwargs: dict) -> bool:
    """A call on one of ivc's lock keypairs (``ivc-lock-...``)."""
    if "keypair" not in key:
        return False
    name = kwargs.get("name") or (args[0] if args else "")
    return str(getattr(name, "name", name)).startswith("ivc-lock-")


def value_of_flavor(server) -> str | None:
    flavor = getattr(server, "flavor", None)
    return flavor.get("id") if isinstance(flavor, dict) else getattr(flavor, "id", None)


class FakeConnection:
    """The parts of openstacksdk's Connection that ivc uses."""

    current_project_id = PROJECT

    def __init__(self):
        self.wall_clock = lambda: WALL_NOW   # a keypair's created_at (the locks' age)
        self.calls: list[tuple[str, tuple, dict]] = []
        self.failures: dict[str, list] = {}
        self.groups: list[SimpleNamespace] = []
        self.servers: list[FakeServer] = []
        self.volumes: list[Resource] = []
        self.fips: list[Resource] = []
        self.ports: list[Resource] = []
        self.keys: list[Resource] = [Resource(name="ivc-demo", public_key="ssh-ed25519 AAAA demo",
                                              created_at="2025-01-01T00:00:00.000000")]
        self.images = [SimpleNamespace(id="img-1", name="ivc-tiny"),
                       SimpleNamespace(id="img-2", name="ivc-tiny-2")]
        self.flavors = [SimpleNamespace(id="fl-1", name="m1.tiny"),
                        SimpleNamespace(id="fl-2", name="m1.small")]
        self.networks = [SimpleNamespace(id="net-pub", name="public", is_router_external=True),
                         SimpleNamespace(id="net-priv", name="private", is_router_external=False)]
        self.boot_polls = 1  # GETs a new server stays in BUILD
        self.power_polls = 1  # GETs a stop or start stays under way
        self.delete_polls = 1  # GETs a deleted server shows "deleting" before DELETED, then 404
        self.volume_polls = 1  # GETs each transitional volume state lasts
        self.attach_states: tuple[str, ...] = ("attaching",)
        # console logs: by server id, else a finished cloud-init 22.4 boot with host keys;
        # console_refused = an HTTP status (403, 501...) for every console request
        self.consoles: dict[str, str] = {}
        self.console_default = FINISHED_CONSOLE  # formatted with the server's name
        self.console_refused: int | None = None
        self.next_boot_fault: str | None = None  # the next created server goes to ERROR so
        self.deleted: list[str] = []  # ids of the servers deleted, in order
        # the shared poller's list (no arguments: ivc's other listings pass details=True)
        # advances every server or volume as a GET of each would
        self.advance_on_list = True
        self.limits = {"instances": -1, "cores": -1, "ram": -1, "ports": -1, "floating_ips": -1}
        self._lock = threading.RLock()
        self.network = _Proxy(self, "network")
        self.compute = _Proxy(self, "compute")
        self.block_storage = _Proxy(self, "block_storage")
        self.image = _Proxy(self, "image")

    # -- the wire -------------------------------------------------------------------------------
    def _call(self, key: str, method, args: tuple, kwargs: dict):
        with self._lock:
            self.calls.append((key, args, kwargs))
            self._before_get(key, args if key not in ("compute.servers", "block_storage.volumes")
                             else () if "details" not in kwargs else ("details",))
            failures = self.failures.get(key)
            if failures:
                exc, after = failures.pop(0)
                if not after:
                    raise exc
                method(*args, **kwargs)
                raise exc
            return self._wire(method(*args, **kwargs))

    def _wire(self, result: Any) -> Any:
        """What goes over the wire: copies of the records."""
        if isinstance(result, Resource):
            return self._snapshot(result)
        if isinstance(result, (list, tuple)) or hasattr(result, "__next__"):
            return iter([self._snapshot(r) if isinstance(r, Resource) else r for r in result])
        return result

    def _before_get(self, key: str, args: tuple) -> None:
        """A GET of a server or volume: a change under way advances (before the method runs,
        so that a test's stand-in for the method sees it too)."""
        if key in ("compute.servers", "block_storage.volumes") and not args and \
                self.advance_on_list:
            self._advance_listed(key)
            return
        if key == "compute.get_server" and args:
            found = self.server(_id(args[0]))
        elif key == "block_storage.get_volume" and args:
            found = next((v for v in self.volumes if v.id == _id(args[0])), None)
        else:
            return
        if found is not None:
            self._advance(found)

    def _snapshot(self, item: Resource) -> Resource:
        out = item.snapshot()
        if isinstance(item, FakeServer):
            out._conn = self
            ports = [p for p in self.ports if p.device_id == item.id]
            if ports:
                out.addresses = self._addresses(ports)
        return out

    def _addresses(self, ports: list[Resource]) -> dict[str, list[dict[str, str]]]:
        names = {n.id: n.name for n in self.networks}
        out: dict[str, list[dict[str, str]]] = {}
        for port in ports:
            entries = out.setdefault(names.get(port.network_id, port.network_id), [])
            for fixed in port.fixed_ips:
                entries.append({"addr": fixed["ip_address"], "OS-EXT-IPS:type": "fixed"})
            for fip in self.fips:
                if fip.port_id == port.id:
                    entries.append({"addr": fip.floating_ip_address,
                                    "OS-EXT-IPS:type": "floating"})
        return out

    # -- for tests ------------------------------------------------------------------------------
    def fail_next(self, key: str, exc: Exception, *, after: bool = False) -> None:
        self.failures.setdefault(key, []).append((exc, after))

    def count(self, key: str) -> int:
        return sum(1 for k, _, _ in self.calls if k == key)

    @property
    def requests(self) -> int:
        """Every call made (each is one HTTP request of openstacksdk)."""
        return len(self.calls)

    def requests_by_method(self) -> Counter:
        """The calls by the HTTP method openstacksdk would use."""
        verbs = (("get", "GET"), ("create", "POST"), ("stop", "POST"), ("start", "POST"),
                 ("update", "PUT"), ("set", "PUT"), ("add", "PUT"), ("delete", "DELETE"))
        out: Counter = Counter()
        for key, _, _ in self.calls:
            name = key.split(".", 1)[1]
            out[next((m for prefix, m in verbs if name.startswith(prefix)), "GET")] += 1
        return out

    def mutations(self, *, locks: bool = True) -> list[str]:
        """The calls that change something, in order (the per-server locks' keypairs left out
        when ``locks`` is False)."""
        prefixes = ("create", "update", "delete", "set", "stop", "start", "add")
        return [k for k, args, kw in self.calls if k.split(".", 1)[1].startswith(prefixes)
                and (locks or not is_lock_call(k, args, kw))]

    def count_keypairs(self, key: str) -> int:
        """Calls ``key`` (``compute.create_keypair``...) on keypairs other than ivc's locks."""
        return sum(1 for k, args, kw in self.calls if k == key and not is_lock_call(k, args, kw))

    def server(self, server_id: str) -> FakeServer | None:
        """The cloud's record of a server (None when it is gone)."""
        return next((s for s in self.servers if s.id == server_id), None)

    def volume(self, volume_id: str) -> Resource:
        return next(v for v in self.volumes if v.id == volume_id)

    def holders(self, volume: Resource) -> list[str]:
        """The servers Cinder says the volume is attached to."""
        return [a["server_id"] for a in volume.attachments]

    def ports_of(self, server_id: str) -> list[Resource]:
        return [p for p in self.ports if p.device_id == server_id]

    def fip_server(self, fip: Resource) -> str | None:
        """The server whose port holds the floating IP."""
        port = next((p for p in self.ports if p.id == fip.port_id), None)
        return port.device_id if port is not None else None

    def settle(self) -> None:
        """Let every change under way complete (as time passing would), deleted servers going
        away and what they held with them."""
        while True:
            busy = [i for i in [*self.servers, *self.volumes] if i.steps]
            gone = [s for s in self.servers if s.status == "DELETED"]
            if not busy and not gone:
                return
            for item in busy:
                while item.steps:
                    item.steps.pop(0)[1]()
            for server in [s for s in self.servers if s.status == "DELETED"]:
                self._remove(server)

    def delete_now(self, server_id: str) -> None:
        """The server is gone at once (Nova's delete has completed); its volumes detach as
        usual (``volume_polls`` GETs each), its ports and their floating IPs go with it."""
        self._remove(self._server(server_id))

    def add_volume(self, name, status="available", server_id=None):
        volume = Resource(id=new_id("vol"), name=name, status=status, attachments=[],
                          size=1, gets=0, steps=[])
        self.volumes.append(volume)
        if server_id:
            self._attach(volume.id, server_id)
        return volume

    def add_server(self, name, *, metadata=None, status="ACTIVE", networks=(), image="img-1",
                   flavor="m1.tiny", task_state=None, fault=None):
        """A server as a previous run left it; ``networks``: ids, one port on each."""
        server = FakeServer(id=new_id("srv"), name=name, status=status, task_state=task_state,
                            metadata=dict(metadata or {}), addresses={}, fault=fault,
                            created_at="2025-01-01T00:00:00Z", attached_volumes=[], polls=0,
                            image={"id": image}, flavor={"original_name": flavor}, steps=[])
        self.servers.append(server)
        for network_id in networks:
            self._add_port(server.id, network_id)
        return server

    def add_fip(self, port_id=None, description="", network_id="net-pub"):
        return self.network_create_ip(network_id, port_id, description)

    def add_lock(self, keypair_name: str, public_key: str, created_at: str | None = None):
        """A keypair as another run's lock leaves it."""
        key = Resource(name=keypair_name, public_key=public_key,
                       created_at=created_at or _stamp(self.wall_clock()))
        self.keys.append(key)
        return key

    # -- quota --------------------------------------------------------------------------------
    def compute_get_limits(self):
        """Nova's absolute limits: ``self.limits`` (-1 unlimited), use from the servers."""
        live = [s for s in self.servers if s.status not in ("DELETED", "SOFT_DELETED")]
        flavors = {f.id: f for f in self.flavors}
        cores = sum(getattr(flavors.get(value_of_flavor(s)), "vcpus", 1) for s in live)
        ram = sum(getattr(flavors.get(value_of_flavor(s)), "ram", 512) for s in live)
        return SimpleNamespace(absolute=SimpleNamespace(
            instances=self.limits["instances"], instances_used=len(live),
            total_cores=self.limits["cores"], total_cores_used=cores,
            total_ram=self.limits["ram"], total_ram_used=ram))

    def network_get_quota(self, project_id, details=False):
        return SimpleNamespace(
            ports={"limit": self.limits["ports"], "used": len(self.ports), "reserved": 0},
            floating_ips={"limit": self.limits["floating_ips"], "used": len(self.fips),
                          "reserved": 0})

    # -- network ------------------------------------------------------------------------------
    def network_security_groups(self, project_id=None):
        return iter(list(self.groups))

    def network_create_security_group(self, name, description=""):
        group = SimpleNamespace(id=new_id("sg"), name=name, description=description, tags=[])
        group.security_group_rules = default_egress(group.id)
        self.groups.append(group)
        return group

    def network_add_tag(self, resource, tag):
        """PUT /v2.0/security-groups/{id}/tags/{tag}: adds one tag, keeps the others."""
        group = next(g for g in self.groups if g.id == _id(resource))
        if tag not in group.tags:
            group.tags.append(tag)
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

    def _add_port(self, server_id, network_id, *, given=False, **attrs):
        """A port; ``given``: made by the user (or ivc), not by Nova: a server given it at
        boot only unbinds it when deleted or detached (Nova deletes the ports it made)."""
        port = Resource(id=new_id("port"), device_id=server_id, network_id=network_id,
                        fixed_ips=[{"ip_address": f"10.0.0.{len(self.ports) + 10}",
                                    "subnet_id": f"sub-{network_id}"}],
                        **{"name": "", "description": "", "tags": [], "given": given,
                           "created_at": _now(), **attrs})
        self.ports.append(port)
        return port

    def network_ports(self, device_id=None, device_owner=None, project_id=None,
                      network_id=None, name=None):
        owners = device_owner if isinstance(device_owner, list) else [device_owner]
        return iter([p for p in self.ports if (device_id is None or p.device_id == device_id)
                     and (device_owner is None or getattr(p, "device_owner", None) in owners)
                     and (network_id is None or p.network_id == network_id)
                     and (name is None or p.name == name)])

    def _port(self, port) -> Resource:
        found = next((p for p in self.ports if p.id == _id(port)), None)
        if found is None:
            raise not_found("Port", _id(port))
        return found

    def network_get_port(self, port_id):
        return self._port(port_id)

    def network_create_port(self, network_id, name="", description="",
                            security_group_ids=None):
        return self._add_port("", network_id, given=True, name=name, description=description,
                              security_group_ids=list(security_group_ids or []))

    def network_set_tags(self, resource, tags):
        """PUT /v2.0/ports/{id}/tags: the port's tags become ``tags``."""
        port = self._port(resource)
        port.tags = list(tags)
        return port

    def network_routers(self):
        return iter(getattr(self, "routers", []))

    def network_ips(self, project_id=None):
        return iter(list(self.fips))

    def _check_port_free(self, port_id, fip_id=None):
        if port_id is None:
            return
        if not any(p.id == port_id for p in self.ports):
            raise not_found("Port", port_id)
        taken = [f for f in self.fips if f.port_id == port_id and f.id != fip_id]
        if taken:
            raise conflict(f"Cannot associate floating IP with port {port_id} because it "
                           f"already has a floating IP {taken[0].floating_ip_address} on "
                           "external network")

    def network_create_ip(self, floating_network_id, port_id=None, description=""):
        self._check_port_free(port_id)
        fip = Resource(id=new_id("fip"),
                       floating_ip_address=f"203.0.113.{len(self.fips) + 10}",
                       floating_network_id=floating_network_id, port_id=port_id,
                       description=description)
        self.fips.append(fip)
        return fip

    def _fip(self, fip) -> Resource:
        found = next((f for f in self.fips if f.id == _id(fip)), None)
        if found is None:
            raise not_found("Floating IP", _id(fip))
        return found

    def network_update_ip(self, fip, port_id=None):
        stored = self._fip(fip)
        self._check_port_free(port_id, stored.id)
        stored.port_id = port_id
        return stored

    def network_delete_ip(self, fip, ignore_missing=True):
        try:
            stored = self._fip(fip)
        except sdk.NotFoundException:
            if ignore_missing:
                return None
            raise
        self.fips.remove(stored)
        return None

    # -- compute: servers ---------------------------------------------------------------------
    def compute_servers(self, details=True, name=None):
        """``name``: Nova's regex filter on the name."""
        return iter([s for s in self.servers if name is None or re.search(name, s.name)])

    def compute_flavors(self, details=True):
        return iter(self.flavors)

    def compute_create_server(self, **body):
        flavor = next((f.name for f in self.flavors if f.id == body.get("flavor_id")), None)
        server = FakeServer(
            id=new_id("srv"), name=body["name"], status="BUILD", task_state="spawning",
            metadata=dict(body.get("metadata", {})), addresses={}, fault=None,
            created_at=_now(), attached_volumes=[], body=body, polls=0,
            image={"id": body.get("image_id")}, flavor={"original_name": flavor}, steps=[],
            boot_fault=self.next_boot_fault)
        self.next_boot_fault = None
        for bdm in body.get("block_device_mapping", []):
            if bdm["source_type"] == "volume":
                self._attach(bdm["uuid"], server.id)
                if {"id": bdm["uuid"]} not in server.attached_volumes:
                    server.attached_volumes.append({"id": bdm["uuid"]})
        for net in body.get("networks", []):
            if "port" in net:  # a port given at boot: bound to the server, never deleted by it
                port = self._port(net["port"])
                if port.device_id:
                    raise conflict(f"Port {port.id} is still in use.")
                port.device_id = server.id
            else:
                self._add_port(server.id, net["uuid"])
        self.servers.append(server)
        return server

    def _server(self, server) -> FakeServer:
        found = self.server(_id(server))
        if found is None:
            raise not_found("Instance", _id(server))
        return found

    def compute_get_server(self, server_id):
        server = self._server(server_id)
        server.polls += 1
        if server.status == "BUILD" and server.polls >= self.boot_polls:
            if getattr(server, "boot_fault", None):
                server.status, server.task_state = "ERROR", None
                server.fault = {"message": server.boot_fault, "code": 500}
            else:
                server.status, server.task_state = "ACTIVE", None
        if server.status == "DELETED":
            self._remove(server)
        return server

    def _advance_listed(self, key: str) -> None:
        """A list of servers or volumes (the shared poller's request): each one listed advances
        as a GET of it would; a server deleted meanwhile is left out."""
        if key == "block_storage.volumes":
            for volume in list(self.volumes):
                self._advance(volume)
            return
        for server in list(self.servers):
            self._advance(server)
            try:
                self.compute_get_server(server.id)  # BUILD -> ACTIVE/ERROR, DELETED -> gone
            except sdk.NotFoundException:
                pass

    def _advance(self, item: Resource) -> None:
        """One GET of something with a change under way: after enough GETs, the next state."""
        if not item.steps:
            return
        item.gets = getattr(item, "gets", 0) + 1
        polls, apply = item.steps[0]
        if item.gets >= polls:
            item.steps.pop(0)
            item.gets = 0
            apply()

    def _power(self, server_id, want_from, task, to, verb):
        server = self._server(server_id)
        if server.status != want_from or server.task_state:
            raise conflict(f"Cannot '{verb}' instance {server.id} while it is in vm_state "
                           f"{server.status.lower()}, task_state {server.task_state}")
        server.task_state = task

        def done():
            server.status, server.task_state = to, None

        server.steps.append((self.power_polls, done))

    def compute_get_server_console_output(self, server_id, length=None):
        server = self._server(server_id)
        if self.console_refused is not None:
            raise http_error(self.console_refused, "Policy doesn't allow "
                             "os_compute_api:os-console-output to be performed.")
        text = self.consoles.get(server.id, self.console_default.format(name=server.name))
        lines = text.splitlines()
        return {"output": "\n".join(lines[-length:] if length else lines)}

    def compute_stop_server(self, server_id):
        self._power(server_id, "ACTIVE", "powering-off", "SHUTOFF", "stop")

    def compute_start_server(self, server_id):
        self._power(server_id, "SHUTOFF", "powering-on", "ACTIVE", "start")

    def compute_delete_server(self, server_id, ignore_missing=True, force=False):
        server = self.server(_id(server_id))
        if server is None:
            if ignore_missing:
                return None
            raise not_found("Instance", _id(server_id))
        if server.task_state == "deleting":
            return None
        server.task_state = "deleting"
        server.steps = []

        def gone():
            server.status, server.task_state = "DELETED", None

        server.steps.append((self.delete_polls, gone))
        return None

    def _remove(self, server: FakeServer) -> None:
        """The server is gone: Neutron deletes its ports (disassociating their floating IPs),
        Cinder detaches its volumes."""
        self.servers.remove(server)
        self.deleted.append(server.id)
        ports = {p.id for p in self.ports if p.device_id == server.id and not p.given}
        self.ports = [p for p in self.ports if p.id not in ports]
        for port in self.ports:  # a port given at boot is unbound and stays
            if port.device_id == server.id:
                port.device_id = ""
        for fip in self.fips:
            if fip.port_id in ports:
                fip.port_id = None
        for volume in self.volumes:
            if server.id in self.holders(volume):
                self._detach_steps(volume, server.id, nova=None)

    # -- compute: interfaces (os-interface) ---------------------------------------------------
    def compute_create_server_interface(self, server, port_id=None):
        """POST .../os-interface: bind a free port to the server (409 when it is in use)."""
        found, port = self._server(server), self._port(port_id)
        if port.device_id:
            raise conflict(f"Port {port.id} is still in use.")
        port.device_id = found.id
        return Resource(port_id=port.id, server_id=found.id)

    def compute_delete_server_interface(self, port, server=None, ignore_missing=True):
        """DELETE .../os-interface/<port>: Nova unbinds a port it was given, deletes its own."""
        found, port = self._server(server), self._port(port)
        if port.device_id != found.id:
            if ignore_missing:
                return None
            raise not_found("Port", port.id)
        if port.given:
            port.device_id = ""
        else:
            self.ports.remove(port)
        return None

    def compute_set_server_metadata(self, server_id, **metadata):
        return self._set_metadata(server_id, metadata=metadata, replace=False)

    def _set_metadata(self, server_id, *, metadata, replace):
        server = self._server(server_id)
        if server.status not in METADATA_STATES or server.task_state:
            raise conflict(f"Cannot 'update_metadata' instance {server.id} while it is in "
                           f"vm_state {server.status.lower()}, task_state {server.task_state}")
        if replace:
            server.metadata = dict(metadata)
        else:
            server.metadata.update(metadata)
        return server

    # -- compute: volume attachments ----------------------------------------------------------
    def _check_volume_action(self, server: FakeServer, verb: str) -> None:
        if server.status not in VOLUME_ACTION_STATES or server.task_state:
            raise conflict(f"Cannot '{verb}' instance {server.id} while it is in vm_state "
                           f"{server.status.lower()}, task_state {server.task_state}")

    def compute_create_volume_attachment(self, server_id, volume_id):
        server = self._server(server_id)
        volume = self._volume(volume_id)
        self._check_volume_action(server, "attach_volume")
        if volume.status != "available":
            holders = self.holders(volume)
            if holders:
                raise http_error(400, f"Invalid volume: volume {volume.id} is already attached "
                                      f"to instances: {', '.join(holders)}")
            raise http_error(400, f"Invalid volume: Volume {volume.id} status must be available "
                                  f"or downloading to reserve, but the current status is "
                                  f"{volume.status}.")
        if {"id": volume.id} not in server.attached_volumes:
            server.attached_volumes.append({"id": volume.id})
        first, *rest = self.attach_states or ("attaching",)
        volume.status = first
        for state in rest:
            volume.steps.append((self.volume_polls,
                                 lambda state=state: setattr(volume, "status", state)))
        volume.steps.append((self.volume_polls, lambda: self._attach(volume.id, server.id)))
        volume.gets = 0
        return SimpleNamespace(id=volume.id, server_id=server.id, volume_id=volume.id)

    def compute_delete_volume_attachment(self, server, volume_id, ignore_missing=True):
        stored = self._server(server)
        volume = self._volume(volume_id)
        attached = stored.id in self.holders(volume) or \
            {"id": volume.id} in stored.attached_volumes
        if not attached:
            if ignore_missing:
                return None
            raise not_found(f"Volume attachment of volume {volume.id} on instance", stored.id)
        self._check_volume_action(stored, "detach_volume")
        if volume.status != "in-use":
            raise http_error(400, f"Invalid volume: Unable to detach volume. Volume status must "
                                  f"be 'in-use' and attach_status must be 'attached' to detach. "
                                  f"(status {volume.status})")
        self._detach_steps(volume, stored.id, nova=stored)
        return None

    def _detach_steps(self, volume: Resource, server_id: str, nova: FakeServer | None) -> None:
        volume.status = "detaching"
        volume.steps = []
        volume.gets = 0

        def done():
            volume.attachments = [a for a in volume.attachments if a["server_id"] != server_id]
            volume.status = "in-use" if volume.attachments else "available"
            if nova is not None:
                nova.attached_volumes = [a for a in nova.attached_volumes
                                         if a.get("id") != volume.id]

        volume.steps.append((self.volume_polls, done))

    # -- compute: keypairs --------------------------------------------------------------------
    def compute_keypairs(self):
        return iter(list(self.keys))

    def compute_get_keypair(self, name):
        found = next((k for k in self.keys if k.name == _name(name)), None)
        if found is None:
            raise not_found("Keypair", _name(name))
        return found

    def compute_create_keypair(self, name, public_key):
        if any(k.name == name for k in self.keys):
            raise conflict(f"Key pair '{name}' already exists.")
        key = Resource(name=name, public_key=public_key, created_at=_stamp(self.wall_clock()))
        self.keys.append(key)
        return key

    def compute_delete_keypair(self, name, ignore_missing=True):
        found = next((k for k in self.keys if k.name == _name(name)), None)
        if found is None:
            if ignore_missing:
                return None
            raise not_found("Keypair", _name(name))
        self.keys.remove(found)
        return None

    # -- block storage / image ----------------------------------------------------------------
    def _attach(self, volume_id, server_id):
        """The attach is complete (Cinder and Nova agree)."""
        volume = self.volume(volume_id)
        volume.status = "in-use"
        volume.attachments = [{"server_id": server_id}]
        server = self.server(server_id)
        if server is not None and {"id": volume_id} not in server.attached_volumes:
            server.attached_volumes.append({"id": volume_id})

    def _volume(self, volume_id) -> Resource:
        found = next((v for v in self.volumes if v.id == _id(volume_id)), None)
        if found is None:
            raise not_found("Volume", _id(volume_id))
        return found

    def block_storage_volumes(self, details=True):
        return iter(list(self.volumes))

    def block_storage_get_volume(self, volume_id):
        return self._volume(volume_id)

    def image_images(self, name=None):
        return iter([i for i in self.images if name is None or i.name == name])

    def image_get_image(self, image_id):
        for image in self.images:
            if image.id == image_id:
                return image
        raise http_error(404, "image not found")


def _name(keypair: Any) -> str:
    return keypair if isinstance(keypair, str) else keypair.name


def ticking_cloud(conn: FakeConnection, env: str, *, tick: float = 0.5, **fields: Any):
    """A fresh run (new run id, empty cache) on the fake cloud, with no sleeping and a clock
    that ticks ``tick`` seconds at every look, so that a wait that never ends times out after a
    few hundred polls instead of minutes; its wall clock is the fake cloud's (``WALL_NOW``).
    ``fields`` override any Cloud field (e.g. ``sleep``
    to record the waits) or Settings field (``parallel``, ``floating_network``...)."""
    import dataclasses

    import tenacity

    from ivc_tasks.cloud import Cloud
    from ivc_tasks.settings import make_settings

    ticks = itertools.count()
    cloud_fields = {f.name for f in dataclasses.fields(Cloud)}
    settings = {"poll_interval": 0} | {k: v for k, v in fields.items() if k not in cloud_fields}
    defaults = dict(sleep=lambda s: None, clock=lambda: next(ticks) * tick,
                    wall_clock=getattr(conn, "wall_clock", lambda: WALL_NOW),
                    retry_overrides={"wait": tenacity.wait_none()})
    return Cloud(conn=conn, settings=make_settings(env, **settings),
                 **(defaults | {k: v for k, v in fields.items() if k in cloud_fields}))
