"""Keypairs: the one a server declares, checked before any change, and created once per run.

A keypair declared under ``[keypairs]`` (with its public key file) is created when the cloud
lacks it; one of that name with the same public key counts as done; one with another key is a
ConfigError (exit 2) before any change. A keypair only named by a server must exist.

The step ``ensure-keypairs`` of a deploy: ``take_keypairs`` is its plan (each declared keypair
that a server needs and the cloud lacks, once), ``describe_keypairs`` what ``--dry-run`` prints,
``apply_keypairs`` creates them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from ivc_tasks.cloud import Cloud, CloudCallError
from ivc_tasks.errors import ConfigError
from ivc_tasks.resources.resolve import forget, list_keypairs
from ivc_tasks.result import Action, StepResult
from ivc_tasks.spec import Server, Spec

log = logging.getLogger("ivc")
STEP = "ensure-keypairs"


def public_key_body(text: str) -> str:
    """The key type and base64 part of an OpenSSH public key (the comment is not part of it)."""
    return " ".join(str(text or "").split()[:2])


def _check_same_key(have: Any, wanted: Any, where: str) -> None:
    """:raises ConfigError: the cloud's keypair holds another public key than the declared one."""
    if public_key_body(have.public_key) != public_key_body(wanted.public_key):
        raise ConfigError(
            f"{where}keypairs.{wanted.name}: the cloud's keypair {wanted.name!r} holds a "
            f"different public key than {wanted.public_key_file}; delete it in the cloud "
            "(openstack keypair delete) or give the declared one another name")


def plan_keypair(cloud: Cloud, spec: Spec, declared: Server) -> Any | None:
    """The declared keypair to create first, or None when the cloud has it already.

    :raises ConfigError: the cloud's keypair of that name holds another key, or an undeclared
        keypair is missing.
    """
    have = {k.name: k for k in list_keypairs(cloud)}.get(declared.keypair)
    wanted = spec.keypairs.get(declared.keypair)
    if wanted is not None and have is None:
        return wanted
    if wanted is not None:
        _check_same_key(have, wanted, f"{spec.path}: ")
    if have is None:
        raise ConfigError(f"{spec.path}: servers.{declared.name}.keypair: no keypair named "
                          f"{declared.keypair!r} in the cloud; create it, or declare it "
                          "under [keypairs] with a public_key_file")
    return None


def ensure_keypair(cloud: Cloud, wanted: Any) -> Action | None:
    """Create declared keypair ``wanted`` (a spec Keypair); None when the cloud has it already
    with the same public key (made meanwhile by another server's step or another run).

    :raises ConfigError: the name is taken by another public key.
    :raises CloudCallError: the create failed.
    """
    def have() -> Any | None:
        return next((k for k in list_keypairs(cloud, refresh=True) if k.name == wanted.name),
                    None)

    try:
        cloud.call(f"create keypair {wanted.name}",
                   lambda: cloud.conn.compute.create_keypair(name=wanted.name,
                                                             public_key=wanted.public_key),
                   done_already=have)
    except CloudCallError as exc:
        if exc.status != 409:
            raise
        found = have()
        if found is None:
            raise
        _check_same_key(found, wanted, "")
        log.info("keypair %s exists already with the same public key", wanted.name)
        return None
    forget(cloud, "keypairs")
    log.info("created keypair %s", wanted.name)
    return create_action(wanted)


def take_keypairs(plans: Iterable[Any]) -> dict[str, Any]:
    """The declared keypairs these instance plans would create, once each (``{name: Keypair}``);
    the plans no longer create them (a deploy makes them once, before any server)."""
    out: dict[str, Any] = {}
    for plan in plans:
        if plan.create_keypair is not None:
            out.setdefault(plan.create_keypair.name, plan.create_keypair)
            plan.create_keypair = None
    return out


def create_action(wanted: Any) -> Action:
    """The action of creating declared keypair ``wanted`` (a spec Keypair)."""
    return Action("create", "keypair", wanted.name, f"from {wanted.public_key_file}")


def describe_keypairs(keypairs: Mapping[str, Any]) -> StepResult:
    """What ``apply_keypairs`` would do with the plan (``take_keypairs``), for a dry run."""
    return StepResult(step=STEP, target=None, dry_run=True,
                      actions=[create_action(wanted) for wanted in keypairs.values()])


def apply_keypairs(cloud: Cloud, keypairs: Mapping[str, Any]) -> StepResult:
    """Step ``ensure-keypairs`` of a deploy: each keypair of the plan once (``take_keypairs``).

    :raises ConfigError: a name taken by another public key meanwhile.
    :raises CloudCallError: a create failed.
    """
    result = StepResult(step=STEP, target=None)
    for wanted in keypairs.values():
        action = ensure_keypair(cloud, wanted)
        if action is not None:
            result.actions.append(action)
    return result
