"""Run ivc's tasks as a user does, through invoke's Program, in this process."""

import importlib.util
from pathlib import Path

from invoke import Program

ROOT = Path(__file__).resolve().parents[2]


def load_namespace():
    """The root ``tasks.py`` namespace, loaded afresh."""
    spec = importlib.util.spec_from_file_location("ivc_root_tasks", ROOT / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ns


def run(*argv):
    """Run ``invoke *argv``; return the exit code (0 when it returned normally)."""
    program = Program(namespace=load_namespace(), version="test")
    try:
        program.run(["invoke", *argv], exit=True)
    except SystemExit as exc:
        return exc.code or 0
    return 0
