"""The checks as gates of deploy and status, and the host keys a new server printed.

deploy: a server this run created is done only when its checks pass (``deploy_gate``); a check
that fails is exit 1 naming the server, the check and its last answer, and the server is left
as it is for inspection. Then its SSH host keys go to the environment's known_hosts file
(``record_host_keys``, see ``known_hosts.py``). ``status --check`` (``status_with_checks``)
runs every declared server's checks and fails (exit 1) when one fails. ``--skip-checks`` skips
the gates, loudly (a warning in the log and in the result). The rotate's gates are
``steps/rotate/gates.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivc_tasks.errors import IvcError
from ivc_tasks.known_hosts import record
from ivc_tasks.resources.console import ConsoleReader, ConsoleRefused, server_address
from ivc_tasks.resources.servers import managed_servers
from ivc_tasks.result import StepResult
from ivc_tasks.spec import Server, Spec
from ivc_tasks.steps.checks import ALL, ChecksFailed, ChecksReport, check_server

log = logging.getLogger("ivc")

SKIPPED = ("CHECKS SKIPPED (--skip-checks): server {name} ({id}) is not checked; nothing says "
           "it works")


def skipped_warning(name: str, server_id: str) -> str:
    """The loud line of ``--skip-checks``, logged and put in the result's warnings."""
    text = SKIPPED.format(name=name, id=server_id)
    log.warning("%s", text)
    return text


def describe_gate(declared: Server, *, skip: bool = False, gate: str = ALL) -> str:
    """What a gate would check, for the dry run."""
    if skip:
        return "SKIPPED (--skip-checks)"
    checks = declared.checks
    names = ([f"cloud_init (console: {final_line(checks.final_message)})"]
             if checks.cloud_init else [])
    if gate != "ready":
        names += [f"tcp {p}" for p in checks.tcp] + [f"http {u}" for u in checks.http]
    names += [f"command {c}" for c in checks.command
              if gate != "ready" or "{address}" not in c]
    if not names:
        return "no checks declared"
    return f"{', '.join(names)} (timeout {checks.timeout:g} s, every {checks.interval:g} s)"


def final_line(final_message: str | None) -> str:
    """The line the ``cloud_init`` check waits for, as the dry run names it."""
    if final_message and final_message.strip():
        first = final_message.strip().split("\n", 1)[0]
        return f"final_message {first[:60]!r}"
    return "'Cloud-init v. ... finished'"


@dataclass
class GateResult(StepResult):
    """The ``check`` step of a deploy: its lines are the checks' outcomes."""

    report: ChecksReport | None = None
    plan: str = ""  # the dry run: what would be checked

    def lines(self) -> list[str]:
        if self.plan:
            return [f"check {self.target}: would wait for {self.plan}"]
        if self.report is None:
            return [f"check {self.target}: SKIPPED (--skip-checks)"]
        return [f"check {line}" for line in self.report.lines()]


def deploy_gate(cloud: Any, declared: Server, created: StepResult, *, skip: bool = False
                ) -> GateResult | None:
    """The ``check`` step of a deploy, after a server's create-instance (and attach-volume).

    Only a server created by this run is gated (``created`` made a server; else None); then
    its host keys are recorded.

    :raises ChecksFailed: a check failed or timed out (exit 1); the server is left as it is.
    """
    step = GateResult("check", declared.name)
    server_id = created.info.get("id")
    made = any(a.verb == "create" and a.kind == "server" for a in created.actions)
    if not made or server_id is None:
        return None
    if skip:
        step.warnings.append(skipped_warning(declared.name, server_id))
        step.info["checks"] = {"skipped": True}
        return step
    report = check_server(cloud, declared, server_id, gate=ALL)
    step.info["checks"], step.report = report.to_dict(), report
    if not report.ok:
        raise ChecksFailed(report, f"the server is left as it is for inspection (`invoke "
                           f"status --check --name {declared.name}`; `invoke rotate --name "
                           f"{declared.name}` replaces it, `invoke destroy` removes it)")
    step.warnings += record_host_keys(cloud, declared.name, server_id)
    return step


def record_host_keys(cloud: Any, name: str, server_id: str) -> list[str]:
    """Write the server's host keys (from its console) to the environment's known_hosts
    under its name and address; returns warnings (no keys on the console, console refused).
    Never raises: a failure here is a warning."""
    path: Path | None = cloud.shared.known_hosts
    if path is None:
        return []
    try:
        keys = ConsoleReader(cloud, server_id, f"server {name} ({server_id})").host_keys()
        if not keys:
            text = (f"server {name} ({server_id}): its console shows no SSH host keys "
                    f"(no 'BEGIN SSH HOST KEY KEYS' block); {path} not updated for it")
            log.warning("%s", text)
            return [text]
        address = server_address(cloud, server_id)
        record(path, [name, address or ""], keys)
    except ConsoleRefused as exc:
        return [f"server {name}: host keys not recorded: {exc}"]
    except (IvcError, OSError) as exc:
        text = f"server {name} ({server_id}): host keys not recorded: {exc}"
        log.warning("%s", text)
        return [text]
    log.info("server %s: %d host key(s) written to %s for %s", name, len(keys), path,
             ", ".join(n for n in (name, address) if n))
    return []


@dataclass
class CheckedStatus:
    """``status --check``: the status, and each declared server's checks."""

    status: Any
    checks: list[ChecksReport] = field(default_factory=list)
    changed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**self.status.to_dict(), "checks": [r.to_dict() for r in self.checks],
                "checks_ok": all(r.ok for r in self.checks)}

    def lines(self) -> list[str]:
        return self.status.lines() + [line for r in self.checks for line in r.lines()]


class StatusChecksFailed(IvcError):
    """``status --check``: some server's checks failed (exit 1); ``result`` reports all."""

    def __init__(self, result: CheckedStatus):
        self.result = result
        bad = [r for r in result.checks if not r.ok]
        super().__init__("checks failed: " + "; ".join(str(ChecksFailed(r)) for r in bad))


def status_with_checks(cloud: Any, spec: Spec, names: Iterable[str] = ()) -> CheckedStatus:
    """The status, then every declared server's checks (``ALL``), one server after the other.

    :raises StatusChecksFailed: a check failed (exit 1).
    """
    from ivc_tasks.steps.status import status

    wanted = list(names or ())
    result = CheckedStatus(status(cloud, spec, wanted))
    for name, declared in spec.servers.items():
        if wanted and name not in wanted:
            continue
        current = next((s for s in managed_servers(cloud, name) if s.status == "ACTIVE"), None)
        if current is None:
            continue
        result.checks.append(check_server(cloud, declared, current.id, gate=ALL))
    if not all(r.ok for r in result.checks):
        raise StatusChecksFailed(result)
    return result
