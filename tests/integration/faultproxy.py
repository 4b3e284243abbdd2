"""A small threaded HTTP proxy on loopback that forwards to a real OpenStack endpoint and injects
faults on matching requests: an HTTP error instead of forwarding, a reset connection before
forwarding (the request never reaches the service), a reset after forwarding (the service did
it, the client never hears back: a lost response), or an HTTP error after forwarding (the service
did it, a gateway on the way answered with an error).

``proxied_clouds_yaml`` writes a clouds.yaml whose entry copies ``ivc-local`` and points
``<service>_endpoint_override`` at the proxies, so that ivc (run with ``OS_CLIENT_CONFIG_FILE``)
talks to the services through them. Only loopback addresses are used.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from urllib.parse import urlsplit

import yaml

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "content-length"}


@dataclass
class Fault:
    """Inject ``action`` on the first ``times`` requests matching ``method`` and ``path``.

    ``action``: an HTTP status (int) to answer with, ``"reset"`` (before forwarding),
    ``"reset_after"`` (after forwarding) or ``"after:<status>"`` (forward, then answer with
    that status instead of the service's answer).
    """

    method: str
    path: str  # a regular expression searched in the request path
    action: int | str
    times: int = 1
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.hits < self.times and method == self.method
                and re.search(self.path, path) is not None)


@dataclass
class FaultProxy:
    upstream: str  # http://127.0.0.1:8774
    faults: list[Fault] = field(default_factory=list)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, outcome

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        assert parts.hostname in ("127.0.0.1", "localhost", "::1"), "loopback only"
        self._host, self._port = parts.hostname, parts.port
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                proxy._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, method: str, path: str, action: int | str, times: int = 1) -> Fault:
        fault = Fault(method, path, action, times)
        with self._lock:
            self.faults.append(fault)
        return fault

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        method, path = h.command, h.path
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        fault = self._fault_for(method, path)
        if fault is not None and isinstance(fault.action, int):
            payload = json.dumps({"computeFault": {"code": fault.action,
                                                   "message": "injected by the test proxy"}})
            self._note(method, path, f"injected {fault.action}")
            self._reply(h, fault.action, [("Content-Type", "application/json")], payload.encode())
            return
        if fault is not None and fault.action == "reset":
            self._note(method, path, "reset before forwarding")
            self._reset(h)
            return
        upstream = http.client.HTTPConnection(self._host, self._port, timeout=120)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = f"{self._host}:{self._port}"
        if body is not None:
            headers["Content-Length"] = str(len(body))
        upstream.request(method, path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        upstream.close()
        if fault is not None and str(fault.action).startswith("after:"):
            status = int(str(fault.action).split(":", 1)[1])
            self._note(method, path, f"forwarded ({response.status}), then answered {status}")
            payload = json.dumps({"NeutronError": {"type": "HTTPInternalServerError",
                                                   "message": "injected by the test proxy"}})
            self._reply(h, status, [("Content-Type", "application/json")], payload.encode())
            return
        if fault is not None:  # reset_after: the service did it, the answer is lost
            self._note(method, path, f"forwarded ({response.status}), then reset")
            self._reset(h)
            return
        self._note(method, path, str(response.status))
        self._reply(h, response.status,
                    [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP],
                    data)

    def _note(self, method: str, path: str, outcome: str) -> None:
        with self._lock:
            self.seen.append((method, path, outcome))

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]],
               data: bytes) -> None:
        h.send_response(status)
        for key, value in headers:
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Connection", "close")
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)
        h.close_connection = True

    @staticmethod
    def _reset(h: BaseHTTPRequestHandler) -> None:
        """Close the client's connection with a TCP RST."""
        try:
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
        except OSError:
            pass
        h.wfile = BytesIO()  # what the handler still writes goes nowhere
        h.close_connection = True


SERVICES = {  # clouds.yaml key -> (catalog endpoint, path suffix the override needs)
    "compute": ("http://127.0.0.1:8774", "/v2.1"),
    "block_storage": ("http://127.0.0.1:8776", "/v3"),
    "network": ("http://127.0.0.1:9696", ""),
    "image": ("http://127.0.0.1:9292", ""),  # no version: openstacksdk discovers it (GET /)
}


def proxied_clouds_yaml(source: Path, target: Path, proxies: dict[str, FaultProxy], *,
                        cloud: str = "ivc-local", name: str = "ivc-proxied") -> Path:
    """Write ``target``: the ``cloud`` entry of ``source`` as ``name``, with endpoint overrides
    pointing at ``proxies`` (keys of ``SERVICES``)."""
    config = yaml.safe_load(source.read_text())
    entry = dict(config["clouds"][cloud])
    for service, proxy in proxies.items():
        entry[f"{service}_endpoint_override"] = proxy.url + SERVICES[service][1]
    target.write_text(yaml.safe_dump({"clouds": {name: entry}}))
    target.chmod(0o600)
    return target


def start_proxies(*services: str) -> dict[str, FaultProxy]:
    return {s: FaultProxy(SERVICES[s][0]) for s in services}
