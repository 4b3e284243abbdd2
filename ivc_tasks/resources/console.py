"""A server's console log (Nova's ``os-getConsoleOutput``) and the address clients use.

``ConsoleReader`` reads the log from the end with ``length`` (one request per look), growing the
window until it holds the whole last boot (``console_log.last_boot``). A cloud that refuses
console access (403, 404 or 501 on the action: a policy, or a driver without console) raises
``ConsoleRefused``, remembered for the run so that it is told once.

``server_address`` is what ``{address}`` means in a check: the floating IP on one of the
server's ports, else its address on a public network (external or shared), else its first
fixed address; from Neutron (ports and floating IPs), never from Nova's address cache, which
lags behind a move.
"""

from __future__ import annotations

import logging
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.console_log import BootState, boot_state, host_keys
from ivc_tasks.errors import CloudError
from ivc_tasks.resources.floating_ips import is_public, server_ports
from ivc_tasks.resources.resolve import list_networks

log = logging.getLogger("ivc")

REFUSED_STATUSES = (403, 404, 501)
FIRST_LENGTH = 200  # lines: a cloud-init 22.4 boot prints ~60-150
MAX_LENGTH = 20000  # then the whole log (no length)


class ConsoleRefused(CloudError):
    """The cloud does not give this project the console log (HTTP ``status``)."""

    def __init__(self, server: str, status: int | None, details: str):
        self.status = status
        super().__init__(f"the cloud refuses the console log of server {server} (HTTP {status}: "
                         f"{details}); the cloud_init check cannot run here")


def console_text(cloud: Cloud, server_id: str, what: str, length: int | None) -> str:
    """The last ``length`` lines of the server's console (all: None); one request.

    :raises ConsoleRefused: 403/404/501 (remembered: later calls raise without a request).
    :raises CloudError: any other failure.
    """
    from ivc_tasks.cloud import CloudCallError

    refused = cloud.shared.console_refused
    if refused is not None:
        raise refused
    conn = cloud.conn
    try:
        out = cloud.call(f"read the console of {what}",
                         lambda: conn.compute.get_server_console_output(server_id, length=length))
    except CloudCallError as exc:
        if exc.status in REFUSED_STATUSES:
            error = ConsoleRefused(what, exc.status, exc.details)
            if exc.status != 404 or _server_exists(cloud, server_id):
                cloud.shared.console_refused = error
                log.warning("%s", error)
            raise error from None
        raise
    return str((out or {}).get("output") or "")


def _server_exists(cloud: Cloud, server_id: str) -> bool:
    """A 404 on the action of a server that exists: the cloud has no console log API."""
    try:
        cloud.conn.compute.get_server(server_id)
        return True
    except Exception as exc:  # noqa: BLE001 (anything but a 404: assume it exists)
        return getattr(exc, "status_code", None) != 404


class ConsoleReader:
    """One server's console, read from the end: ``look()`` is one request."""

    def __init__(self, cloud: Cloud, server_id: str, what: str,
                 final_message: str | None = None):
        self.cloud, self.server_id, self.what = cloud, server_id, what
        self.final_message = final_message  # the user_data's own, else cloud-init's line
        self.length: int | None = FIRST_LENGTH
        self.text = ""

    def look(self) -> BootState:
        """Read the window and what it says of the last boot; the next window grows when this
        one does not reach back to the boot's start."""
        self.text = console_text(self.cloud, self.server_id, self.what, self.length)
        state = boot_state(self.text, self.final_message)
        if not state.started and self.length is not None:
            self.length = self.length * 4 if self.length * 4 <= MAX_LENGTH else None
        return state

    def host_keys(self) -> list[str]:
        """The host keys of the last boot (reads the console if it was not read yet)."""
        if not self.text:
            self.look()
        return host_keys(self.text)


def server_address(cloud: Cloud, server_id: str) -> str | None:
    """The address clients use (see the module's docstring); None when the server has none.
    Two requests (ports, floating IPs), the networks from the run's listing."""
    from ivc_tasks.resources.resolve import list_floating_ips

    ports = server_ports(cloud, server_id)
    return pick_address(ports, list_floating_ips(cloud, refresh=True), list_networks(cloud))


def pick_address(ports: list[Any], fips: list[Any], networks: list[Any]) -> str | None:
    """Pure: the floating IP of one of ``ports``, else a fixed IP on a public network, else the
    first fixed IP."""
    ids = {p.id for p in ports}
    for fip in fips:
        if fip.port_id in ids and fip.floating_ip_address:
            return fip.floating_ip_address
    public = {n.id for n in networks if is_public(n)}
    ordered = sorted(ports, key=lambda p: p.network_id not in public)
    for port in ordered:
        for fixed in port.fixed_ips or []:
            if fixed.get("ip_address"):
                return fixed["ip_address"]
    return None
