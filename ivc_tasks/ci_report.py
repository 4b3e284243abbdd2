"""Name the servers a converge left failed, rolled back or not started (for a CI log).

    python -m ivc_tasks.ci_report converge.json [--format github|plain]

Reads ``invoke converge --json``'s output; prints one line per server that did not end well
(``::error::`` annotations with ``--format github``) and a summary line; prints nothing
secret (the JSON holds none). Its own exit code is 0: the job's is converge's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BAD = ("failed", "rolled back", "not started")


def report(data: dict, *, fmt: str = "plain") -> list[str]:
    """The lines to print for one converge's JSON."""
    lines = []
    prefix = "::error::" if fmt == "github" else ""
    for server in data.get("servers", []):
        if server.get("outcome") in BAD:
            why = f": {server['error']}" if server.get("error") else ""
            lines.append(f"{prefix}converge: {server['name']} ({server['action']}) "
                         f"{server['outcome']}{why}")
    if data.get("error") and not lines:
        lines.append(f"{prefix}converge: {data['error']}")
    done = {}
    for server in data.get("servers", []):
        done[server.get("outcome") or server.get("action")] = \
            done.get(server.get("outcome") or server.get("action"), 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(done.items())) or "no server"
    lines.append(f"converge: exit {data.get('exit_code', 0)}; {summary}; "
                 f"changed: {str(data.get('changed', False)).lower()}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json_file")
    parser.add_argument("--format", choices=("github", "plain"), default="plain")
    args = parser.parse_args(argv)
    try:
        data = json.loads(Path(args.json_file).read_text() or "{}")
    except (OSError, ValueError) as exc:
        print(f"converge: no JSON to read in {args.json_file}: {exc}", file=sys.stderr)
        return 0
    for line in report(data, fmt=args.format):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
