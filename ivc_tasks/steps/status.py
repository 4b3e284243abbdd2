"""status: every managed server of the environment, and whether it still matches its declaration.

Cheap: a constant number of list requests, made side by side, whatever the number of servers:
servers (with details and metadata), volumes, networks, flavors, images, keypairs (to show
rotation locks), and Neutron's ports and floating IPs of the project. Nothing is changed.

Addresses and floating IPs come from Neutron (the ports of each server, and the floating IP on
each port), not from Nova's ``addresses``: that is a cache Nova refreshes when Neutron notifies
it, which lags a floating IP move by up to ~20 s (a status right after a rotate would report the
floating IP missing). Nova's cache is used only for a server of which Neutron shows no port.

For each server: generation, state, addresses, floating IP, volumes, image and flavor, a
rotation under way (markers) or a lock held, and ``drift``: how it differs from its
declaration. ``rotate_due`` is True when the image, flavor, user_data (``ivc_userdata`` metadata
vs the rendered declaration) or networks differ, i.e. when only a new server applies the
declaration; missing volumes or floating IP are reported too, but other steps fix those.
``keypair`` is a rotate reason too (Nova cannot change a server's keypair); ``security_groups``
and ``metadata`` (declared keys only) are changed in place by ``converge``.
``userdata_record``: the same user_data recorded in earlier ivc's form (the hash of the gzip
bytes, which depends on the Python); ``converge`` re-records it in place, no rotate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.resources.lock import LOCK_PREFIX, lock_name, lock_text
from ivc_tasks.resources.markers import Markers
from ivc_tasks.resources.resolve import (
    list_flavors,
    list_floating_ips,
    list_images,
    list_keypairs,
    list_networks,
    list_ports,
    list_servers,
    list_volumes,
    matching,
    prefetch,
    value_of,
)
from ivc_tasks.resources.servers import (
    META_NAME,
    META_USERDATA,
    addresses,
    attached_ids,
    generation,
    managed_servers,
    server_state,
    unmanaged_twins,
)
from ivc_tasks.spec import Server, Spec
from ivc_tasks.userdata import legacy_digest, userdata_digest

STEP = "status"
ROTATE_FIELDS = ("image", "flavor", "userdata", "networks", "keypair")
_UNSAID = object()
IN_PLACE_FIELDS = ("security_groups", "metadata")  # converge changes these in place
USERDATA_RECORD = "userdata_record"  # same user_data, recorded in the old (gzip) form: re-record


@dataclass
class ServerStatus:
    name: str
    declared: bool
    id: str | None = None
    status: str = "missing"
    generation: int | None = None
    addresses: dict[str, list[str]] = field(default_factory=dict)
    floating_ips: list[str] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    image: dict[str, Any] = field(default_factory=dict)
    flavor: str | None = None
    rotation: dict[str, str] | None = None
    lock: str | None = None
    drift: list[dict[str, Any]] = field(default_factory=list)
    managed: bool = True  # False: a server of a declared name that ivc did not make

    @property
    def rotate_due(self) -> bool:
        if not self.managed:
            return False
        return self.id is None or any(d["field"] in ROTATE_FIELDS for d in self.drift)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "declared": self.declared, "id": self.id,
                "status": self.status, "generation": self.generation,
                "addresses": self.addresses, "floating_ips": self.floating_ips,
                "volumes": self.volumes, "image": self.image, "flavor": self.flavor,
                "rotation": self.rotation, "lock": self.lock, "drift": self.drift,
                "rotate_due": self.rotate_due, "managed": self.managed}

    def line(self) -> str:
        if not self.managed:
            addrs = ", ".join(a for ips in self.addresses.values() for a in ips) or "no address"
            return (f"{self.name}: {self.id} {self.status}; {addrs}; NOT MADE BY IVC "
                    f"(`invoke rotate --name {self.name} --adopt {self.id}` takes it over)")
        if self.id is None:
            return f"{self.name}: no server (rotate or create-instance makes it)"
        addrs = ", ".join(a for ips in self.addresses.values() for a in ips) or "no address"
        vols = ", ".join(v["name"] or v["id"] for v in self.volumes) or "no volumes"
        head = (f"{self.name}: {self.id} gen {self.generation} {self.status}; {addrs}; {vols}; "
                f"image {self.image.get('name') or self.image.get('id')}, flavor {self.flavor}")
        if not self.declared:
            head += "; NOT DECLARED"
        if self.rotation:
            head += f"; rotation {self.rotation['id']} under way ({self.rotation['role']})"
        if self.lock:
            head += f"; {self.lock}"
        if self.drift:
            head += "; differs: " + ", ".join(
                f"{d['field']} ({d['actual']} != declared {d['declared']})" for d in self.drift)
            head += " -> rotate due" if self.rotate_due else ""
        return head


@dataclass
class StatusResult:
    env: str
    servers: list[ServerStatus] = field(default_factory=list)
    changed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"step": STEP, "changed": False, "actions": [], "env": self.env,
                "servers": [s.to_dict() for s in self.servers],
                "rotate_due": [s.name for s in self.servers if s.declared and s.rotate_due],
                "warnings": []}

    def lines(self) -> list[str]:
        if not self.servers:
            return [f"environment {self.env}: no managed server, none declared"]
        return [s.line() for s in self.servers]


def _compute_listings(cloud: Cloud) -> None:
    """Nova's three listings one after the other: side by side, each would discover Nova's
    version on its own (two extra requests)."""
    for listing in (list_servers, list_flavors, list_keypairs):
        listing(cloud)


@dataclass
class NeutronAddresses:
    """Each server's addresses as Neutron has them: its ports' fixed IPs and the floating IP on
    each port, by network name (built from one listing of ports and one of floating IPs)."""

    ports_by_server: dict[str, list[Any]]
    fip_by_port: dict[str, Any]
    network_names: dict[str, str]

    @classmethod
    def from_listings(cls, ports: Iterable[Any], fips: Iterable[Any], networks: Iterable[Any]
                      ) -> NeutronAddresses:
        by_server: dict[str, list[Any]] = {}
        for port in ports:
            if port.device_id:
                by_server.setdefault(port.device_id, []).append(port)
        return cls(ports_by_server=by_server,
                   fip_by_port={f.port_id: f for f in fips if f.port_id},
                   network_names={n.id: n.name for n in networks})

    def of(self, server: Any) -> tuple[dict[str, list[str]], list[str]]:
        """``({network name: [fixed..., floating...]}, [floating...])``; Nova's cache when
        Neutron shows no port of the server."""
        ports = self.ports_by_server.get(server.id)
        if not ports:
            return addresses(server), _floating(server)
        out: dict[str, list[str]] = {}
        floating: list[str] = []
        for port in sorted(ports, key=lambda p: p.id):
            entries = out.setdefault(self.network_names.get(port.network_id, port.network_id), [])
            entries += [f["ip_address"] for f in port.fixed_ips or []]
            fip = self.fip_by_port.get(port.id)
            if fip is not None:
                entries.append(fip.floating_ip_address)
                floating.append(fip.floating_ip_address)
        return out, floating


def _drift(cloud: Cloud, declared: Server, server: Any,
           seen: tuple[dict[str, list[str]], list[str]] | None = None) -> list[dict[str, Any]]:
    have_addresses, floating = seen or (addresses(server), _floating(server))
    out: list[dict[str, Any]] = []

    def add(name: str, want: Any, have: Any) -> None:
        out.append({"field": name, "declared": want, "actual": have})

    image_id = value_of(server.image, "id")
    wanted_images = matching(list_images(cloud), declared.image)
    if image_id and image_id not in {value_of(i, "id") for i in wanted_images}:
        have = next((i.name for i in list_images(cloud) if i.id == image_id), image_id)
        add("image", declared.image, have)
    flavor_name = value_of(server.flavor, "original_name") or value_of(server.flavor, "name")
    flavor_id = value_of(server.flavor, "id")
    wanted_flavors = matching(list_flavors(cloud), declared.flavor)
    names = {value_of(f, "name") for f in wanted_flavors} | {declared.flavor}
    ids = {value_of(f, "id") for f in wanted_flavors}
    if not (flavor_name in names or (flavor_id and flavor_id in ids)):
        add("flavor", declared.flavor, flavor_name or flavor_id)
    had = (server.metadata or {}).get(META_USERDATA)
    now = userdata_digest(declared)
    if had != now:
        if had == legacy_digest(declared):  # recorded by an earlier ivc: same user_data
            add(USERDATA_RECORD, now, had)
        else:
            add("userdata", now, had)
    nets = list_networks(cloud)
    wanted_nets = []
    for ref in declared.networks:
        found = matching(nets, ref)
        wanted_nets.append(found[0].name if found else ref)
    have_nets = sorted(have_addresses)
    if sorted(wanted_nets) != have_nets:
        add("networks", sorted(wanted_nets), have_nets)
    volumes = list_volumes(cloud)
    attached = attached_ids(server)
    missing = []
    for ref in declared.volumes:
        found = matching(volumes, ref)
        if not found or found[0].id not in attached:
            missing.append(ref)
    if missing:
        add("volumes", list(declared.volumes), f"not attached: {', '.join(missing)}")
    if declared.floating_ip and not floating:
        add("floating_ip", True, False)
    key_name = getattr(server, "key_name", _UNSAID)
    if key_name is not _UNSAID and (declared.keypair or None) != (key_name or None):
        add("keypair", declared.keypair, key_name)
    groups = server_groups(server)
    if groups is not None and declared_groups(declared) != groups:
        add("security_groups", declared_groups(declared), groups)
    meta = server.metadata or {}
    stale = {k: v for k, v in declared.metadata.items() if meta.get(k) != v}
    if stale:
        add("metadata", dict(sorted(stale.items())),
            {k: meta.get(k) for k in sorted(stale)})
    return out


def declared_groups(declared: Server) -> list[str]:
    """The groups a server should be in, sorted: none declared means Nova's ``default``."""
    return sorted(set(declared.security_groups)) or ["default"]


