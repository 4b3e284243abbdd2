"""The metadata proxy: 169.254.169.254:80 inside the cloud namespace, forwarding to Nova's
metadata API as Neutron's metadata proxy does.

The listening socket is made inside the cloud namespace (the agent's main thread enters it
with setns, binds, and comes back), so the proxy sees each guest's own source address. The
network a request came from is the mark that the mangle table put on its SYN (one mark per
network where metadata is served), read back from the accepted socket (``tcp_fwmark_accept``).
The instance is the port of that network holding the source address; the proxy adds
X-Forwarded-For, X-Instance-ID, X-Tenant-ID and X-Instance-ID-Signature (HMAC-SHA256 of the
instance id with the shared secret) and relays Nova's answer.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .netmodel import CLOUD_NS, METADATA_ADDR, METADATA_PORT, signature

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


def socket_in_namespace(ns: str, addr: str, port: int) -> socket.socket:
    """A listening TCP socket bound inside network namespace ``ns``; the calling thread ends
    back in its own namespace."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((addr, port))
            sock.listen(64)
        finally:
            _setns(home)
    finally:
        os.close(home)
        os.close(target)
    return sock


class Lookup:
    """What the agent tells the proxy each round: mark -> network, (network, ip) -> port."""

    def __init__(self):
        self.lock = threading.Lock()
        self.nets: dict[int, str] = {}
        self.owners: dict[tuple[str, str], tuple[str, str]] = {}

    def update(self, marks: dict[str, int], state, metadata_nets: set[str]) -> None:
        owners = {}
        for port in state.ports:
            if port.network_id in metadata_nets and port.device_owner.startswith("compute:"):
                for ip, _ in port.ips:
                    owners[(port.network_id, ip)] = (port.device_id, port.project_id)
        with self.lock:
            self.nets = {mark: net for net, mark in marks.items() if net in metadata_nets}
            self.owners = owners

    def instance(self, mark: int, ip: str) -> tuple[str, str] | None:
        with self.lock:
            net = self.nets.get(mark)
            return self.owners.get((net, ip)) if net else None


def make_handler(lookup: Lookup, secret: str, nova: tuple[str, int]):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, fmt, *args):  # one line per request in the agent's log
            print(f"metadata: {self.client_address[0]} {fmt % args}", flush=True)

        def _relay(self):
            mark = self.connection.getsockopt(socket.SOL_SOCKET, socket.SO_MARK)
            found = lookup.instance(mark, self.client_address[0])
            if found is None:
                self.send_error(404, "no instance with this address on a network served here")
                return
            instance_id, project_id = found
            headers = {"X-Forwarded-For": self.client_address[0], "X-Instance-ID": instance_id,
                       "X-Tenant-ID": project_id,
                       "X-Instance-ID-Signature": signature(secret, instance_id)}
            try:
                upstream = http.client.HTTPConnection(*nova, timeout=30)
                upstream.request(self.command, self.path, headers=headers)
                answer = upstream.getresponse()
                body = answer.read()
            except OSError as exc:
                self.send_error(502, f"Nova's metadata API: {exc}")
                return
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.getheader("Content-Type", "text/plain"))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                try:
                    self.wfile.write(body)
                except OSError:   # the guest gave up waiting
                    pass

        do_GET = do_HEAD = _relay

    return Handler


def serve(lookup: Lookup, secret: str, nova: tuple[str, int]) -> ThreadingHTTPServer:
    """Bind in the cloud namespace, then serve in a thread made back in the host namespace (so
    that its connections to Nova go out on the host's loopback)."""
    sock = socket_in_namespace(CLOUD_NS, METADATA_ADDR, METADATA_PORT)
    server = ThreadingHTTPServer((METADATA_ADDR, METADATA_PORT), make_handler(lookup, secret, nova),
                                 bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metadata-proxy", daemon=True).start()
    return server
