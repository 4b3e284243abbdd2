"""ivc's command line: the namespace of every task, and invoke's Program with usage errors on exit 2.

Invoke's own Program exits 1 on a parse error (an unknown flag such as ``--dryrun``, a flag
missing its value, an unknown task); ivc keeps 1 for a failed cloud operation. Two ways in:

* ``ivc <task> [flags]`` (the console script, ``ivc_tasks.cli:main``): every usage error exits
  2, core flags included (``ivc --dryrun``).
* ``invoke <task>`` / ``python -m invoke <task>``: ``tasks.py`` calls ``exit_2_on_usage_errors()``
  when invoke loads it, which makes the running Program turn the parse errors of what follows
  (the task names and their flags) into exit 2. Invoke parses its own core flags before it
  reads ``tasks.py``, so an unknown core flag (``invoke --dryrun deploy``) still exits 1 there.

Either way, a usage error with ``--json`` among the arguments also prints the one JSON object
(``error``, ``exit_code`` 2) on stdout.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from invoke import Collection, Exit, ParseError, Program

from ivc_tasks.errors import EXIT_INVALID
from ivc_tasks.tasks._common import usage


def namespace() -> Collection:
    """Return ivc's task namespace (what ``tasks.py`` exposes to invoke)."""
    from ivc_tasks.tasks import converge, demo, devcloud, rotate, steps

    ns = Collection()
    for step in (steps.ensure_secgroups, steps.create_instance, steps.attach_volume,
                 steps.deploy):
        ns.add_task(step)
    for lifecycle in (rotate.rotate_instance, rotate.status, rotate.destroy, rotate.inventory):
        ns.add_task(lifecycle)
    ns.add_task(converge.converge)
    ns.add_task(demo.demo)
    ns.add_collection(Collection.from_module(devcloud))
    return ns


def usage_exit(error: ParseError, argv: list[str], tasks: Any = ()) -> Exit:
    """The ``Exit`` (code 2) for a parse error; prints the JSON object when ``--json`` is given.

    :param tasks: the task names (and aliases) known, to name the task in the message.
    """
    args = list(argv[1:])
    step = next((a for a in args if a in tasks), None)
    message = f"usage: {error} (see --help{' ' + step if step else ''})"
    try:
        with usage(step or "ivc", json="--json" in args or "-j" in args):
            raise Exit(message, code=EXIT_INVALID)
    except Exit as exc:
        return exc
    raise AssertionError("unreachable")  # pragma: no cover


def _exit_2(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Program, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except ParseError as error:
            collection = getattr(self, "collection", None)
            names = getattr(collection, "task_names", None) or {}
            known = {*names, *(alias for aliases in names.values() for alias in aliases)}
            raise usage_exit(error, getattr(self, "argv", None) or sys.argv, known) from None

    wrapper._ivc_exit_2 = True  # type: ignore[attr-defined]
    return wrapper


class IvcProgram(Program):
    """invoke's Program where every parse error is a usage error: exit 2."""

    parse_core = _exit_2(Program.parse_core)
    parse_tasks = _exit_2(Program.parse_tasks)
    parse_cleanup = _exit_2(Program.parse_cleanup)


def exit_2_on_usage_errors() -> None:
    """Make invoke's own Program (``invoke <task>``) exit 2 on a parse error of the tasks and
    their flags. Called from ``tasks.py``, which invoke loads after its core flags are parsed
    and before the tasks are; idempotent."""
    for name in ("parse_tasks", "parse_cleanup"):
        method = getattr(Program, name)
        if not getattr(method, "_ivc_exit_2", False):
            setattr(Program, name, _exit_2(method))


def main(argv: list[str] | None = None) -> None:
    """The ``ivc`` console script."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("ivc")
    except PackageNotFoundError:  # run from a checkout that was not installed
        release = "unknown"
    IvcProgram(namespace=namespace(), name="ivc", binary="ivc", version=release).run(argv)


if __name__ == "__main__":  # python -m ivc_tasks.cli
    main()