def server_groups(server: Any) -> list[str] | None:
    """The names of a server's security groups as Nova lists them (once each, sorted); None
    when the listing does not say."""
    groups = getattr(server, "security_groups", None)
    if groups is None:
        return None
    return sorted({(g.get("name") if isinstance(g, dict) else getattr(g, "name", None)) or ""
                   for g in groups} - {""})


def _floating(server: Any) -> list[str]:
    return [a.get("addr") for items in (server.addresses or {}).values() for a in items
            if a.get("OS-EXT-IPS:type") == "floating"]


def status(cloud: Cloud, spec: Spec, names: Iterable[str] = ()) -> StatusResult:
    """Report every managed server of the environment (or of ``names``) against its declaration.

    :raises CloudCallError: a listing failed.
    """
    wanted = set(names or ())
    prefetch(cloud, _compute_listings, list_volumes, list_images, list_networks, list_ports,
             list_floating_ips)
    neutron = NeutronAddresses.from_listings(list_ports(cloud), list_floating_ips(cloud),
                                             list_networks(cloud))
    result = StatusResult(env=cloud.env)
    locks = {k.name: k for k in list_keypairs(cloud) if k.name.startswith(LOCK_PREFIX)}
    volumes = {v.id: v for v in list_volumes(cloud)}
    images = {i.id: i for i in list_images(cloud)}
    seen: set[str] = set()
    servers = managed_servers(cloud)
    order = {n: i for i, n in enumerate(spec.servers)}
    servers.sort(key=lambda s: (order.get(s.metadata.get(META_NAME), len(order)),
                                s.metadata.get(META_NAME), -generation(s)))
    for server in servers:
        meta = server.metadata or {}
        name = meta.get(META_NAME) or server.name
        if wanted and name not in wanted:
            continue
        seen.add(name)
        declared = spec.servers.get(name)
        seen_by_neutron = neutron.of(server)
        item = ServerStatus(
            name=name, declared=declared is not None, id=server.id,
            status=server_state(server), generation=generation(server),
            addresses=seen_by_neutron[0],
            floating_ips=seen_by_neutron[1],
            volumes=[{"id": vid, "name": getattr(volumes.get(vid), "name", None)}
                     for vid in sorted(attached_ids(server))],
            image={"id": value_of(server.image, "id"),
                   "name": getattr(images.get(value_of(server.image, "id")), "name", None)},
            flavor=value_of(server.flavor, "original_name") or value_of(server.flavor, "name")
            or value_of(server.flavor, "id"),
        )
        marks = Markers.of(server)
        if marks.rotation:
            item.rotation = {"id": marks.rotation, "role": marks.role or "?"}
        lock = locks.get(lock_name(cloud.env, name))
        if lock is not None:
            item.lock = lock_text(lock, cloud.wall_clock())
        if declared is not None:
            item.drift = _drift(cloud, declared, server, seen_by_neutron)
        result.servers.append(item)
    for name in spec.servers:
        if name not in seen and (not wanted or name in wanted):
            result.servers.append(ServerStatus(name=name, declared=True))
    for name in spec.servers:  # servers of a declared name that ivc did not make
        if not wanted or name in wanted:
            result.servers += [ServerStatus(
                name=name, declared=True, managed=False, id=s.id, status=server_state(s),
                addresses=addresses(s), floating_ips=_floating(s),
                volumes=[{"id": vid, "name": getattr(volumes.get(vid), "name", None)}
                         for vid in sorted(attached_ids(s))]) for s in unmanaged_twins(cloud, name)]
    return result
