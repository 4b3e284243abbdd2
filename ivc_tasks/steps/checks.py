"""Running a server's declared checks (``spec.Checks``) until they pass or time out.

``run_probes`` is the runner (pure: its clock and sleep are passed in): every pending check is
looked at once per ``interval``, a check that passes is done, one that fails for good (a
cloud-init failure line) stops the run at once, and at ``timeout`` what is still pending has
failed, with its last answer. A progress line goes to the log at most every
``PROGRESS_EVERY`` seconds while waiting.

``server_probes`` builds the looks of one server: ``cloud_init`` (its console, see
``resources/console.py``), ``tcp``, ``http``, ``command`` (``probes.py``) with ``{address}``,
``{name}`` and ``{id}`` filled in. The *ready* gate of a rotate runs only the checks that need
neither the volumes nor the address: ``cloud_init`` and the commands without ``{address}``.

A cloud that refuses the console log makes ``cloud_init`` "skipped" (said once); a server
whose only check is ``cloud_init`` is then refused before any change (``console_preflight``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ivc_tasks import probes
from ivc_tasks.errors import ConfigError, IvcError
from ivc_tasks.resources.console import ConsoleReader, ConsoleRefused, server_address
from ivc_tasks.spec import Server
from ivc_tasks.spec_checks import fill, placeholders

log = logging.getLogger("ivc")

PROGRESS_EVERY = 10.0  # seconds between two progress lines
LOOK_TIMEOUT = 5.0  # seconds: one tcp/http look at most
COMMAND_TIMEOUT = 60.0  # seconds: one command look at most
READY, HEALTHY, ALL = "ready", "healthy", "all"
PASS, WAIT, FAIL, SKIP = "pass", "wait", "fail", "skip"


@dataclass
class Probe:
    """One declared check of one server: ``look(seconds_left)`` -> ``(state, answer)``."""

    name: str
    look: Callable[[float], tuple[str, str]]
    ready: bool = False  # runs in the ready gate (needs neither the volumes nor the address)


@dataclass
class CheckOutcome:
    """How one check ended: ``passed``, ``skipped``, ``failed``, ``timed out`` or ``stopped``
    (another check failed first)."""

    name: str
    outcome: str
    answer: str = ""
    seconds: float = 0.0
    looks: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome in ("passed", "skipped")

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "outcome": self.outcome, "answer": self.answer,
                "seconds": round(self.seconds, 3), "looks": self.looks}

    def line(self) -> str:
        return f"{self.name}: {self.outcome} after {self.seconds:.1f} s ({self.answer})"


@dataclass
class ChecksReport:
    """One server's checks in one gate (``ready``, ``healthy``, ``all``)."""

    server: str
    server_id: str
    gate: str
    outcomes: list[CheckOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def failed(self) -> CheckOutcome | None:
        return next((o for o in self.outcomes if o.outcome in ("failed", "timed out")), None)

    def to_dict(self) -> dict[str, Any]:
        return {"server": self.server, "id": self.server_id, "gate": self.gate, "ok": self.ok,
                "seconds": round(self.seconds, 3),
                "checks": [o.to_dict() for o in self.outcomes]}

    def lines(self) -> list[str]:
        if not self.outcomes:
            return [f"{self.server}: no checks declared"]
        return [f"{self.server}: check {o.line()}" for o in self.outcomes]


class ChecksFailed(IvcError):
    """A server's check failed (exit 1); ``report`` holds every check's outcome."""

    def __init__(self, report: ChecksReport, what: str = ""):
        self.report = report
        bad = report.failed
        assert bad is not None
        super().__init__(f"server {report.server} ({report.server_id}): check {bad.name} "
                         f"{bad.outcome} after {bad.seconds:.1f} s; last answer: {bad.answer}"
                         + (f"; {what}" if what else ""))


def run_probes(items: Sequence[Probe], *, label: str, timeout: float, interval: float,
               clock: Callable[[], float], sleep: Callable[[float], None]
               ) -> list[CheckOutcome]:
    """Look at each check until it passes, one fails for good, or ``timeout`` (see the module's
    docstring). The outcomes are in the order of ``items``."""
    start = clock()
    outcomes = {p.name: CheckOutcome(p.name, "pending") for p in items}
    pending = list(items)
    last_progress = start
    while pending:
        for probe in list(pending):
            outcome = outcomes[probe.name]
            left = max(timeout - (clock() - start), 0.1)
            state, outcome.answer = probe.look(left)
            outcome.looks += 1
            outcome.seconds = clock() - start
            if state in (PASS, SKIP):
                outcome.outcome = "passed" if state == PASS else "skipped"
                pending.remove(probe)
            elif state == FAIL:
                outcome.outcome = "failed"
                for other in pending:
                    if other is not probe:
                        outcomes[other.name].outcome = "stopped"
                return list(outcomes.values())
        if not pending:
            break
        now = clock()
        if now - start >= timeout:
            for probe in pending:
                outcomes[probe.name].outcome = "timed out"
            break
        if now - last_progress >= PROGRESS_EVERY:
            last_progress = now
            log.info("%s: waiting %.0f s of %.0f s: %s", label, now - start, timeout,
                     "; ".join(f"{p.name} ({outcomes[p.name].answer})" for p in pending))
        sleep(max(0.0, min(interval, timeout - (now - start))))
    return list(outcomes.values())


def uses_address(text: str) -> bool:
    return "address" in placeholders(text)


def server_probes(cloud: Any, declared: Server, server_id: str, *, gate: str = ALL
                  ) -> list[Probe]:
    """The looks of ``declared``'s checks on server ``server_id`` for ``gate``."""
    checks = declared.checks
    name = declared.name
    found: dict[str, str | None] = {}

    def address() -> str | None:
        if "address" not in found:
            found["address"] = server_address(cloud, server_id)
        return found["address"]

    def values() -> dict[str, str] | None:
        where = address()
        return None if where is None else {"address": where, "name": name, "id": server_id}

    out: list[Probe] = []
    if checks.cloud_init:
        reader = ConsoleReader(cloud, server_id, f"server {name} ({server_id})",
                               checks.final_message)

        def cloud_init(_left: float) -> tuple[str, str]:
            try:
                state = reader.look()
            except ConsoleRefused as exc:
                return SKIP, f"console refused (HTTP {exc.status}): not checked"
            if state.failure:
                return FAIL, state.failure
            if state.final:
                return PASS, state.final
            lines = len(reader.text.splitlines())
            return WAIT, f"no final line yet ({lines} console lines)"
        out.append(Probe("cloud_init", cloud_init, ready=True))
    if gate == READY:
        simple = {"name": name, "id": server_id}
        for line in checks.command:
            if not uses_address(line):
                out.append(Probe(f"command {line}", lambda left, line=line: _command(
                    fill(line, {**simple, "address": ""}), left), ready=True))
        return out
    for port in checks.tcp:
        out.append(Probe(f"tcp {port}", lambda left, port=port: _tcp(address(), port, left)))
    for url in checks.http:
        out.append(Probe(f"http {url}", lambda left, url=url: _http(values(), url, left)))
    for line in checks.command:
        out.append(Probe(f"command {line}", lambda left, line=line: _command_with(
            values() if uses_address(line) else {"name": name, "id": server_id, "address": ""},
            line, left), ready=not uses_address(line)))
    return out


def _state(passed: bool) -> str:
    return PASS if passed else WAIT


def _tcp(address: str | None, port: int, left: float) -> tuple[str, str]:
    if address is None:
        return WAIT, "the server has no address yet"
    passed, answer = probes.tcp(address, port, min(LOOK_TIMEOUT, left))
    return _state(passed), answer


def _http(values: dict[str, str] | None, url: str, left: float) -> tuple[str, str]:
    if values is None:
        return WAIT, "the server has no address yet"
    passed, answer = probes.http(fill(url, values), min(LOOK_TIMEOUT, left))
    return _state(passed), answer


def _command(line: str, left: float) -> tuple[str, str]:
    passed, answer = probes.command(line, min(COMMAND_TIMEOUT, max(left, 1.0)))
    return _state(passed), answer


def _command_with(values: dict[str, str] | None, line: str, left: float) -> tuple[str, str]:
    if values is None:
        return WAIT, "the server has no address yet"
    return _command(fill(line, values), left)


def check_server(cloud: Any, declared: Server, server_id: str, *, gate: str = ALL
                 ) -> ChecksReport:
    """Run ``declared``'s checks (those of ``gate``) on server ``server_id``."""
    items = server_probes(cloud, declared, server_id, gate=gate)
    report = ChecksReport(declared.name, server_id, gate)
    if not items:
        return report
    start = cloud.clock()
    label = f"checks of {declared.name}" + (f" ({gate} gate)" if gate != ALL else "")
    log.info("%s: %s (timeout %.0f s)", label, ", ".join(p.name for p in items),
             declared.checks.timeout)
    report.outcomes = run_probes(items, label=label, timeout=declared.checks.timeout,
                                 interval=declared.checks.interval, clock=cloud.clock,
                                 sleep=cloud.sleep)
    report.seconds = cloud.clock() - start
    for outcome in report.outcomes:
        log.info("%s: %s", label, outcome.line())
    return report


def console_preflight(cloud: Any, servers: Sequence[Server], existing_id: str | None) -> None:
    """Before any change: when a server's only check is ``cloud_init`` and the cloud refuses
    the console log (asked once, on ``existing_id``, a server of the project), refuse.

    :raises ConfigError: exit 2, naming the servers.
    """
    only = [s.name for s in servers if s.checks.cloud_init and not (
        s.checks.tcp or s.checks.http or s.checks.command)]
    if not only or existing_id is None:
        return
    from ivc_tasks.resources.console import console_text

    try:
        console_text(cloud, existing_id, f"server {existing_id}", 1)
    except ConsoleRefused as exc:
        raise ConfigError(f"{exc}; server(s) {', '.join(only)} declare no other check: declare "
                          "one (tcp, http or command) in [servers.NAME.checks], or set "
                          "cloud_init = false") from None
