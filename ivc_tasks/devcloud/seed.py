"""Fill the fresh cloud: keystone's catalog and users, then what a demo needs.

Runs in ivc's own Python with openstacksdk (one process: the ``openstack`` CLI costs ~2.5 s a
call). Every step finds before it creates, so a rerun changes nothing.

The networks' addresses: RFC 5737 documentation ranges where they are free on this machine, else
blocks of 198.18.0.0/15 (ranges.py: no range may overlap a route the host already has, since the
network agent routes every subnet from the host into the cloud's namespace).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from . import ranges
from .configs import KEYSTONE_URL, PORTS
from .layout import (
    ADMIN_CLOUD_NAME,
    CLOUD_NAME,
    DEMO_PROJECT,
    DEMO_USER,
    HOST,
    OVH_CLOUD_NAME,
    OVH_PROJECT,
    OVH_USER,
    REGION,
    Layout,
)

Say = Callable[[str], None]

CATALOG = [  # (service name, type, URL)
    ("nova", "compute", f"http://{HOST}:{PORTS['nova-api']}/v2.1"),
    ("glance", "image", f"http://{HOST}:{PORTS['glance']}"),
    ("placement", "placement", f"http://{HOST}:{PORTS['placement']}"),
    ("neutron", "network", f"http://{HOST}:{PORTS['neutron-api']}"),
    ("cinder", "block-storage", f"http://{HOST}:{PORTS['cinder-api']}/v3"),
    ("cinderv3", "volumev3", f"http://{HOST}:{PORTS['cinder-api']}/v3"),
]
SERVICE_USERS = ["nova", "neutron", "glance", "placement", "cinder"]
FLAVORS = [("m1.tiny", 512, 1, 1), ("m1.small", 2048, 1, 20), ("m1.medium", 4096, 2, 40)]
IMAGE = "ivc-tiny"
KEYPAIR = "ivc-demo"
POOL_WAIT = 180  # seconds: until cinder-scheduler has the backend's capabilities
DEMO_VOLUMES = ["web1-data", "web1-logs"]
PUBLIC_CIDR, PRIVATE_CIDR = "203.0.113.0/24", "198.51.100.0/24"
# The second shape, OVH style: servers of project ivc-ovh attach to ext-net directly (their public
# address is their port's); ovh-private sits behind ovh-router, whose gateway is on ext-net.
EXT_NET, EXT_CIDR = "ext-net", "192.0.2.0/25"
OVH_PRIVATE, OVH_PRIVATE_CIDR = "ovh-private", "192.0.2.128/25"
OVH_ROUTER = "ovh-router"
# What the "seeded" stamp holds once everything below is in the cloud. Raise it when the seed
# gains something: ``up`` then seeds again (every step finds before it creates) on a cloud that
# is already running.
SEED_VERSION = "3: ranges free of host routes"


def cloud_entries(secrets: dict) -> dict:
    base = {"region_name": REGION, "identity_api_version": 3, "interface": "public"}
    auth = {"auth_url": KEYSTONE_URL, "user_domain_name": "Default",
            "project_domain_name": "Default"}
    return {
        CLOUD_NAME: {**base, "auth": {**auth, "username": DEMO_USER, "password": secrets["demo"],
                                      "project_name": DEMO_PROJECT}},
        OVH_CLOUD_NAME: {**base, "auth": {**auth, "username": OVH_USER, "password": secrets["demo"],
                                          "project_name": OVH_PROJECT}},
        ADMIN_CLOUD_NAME: {**base, "auth": {**auth, "username": "admin",
                                            "password": secrets["admin"],
                                            "project_name": "admin"}},
    }


def write_clouds_yaml(layout: Layout, secrets: dict) -> list[Path]:
    """Write the ``ivc-local*`` entries to the cache's clouds.yaml and merge them into the user's
    ``~/.config/openstack/clouds.yaml`` (other entries kept), so the plain CLI works too."""
    entries = cloud_entries(secrets)
    written = []
    user_file = Path(os.path.expanduser("~/.config/openstack/clouds.yaml"))
    for path, keep_others in ((layout.clouds_yaml, False), (user_file, True)):
        doc = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
        doc.setdefault("clouds", {})
        if not keep_others:
            doc["clouds"] = {k: v for k, v in doc["clouds"].items() if k in entries}
        if all(doc["clouds"].get(name) == value for name, value in entries.items()):
            continue
        doc["clouds"].update(entries)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(doc, handle, default_flow_style=False)
        written.append(path)
    return written


def admin_connection(secrets: dict):
    import openstack
    return openstack.connect(auth_url=KEYSTONE_URL, username="admin", password=secrets["admin"],
                             project_name="admin", user_domain_name="Default",
                             project_domain_name="Default", region_name=REGION)


def demo_connection(secrets: dict):
    import openstack
    return openstack.connect(auth_url=KEYSTONE_URL, username=DEMO_USER, password=secrets["demo"],
                             project_name=DEMO_PROJECT, user_domain_name="Default",
                             project_domain_name="Default", region_name=REGION)


def _find(find: Callable[..., Any], name_or_id: str, **attrs: Any) -> Any | None:
    """``find(name_or_id)`` of an openstacksdk proxy, None when absent (the find_* default
    ``ignore_missing=True`` is deprecated in openstacksdk 4.x: RemovedInSDK60Warning)."""
    from openstack import exceptions

    try:
        return find(name_or_id, ignore_missing=False, **attrs)
    except exceptions.NotFoundException:
        return None


def _role(ident, name):
    return _find(ident.find_role, name) or ident.create_role(name=name)


def seed_identity(secrets: dict, say: Say) -> None:
    """The catalog, the service users (admin + service roles), the demo project and user."""
    conn = admin_connection(secrets)
    ident = conn.identity
    for name, kind, url in CATALOG:
        service = next(iter(ident.services(type=kind)), None) or ident.create_service(
            name=name, type=kind)
        have = {e.interface for e in ident.endpoints(service_id=service.id)}
        for interface in {"public", "internal", "admin"} - have:
            ident.create_endpoint(service_id=service.id, interface=interface, url=url,
                                  region_id=REGION)
    admin, service_role, member, reader = (_role(ident, n) for n in
                                           ("admin", "service", "member", "reader"))
    domain = (_find(ident.find_domain, "default")
              or _find(ident.find_domain, "Default"))
    service_project = (_find(ident.find_project, "service", domain_id=domain.id)
                       or ident.create_project(name="service", domain_id=domain.id))
    for name in SERVICE_USERS:
        user = (_find(ident.find_user, name, domain_id=domain.id)
                or ident.create_user(name=name, password=secrets["service"], domain_id=domain.id))
        for role in (admin, service_role):
            ident.assign_project_role_to_user(service_project, user, role)
    demo = (_find(ident.find_project, DEMO_PROJECT, domain_id=domain.id)
            or ident.create_project(name=DEMO_PROJECT, domain_id=domain.id,
                                    description="ivc demo project"))
    user = (_find(ident.find_user, DEMO_USER, domain_id=domain.id)
            or ident.create_user(name=DEMO_USER, password=secrets["demo"], domain_id=domain.id,
                                 default_project_id=demo.id))
    for role in (member, reader):
        ident.assign_project_role_to_user(demo, user, role)
    # the second shape's project and user (same password as the demo user: a throwaway cloud)
    ovh = (_find(ident.find_project, OVH_PROJECT, domain_id=domain.id)
           or ident.create_project(name=OVH_PROJECT, domain_id=domain.id,
                                   description="ivc: the OVH-style shape (shared ext-net)"))
    ovh_user = (_find(ident.find_user, OVH_USER, domain_id=domain.id)
                or ident.create_user(name=OVH_USER, password=secrets["demo"], domain_id=domain.id,
                                     default_project_id=ovh.id))
    for role in (member, reader):
        ident.assign_project_role_to_user(ovh, ovh_user, role)
    say(f"keystone: catalog of {len(CATALOG)} services, {len(SERVICE_USERS)} service users, "
        f"projects/users {DEMO_PROJECT}, {OVH_PROJECT}")


def _keypair_files(layout: Layout) -> str:
    """Generate the demo key once (ed25519, private part 0600); return the public key."""
    pub = layout.keypair_file.with_suffix(".pub")
    if not pub.exists():
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
        key = ed25519.Ed25519PrivateKey.generate()
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        fd = os.open(layout.keypair_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private)
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH)
        pub.write_bytes(public + b" ivc-demo\n")
    return pub.read_text().strip()


def seed_demo(layout: Layout, secrets: dict, say: Say) -> None:
    """Flavors, image, networks, router, keypair, demo volumes and roomy quotas.

    openstacksdk's deprecation warnings are silenced here: its cloud layer's quota calls
    (``set_network_quotas``...) use the deprecated ``find_project(ignore_missing=True)``
    themselves, and the test session (pyproject's filterwarnings) makes those warnings errors,
    for ivc's own calls. The seed is the local cloud's admin set-up, not ivc's path.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # openstacksdk's RemovedInSDK*
        _seed_demo(layout, secrets, say)


def _seed_demo(layout: Layout, secrets: dict, say: Say) -> None:
    admin = admin_connection(secrets)
    demo_project = admin.identity.find_project(DEMO_PROJECT, ignore_missing=False)
    for name, ram, vcpus, disk in FLAVORS:
        if not _find(admin.compute.find_flavor, name):
            admin.compute.create_flavor(name=name, ram=ram, vcpus=vcpus, disk=disk)
    if not list(admin.image.images(name=IMAGE)):  # not find_image: it passes the deprecated
        # ignore_missing=True itself (openstacksdk 4.x)
        admin.image.create_image(name=IMAGE, data=b"\0" * 1024 * 1024, disk_format="raw",
                                 container_format="bare", visibility="public",
                                 allow_duplicates=True)
    admin.set_compute_quotas(demo_project.id, instances=60, cores=120, ram=512 * 1024)
    admin.set_volume_quotas(demo_project.id, volumes=100, gigabytes=2000, snapshots=50)
    admin.set_network_quotas(demo_project.id, floatingip=60, port=300, network=30,
                             subnet=30, router=10, security_group=100,
                             security_group_rule=1000)
    net = admin.network
    public = _find(net.find_network, "public") or net.create_network(
        name="public", is_router_external=True, provider_network_type="flat",
        provider_physical_network="public")
    ranges.ensure_subnet(net, public, "public-subnet", PUBLIC_CIDR, say, enable_dhcp=False)
    private = (_find(net.find_network, "private", project_id=demo_project.id)
               or net.create_network(name="private", project_id=demo_project.id))
    subnet = ranges.ensure_subnet(net, private, "private-subnet", PRIVATE_CIDR, say,
                                  project_id=demo_project.id)
    router = _find(net.find_router, "ivc-router", project_id=demo_project.id)
    if router is None:
        router = net.create_router(name="ivc-router", project_id=demo_project.id,
                                   external_gateway_info={"network_id": public.id})
        net.add_interface_to_router(router, subnet_id=subnet.id)
    elif not router.external_gateway_info:
        net.update_router(router, external_gateway_info={"network_id": public.id})
    demo = demo_connection(secrets)
    if not _find(demo.compute.find_keypair, KEYPAIR):
        demo.compute.create_keypair(name=KEYPAIR, public_key=_keypair_files(layout))
    seed_ovh(layout, secrets, say)
    _demo_volumes(admin, demo, say)
    public_cidr = next(s.cidr for s in net.subnets(network_id=public.id))
    say(f"demo: image {IMAGE}, flavors {', '.join(f[0] for f in FLAVORS)}, networks public "
        f"({public_cidr}) + private ({subnet.cidr}), router ivc-router, keypair {KEYPAIR}, "
        f"volumes {', '.join(DEMO_VOLUMES)}")


def _demo_volumes(admin: Any, demo: Any, say: Say) -> None:
    """The demo volumes, each available. Cinder's scheduler places a volume only once it has
    the backend's capabilities, which cinder-volume sends a moment after its heartbeat: wait
    for a pool first (a volume made before goes to error); a volume in error is made again."""
    deadline = time.monotonic() + POOL_WAIT
    while not list(admin.block_storage.backend_pools()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"cinder-scheduler knows no volume backend after {POOL_WAIT} s; "
                               "look at .devcloud/log/cinder-volume.log")
        time.sleep(1)
    for name in DEMO_VOLUMES:
        volume = _find(demo.block_storage.find_volume, name)
        if volume is not None and volume.status == "error":
            say(f"volume {name} is in error (made before the scheduler knew the backend); "
                "making it again")
            demo.block_storage.delete_volume(volume, ignore_missing=True)
            demo.block_storage.wait_for_delete(volume, interval=0.5, wait=60)
            volume = None
        if volume is None:
            volume = demo.block_storage.create_volume(name=name, size=1,
                                                      description="ivc demo data")
            demo.block_storage.wait_for_status(volume, "available", failures=["error"],
                                               interval=0.5, wait=60)


def _rbac(net, network: Any, action: str, target: str) -> None:
    """The RBAC policy ``action`` on ``network`` for exactly project ``target``: a wildcard one
    (``*``, which Neutron makes for a network created router:external) goes."""
    have = list(net.rbac_policies(object_id=network.id, action=action))
    for policy in have:
        if policy.target_project_id == "*":
            net.delete_rbac_policy(policy)
    if not any(p.target_project_id == target for p in have):
        net.create_rbac_policy(object_type="network", object_id=network.id, action=action,
                               target_project_id=target)


def seed_ovh(layout: Layout, secrets: dict, say: Say) -> None:
    """The OVH-style shape: ``ext-net``, external AND shared, seen by project ``ivc-ovh`` only.

    Neutron shows a network to a project that owns it or that an RBAC policy names. A network
    made ``router:external`` or ``shared`` gets a wildcard policy (every project sees it); here
    both policies (``access_as_external``, ``access_as_shared``) name project ``ivc-ovh``
    instead, so ``public`` stays the one external network of the demo project ``ivc``, while
    ``ivc-ovh`` sees two (``public``, ``ext-net``: ``shared`` is true for it).
    """
    admin = admin_connection(secrets)
    ovh = admin.identity.find_project(OVH_PROJECT, ignore_missing=False)
    admin.set_compute_quotas(ovh.id, instances=40, cores=80, ram=256 * 1024)
    admin.set_network_quotas(ovh.id, floatingip=40, port=200, network=20, subnet=20, router=10,
                             security_group=100, security_group_rule=1000)
    net = admin.network
    ext = _find(net.find_network, EXT_NET) or net.create_network(
        name=EXT_NET, is_router_external=True, is_shared=False,
        description="ivc devcloud: OVH-style shared external network (project ivc-ovh)")
    for action in ("access_as_external", "access_as_shared"):
        _rbac(net, ext, action, ovh.id)
    ext_subnet = ranges.ensure_subnet(net, ext, f"{EXT_NET}-subnet", EXT_CIDR, say,
                                      enable_dhcp=False)
    private = (_find(net.find_network, OVH_PRIVATE, project_id=ovh.id)
               or net.create_network(name=OVH_PRIVATE, project_id=ovh.id))
    subnet = ranges.ensure_subnet(net, private, f"{OVH_PRIVATE}-subnet", OVH_PRIVATE_CIDR, say,
                                  project_id=ovh.id)
    router = _find(net.find_router, OVH_ROUTER, project_id=ovh.id)
    if router is None:
        router = net.create_router(name=OVH_ROUTER, project_id=ovh.id,
                                   external_gateway_info={"network_id": ext.id})
        net.add_interface_to_router(router, subnet_id=subnet.id)
    elif not router.external_gateway_info:   # lost while its subnet moved (ranges.py)
        net.update_router(router, external_gateway_info={"network_id": ext.id})
    user = openstack_connection(OVH_USER, OVH_PROJECT, secrets["demo"])
    if not _find(user.compute.find_keypair, KEYPAIR):
        user.compute.create_keypair(name=KEYPAIR, public_key=_keypair_files(layout))
    say(f"ovh shape: project/user {OVH_PROJECT}, network {EXT_NET} ({ext_subnet.cidr}, external "
        f"and shared for {OVH_PROJECT} only), {OVH_PRIVATE} ({subnet.cidr}) behind {OVH_ROUTER}, "
        f"keypair {KEYPAIR}")


def openstack_connection(username: str, project: str, password: str):
    import openstack
    return openstack.connect(auth_url=KEYSTONE_URL, username=username, password=password,
                             project_name=project, user_domain_name="Default",
                             project_domain_name="Default", region_name=REGION)
