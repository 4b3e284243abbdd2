"""The guests' network (the devcloud's netagent): addresses, floating IPs, security groups,
metadata, host routes and clean-up, seen from the host and from inside guest namespaces.

Each server gets its guest namespace ``ivcg-<uuid>``: made here when none exists (a stand-in
guest: a listener and a client run in that namespace with the host's own programs), or the real
guest's when the local cloud boots guests. The agent plugs the ports; the tests only look.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from ivc_tasks.devcloud import guestnet
from ivc_tasks.devcloud.layout import PLUGIN_DIR

sys.path.insert(0, str(PLUGIN_DIR))
from ivc_devcloud_plugin import netmodel, netplumb

pytestmark = pytest.mark.cloud
RULE_DEADLINE = 5.0   # seconds: a changed rule is in force within this


def ns_run(ns: str, *cmd: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                          timeout=timeout)


def fetch(url: str, ns: str | None = None, timeout: float = 2) -> str | None:
    """The body at ``url`` (from the host, or from inside namespace ``ns``); None if no answer."""
    if ns:
        done = ns_run(ns, "python3", "-c", "import sys, urllib.request; sys.stdout.write("
                      f"urllib.request.urlopen({url!r}, timeout={timeout}).read().decode())",
                      timeout=timeout + 5)
        return done.stdout if done.returncode == 0 else None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.read().decode()
    except OSError:
        return None


def eventually(probe, want, within: float):
    """Poll ``probe()`` until it returns ``want``; return (what it last returned, seconds)."""
    t0 = time.monotonic()
    while True:
        got = probe()
        if got == want or time.monotonic() - t0 > within:
            return got, time.monotonic() - t0
        time.sleep(0.3)


class Guests:
    """Servers of one test, each with a guest namespace and, on demand, a listener in it."""

    def __init__(self, conn, admin_conn, tmp_path, prefix):
        self.conn, self.admin, self.tmp, self.prefix = conn, admin_conn, tmp_path, prefix
        self.servers, self.made_ns, self.procs, self.cleanups = [], [], [], []
        self.image = next(iter(conn.image.images(name="ivc-tiny")))  # not find_image
        self.flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)

    def network(self, name="private"):
        return self.conn.network.find_network(name, ignore_missing=False)

    def group(self, suffix, rules=()):
        sg = self.conn.network.create_security_group(name=f"{self.prefix}-{suffix}")
        self.cleanups.append(
            lambda: self.conn.network.delete_security_group(sg, ignore_missing=True))
        for rule in rules:
            self.rule(sg, **rule)
        return sg

    def rule(self, sg, **rule):
        return self.conn.network.create_security_group_rule(
            security_group_id=sg.id, direction="ingress", ethertype="IPv4", **rule)

    def boot(self, suffix, groups, network=None, port=None, **extra):
        """A server (on ``network``, or on the existing ``port``) with its guest namespace,
        once the agent has plugged its port: (server, port, fixed address)."""
        nic = {"port": port.id} if port else {"uuid": (network or self.network()).id}
        if groups:
            extra["security_groups"] = [{"name": g.name} for g in groups]
        server = self.conn.compute.create_server(
            name=f"{self.prefix}-{suffix}", image_id=self.image.id, flavor_id=self.flavor.id,
            networks=[nic], **extra)
        self.servers.append(server)
        server = self.conn.compute.wait_for_server(server, interval=0.5, wait=120)
        ns = netmodel.guest_ns(server.id)
        if ns not in netplumb.namespaces():
            subprocess.run(["ip", "netns", "add", ns], check=True)
            self.made_ns.append(ns)
        port = next(iter(self.conn.network.ports(device_id=server.id)))
        address = port.fixed_ips[0]["ip_address"]
        got, _ = eventually(lambda: address in ns_run(ns, "ip", "-4", "-o", "addr").stdout,
                            True, 20)
        assert got, f"the agent did not plug {address} into {ns} within 20 s"
        return server, port, address

    def listen(self, server, port=8080):
        """A web server in the guest answering its server's name at /name."""
        root = self.tmp / f"{server.id}-{port}"
        root.mkdir()
        (root / "name").write_text(server.name)
        proc = subprocess.Popen(["ip", "netns", "exec", netmodel.guest_ns(server.id), "python3",
                                 "-m", "http.server", str(port), "--directory", str(root)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        got, _ = eventually(lambda: f":{port} " in ns_run(netmodel.guest_ns(server.id), "ss",
                                                          "-ltnH").stdout, True, 10)
        assert got

    def close(self):
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=10)
        for server in self.servers:
            self.conn.compute.delete_server(server, ignore_missing=True)
        for server in self.servers:
            self.conn.compute.wait_for_delete(server, interval=0.5, wait=120)
        for ns in self.made_ns:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        for cleanup in reversed(self.cleanups):
            cleanup()


@pytest.fixture
def guests(conn, admin_conn, tmp_path, unique):
    made = Guests(conn, admin_conn, tmp_path, unique)
    yield made
    made.close()


def open_group(guests, suffix="web", port=8080):
    return guests.group(suffix, [{"protocol": "tcp", "port_range_min": port,
                                  "port_range_max": port}])


def test_fixed_and_floating_address_answer_and_the_floating_ip_follows_a_move(guests, conn):
    sg = open_group(guests)
    a, port_a, addr_a = guests.boot("a", [sg])
    b, port_b, addr_b = guests.boot("b", [sg])
    guests.listen(a)
    guests.listen(b)
    assert eventually(lambda: fetch(f"http://{addr_a}:8080/name"), a.name, 5)[0] == a.name
    assert eventually(lambda: fetch(f"http://{addr_b}:8080/name"), b.name, 5)[0] == b.name
    public = conn.network.find_network("public", ignore_missing=False)
    fip = conn.network.create_ip(floating_network_id=public.id, port_id=port_a.id)
    guests.cleanups.append(lambda: conn.network.delete_ip(fip, ignore_missing=True))
    url = f"http://{fip.floating_ip_address}:8080/name"
    got, seconds = eventually(lambda: fetch(url), a.name, 5)
    assert got == a.name, f"floating IP {fip.floating_ip_address} -> {got!r} after {seconds:.1f}s"
    conn.network.update_ip(fip, port_id=port_b.id)         # what a rotate does: one PUT
    got, seconds = eventually(lambda: fetch(url), b.name, 5)
    assert got == b.name, f"after the move: {got!r} after {seconds:.1f}s"
    print(f"floating IP moved: the new server answered after {seconds:.1f}s")


def test_a_kept_port_moves_with_its_address_to_the_next_server(guests, conn):
    """keep_address: a port detached from one server and given to the next at boot."""
    sg = open_group(guests)
    port = conn.network.create_port(network_id=guests.network().id, security_groups=[sg.id],
                                    name=f"{guests.prefix}-kept")
    guests.cleanups.append(lambda: conn.network.delete_port(port, ignore_missing=True))
    old, _, addr = guests.boot("old", [], port=port)
    guests.listen(old)
    assert eventually(lambda: fetch(f"http://{addr}:8080/name"), old.name, 5)[0] == old.name
    conn.compute.delete_server_interface(port.id, server=old)
    old_ns = netmodel.guest_ns(old.id)
    gone, seconds = eventually(lambda: addr in ns_run(old_ns, "ip", "-4", "-o", "addr").stdout,
                               False, 30)
    assert gone is False, f"still in the old server's namespace after {seconds:.0f}s"
    new, _, addr_new = guests.boot("new", [], port=port)
    assert addr_new == addr
    guests.listen(new)
    assert eventually(lambda: fetch(f"http://{addr}:8080/name"), new.name, 5)[0] == new.name


def test_security_group_rule_opens_and_closes_a_port_within_5_s(guests, conn):
    sg = open_group(guests)
    server, _, addr = guests.boot("sg", [sg])
    guests.listen(server, 8080)
    guests.listen(server, 8081)
    url = f"http://{addr}:8081/name"
    assert eventually(lambda: fetch(f"http://{addr}:8080/name"), server.name, 5)[0] == server.name
    assert fetch(url, timeout=1.5) is None                  # default deny
    rule = guests.rule(sg, protocol="tcp", port_range_min=8081, port_range_max=8081)
    got, seconds = eventually(lambda: fetch(url, timeout=1), server.name, RULE_DEADLINE)
    assert got == server.name, f"opened: no answer after {seconds:.1f}s"
    print(f"rule added: port open after {seconds:.1f}s")
    conn.network.delete_security_group_rule(rule)
    got, seconds = eventually(lambda: fetch(url, timeout=1), None, RULE_DEADLINE)
    assert got is None, f"closed: still answering after {seconds:.1f}s"
    print(f"rule deleted: port closed after {seconds:.1f}s")


def test_a_port_without_port_security_is_not_filtered(guests, conn):
    port = conn.network.create_port(network_id=guests.network().id, security_groups=[],
                                    port_security_enabled=False, name=f"{guests.prefix}-open")
    guests.cleanups.append(lambda: conn.network.delete_port(port, ignore_missing=True))
    server, _, addr = guests.boot("open", [], port=port)
    guests.listen(server, 8099)
    assert eventually(lambda: fetch(f"http://{addr}:8099/name"), server.name, 5)[0] \
        == server.name
    rules = ns_run(netmodel.CLOUD_NS, "iptables", "-S").stdout
    assert netmodel.short(port.id, 12) not in rules


def test_remote_group_rule_admits_only_the_members(guests):
    clients = guests.group("clients")
    others = guests.group("others")
    target_sg = guests.group("target")
    guests.rule(target_sg, protocol="tcp", port_range_min=8080, port_range_max=8080,
                remote_group_id=clients.id)
    target, _, addr = guests.boot("target", [target_sg])
    member, _, _ = guests.boot("member", [clients])
    stranger, _, _ = guests.boot("stranger", [others])
    guests.listen(target)
    url = f"http://{addr}:8080/name"
    member_ns, stranger_ns = netmodel.guest_ns(member.id), netmodel.guest_ns(stranger.id)
    got, _ = eventually(lambda: fetch(url, ns=member_ns), target.name, 5)
    assert got == target.name
    assert fetch(url, ns=stranger_ns, timeout=1.5) is None
    assert fetch(url, timeout=1.5) is None                 # the host is no member either


def test_metadata_behind_a_router_and_none_without(guests, conn):
    sg = guests.group("md")
    user_data = "#cloud-config\nruncmd: [[touch, /tmp/ivc-md]]\n"
    server, _, _ = guests.boot("md", [sg], key_name="ivc-demo",
                               user_data=base64.b64encode(user_data.encode()).decode())
    ns = netmodel.guest_ns(server.id)
    base = "http://169.254.169.254/openstack/latest"
    text, _ = eventually(lambda: fetch(f"{base}/meta_data.json", ns=ns, timeout=3) is not None,
                         True, 5)
    meta = json.loads(fetch(f"{base}/meta_data.json", ns=ns, timeout=3))
    assert (meta["uuid"], meta["name"]) == (server.id, server.name)
    key = conn.compute.find_keypair("ivc-demo", ignore_missing=False).public_key
    assert meta["public_keys"] == {"ivc-demo": key}
    assert fetch(f"{base}/user_data", ns=ns, timeout=3) == user_data

    isolated = conn.network.create_network(name=f"{guests.prefix}-isolated")
    guests.cleanups.append(lambda: conn.network.delete_network(isolated, ignore_missing=True))
    cidr = free_test_cidr(conn)
    conn.network.create_subnet(network_id=isolated.id, ip_version=4, cidr=cidr)
    alone, _, _ = guests.boot("alone", [sg], network=isolated)
    alone_ns = netmodel.guest_ns(alone.id)
    assert "169.254.169.254" not in ns_run(alone_ns, "ip", "route").stdout
    assert fetch(f"{base}/meta_data.json", ns=alone_ns, timeout=2) is None
    # even with a route of its own, a guest there gets nothing (Neutron's default: no isolated
    # metadata)
    gateway = str(next(ipaddress.ip_network(cidr).hosts()))
    ns_run(alone_ns, "ip", "route", "add", "169.254.169.254/32", "via", gateway)
    assert fetch(f"{base}/meta_data.json", ns=alone_ns, timeout=2) is None


def test_ovh_shape_a_server_on_ext_net_is_reached_and_reads_metadata(admin_conn, tmp_path,
                                                                     unique):
    """ext-net (isolated metadata enabled, as on OVHcloud's Ext-Net): the server's public
    address is its port's; the host reaches it, and it reads the metadata service."""
    from .rotateworld import connection
    ovh = connection("ivc-local-ovh")
    guests = Guests(ovh, admin_conn, tmp_path, unique)
    try:
        sg = open_group(guests)
        server, _, addr = guests.boot("ovh", [sg], network=guests.network("ext-net"))
        guests.listen(server)
        assert eventually(lambda: fetch(f"http://{addr}:8080/name"), server.name, 5)[0] \
            == server.name
        meta = fetch("http://169.254.169.254/openstack/latest/meta_data.json",
                     ns=netmodel.guest_ns(server.id), timeout=3)
        assert meta is not None and json.loads(meta)["uuid"] == server.id
    finally:
        guests.close()


def free_test_cidr(conn) -> str:
    """A /24 inside 198.19.0.0/16 that no subnet and no host route uses."""
    taken = [ipaddress.ip_network(s.cidr) for s in conn.network.subnets() if s.ip_version == 4]
    routes = netplumb.host_routes()
    for candidate in ipaddress.ip_network("198.19.128.0/17").subnets(new_prefix=24):
        if not any(candidate.overlaps(t) for t in taken) and \
                not netmodel.overlapping(str(candidate), routes):
            return str(candidate)
    raise AssertionError("no free /24 in 198.19.128.0/17")


def test_no_host_route_into_the_cloud_overlaps_a_route_the_host_had():
    routes = netplumb.host_routes()
    ours = [dst for dst, dev in routes if dev == netmodel.HOST_DEV]
    assert ours, "the host has no route into the cloud namespace"
    for dst in ours:
        assert netmodel.overlapping(dst, routes) is None, dst
    # the machine's own default route still goes where it went
    assert not any(dst == "default" and dev == netmodel.HOST_DEV for dst, dev in routes)


def test_teardown_leaves_nothing(tmp_path):
    """The clean-up ``down`` runs, on a cloud namespace of the test's own made by the agent's
    own code (names given): namespace, bridge, a plugged guest port, host veth and routes,
    iptables rules all go."""
    tag = uuid.uuid4().hex[:6]
    ns, host_dev, cloud_dev, guest = f"ivc-t{tag}", f"ivch{tag}", f"ivcc{tag}", f"ivcg-t{tag}"
    before_routes = netplumb.host_routes()
    netplumb.ensure_base(ns, host_dev, cloud_dev, "169.254.78.1", "169.254.78.2")
    subprocess.run(["ip", "netns", "add", guest], check=True)
    try:
        netplumb.sync_bridges({"net-" + tag: ["198.19.99.1/24"]}, ns=ns)
        port = netmodel.Port("port-" + tag, "net-" + tag, "fa:16:3e:12:34:56", "vm", "compute:x",
                             "p", (("198.19.99.5", "s"),))
        assert netplumb.plug(port, guest, ["198.19.99.5/24"], "198.19.99.1", None, ns=ns) == "eth0"
        subprocess.run(["ip", "route", "add", "198.19.99.0/24", "via", "169.254.78.2", "dev",
                        host_dev], check=True)
        (tmp_path / "name").write_text("plugged")
        web = subprocess.Popen(["ip", "netns", "exec", guest, "python3", "-m", "http.server",
                                "8080", "--directory", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:   # the host reaches the guest through the namespace, as the cloud's does
            assert eventually(lambda: fetch("http://198.19.99.5:8080/name"), "plugged", 10)[0] \
                == "plugged"
        finally:
            web.terminate()
            web.wait()
        assert ns_run(guest, "ip", "-4", "-o", "addr", "show", "eth0").stdout.split()[3] == \
            "198.19.99.5/24"
        netplumb.run("ip", "netns", "exec", ns, "iptables-restore", input=netmodel.ruleset(
            netmodel.NetState(ports=[port]), [port], {}, set(), {"net-" + tag}))
        assert "-A ivc-i-port" in ns_run(ns, "iptables", "-S").stdout
        assert guestnet.teardown(ns, host_dev) == [       # what `devcloud.down` runs
            f"veth {host_dev}", f"host routes through {host_dev}: 198.19.99.0/24",
            f"namespace {ns}"]
        assert ns not in netplumb.namespaces()
        assert host_dev not in netplumb.links()
        assert netplumb.host_routes() == before_routes
        # the guest's end went too (the kernel removes a veth's peer a moment later)
        assert eventually(lambda: [n for n in netplumb.links(guest) if n != "lo"], [], 5)[0] == []
    finally:
        subprocess.run(["ip", "netns", "del", guest], check=False)
        guestnet.teardown(ns, host_dev)
