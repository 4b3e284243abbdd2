"""ensure-secgroups: make the declared security groups and their rules exist.

Find, compare, act only if needed:
  * ONE request lists every group of the project with its rules (Neutron embeds them), however
    many groups and rules there are; the comparison (``secgroup_rules.plan_rules``) is local;
  * missing groups are created (one request each), a changed description is updated;
  * the missing rules of a group go in ONE bulk POST (one per group: Neutron refuses a bulk
    request whose rules span groups, "Only allowed to update rules for one security profile at
    a time"). Neutron checks duplicates, so a 409
    "already exists" (a rule that appeared meanwhile) counts as done: ivc lists again and sends
    what is still missing;
  * with ``prune``, undeclared rules are deleted (logged first); without it they are reported.

Environments (``IVC_ENV``): a group carries the Neutron tag ``ivc:<env>`` of every environment
that ensures it (one PUT the first time; the tags come back in the listing, so a rerun costs
nothing more), and every rule ivc creates carries ``ivc:<env>`` in its description (rules have
no tags and cannot be updated). ``--prune`` deletes only the undeclared rules marked with the
current environment: another environment's rules in a shared group, and rules no environment
made (by hand, or by ivc before environments), are never deleted; the latter are reported.
Neutron's default egress rules are part of a group unless it says ``default_egress = false``
or declares egress rules of its own (``secgroup_rules.default_egress_wanted``): then --prune
deletes them, unless another environment shares the group. Without --prune nothing is deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ivc_tasks.cloud import Cloud, CloudCallError
from ivc_tasks.errors import ConfigError
from ivc_tasks.hints import did_you_mean, listed
from ivc_tasks.resources.resolve import delete_or_gone, forget, list_security_groups
from ivc_tasks.result import Action, StepResult
from ivc_tasks.secgroup_rules import (
    RulePlan,
    group_tag,
    is_default_egress,
    neutron_defaults,
    plan_rules,
    rule_marker,
    rule_text,
    tagged_envs,
    undeclared_warning,
)
from ivc_tasks.spec import NEUTRON_NAME_MAX, SecGroup, Spec

log = logging.getLogger("ivc")
STEP = "ensure-secgroups"
RULE_CREATE_ROUNDS = 3  # POSTs of the missing rules when others keep appearing meanwhile


@dataclass
class GroupPlan:
    """One declared group: the cloud's group (None: to create) and its rule comparison."""

    declared: SecGroup
    existing: Any | None
    rules: RulePlan
    update_description: bool = False
    tag: bool = False  # the group lacks this environment's tag (or is to be created)
    shared_with: list[str] = field(default_factory=list)  # other environments' tags on it


@dataclass
class SecGroupsPlan:
    """What ensure-secgroups will do. ``ids`` maps every declared group that exists to its id."""

    groups: list[GroupPlan] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)
    prune: bool = False
    env: str = ""


def select_groups(spec: Spec, names: Iterable[str] = ()) -> list[SecGroup]:
    """Return the declared groups named in ``names`` (all of them when empty), in spec order.

    :raises ConfigError: a name that is not declared.
    """
    names = list(dict.fromkeys(names or ()))
    for name in names:
        if name not in spec.secgroups:
            hint = did_you_mean(name, spec.secgroups,
                                otherwise=f"declared: {listed(spec.secgroups)}")
            raise ConfigError(f"{spec.path}: --name {name!r}: not a declared security group "
                              f"(secgroups.{name}); {hint}")
    return [g for n, g in spec.secgroups.items() if not names or n in names]


def groups_by_name(cloud: Cloud, spec: Spec, names: Iterable[str], *, entry: str = "secgroups"
                   ) -> dict[str, Any]:
    """Return the project's group for each of ``names`` that exists (listing once).

    :raises ConfigError: a name borne by more than one group of the project.
    """
    found: dict[str, list[Any]] = {}
    for group in list_security_groups(cloud):
        found.setdefault(group.name, []).append(group)
    out = {}
    for name in names:
        groups = found.get(name, [])
        if len(groups) > 1:
            ids = ", ".join(sorted(g.id for g in groups))
            raise ConfigError(f"{spec.path}: {entry}.{name}: {len(groups)} security groups of the "
                              f"project are named {name!r} (ids {ids}); delete or rename the extra "
                              "ones, ivc cannot tell which one is meant")
        if groups:
            out[name] = groups[0]
    return out


def group_rules(cloud: Cloud, declared: SecGroup, existing_rules: Iterable[Any],
                ids: Mapping[str, str], shared_with: Sequence[str]) -> RulePlan:
    """Compare one declared group with its existing rules, for this run's environment."""
    return plan_rules(declared.rules, existing_rules, ids, env=cloud.env,
                      default_egress=declared.default_egress, shared=bool(shared_with))


def _check_descriptions(spec: Spec, declared: SecGroup, env: str) -> None:
    """A rule's description with the environment's marker must fit Neutron's 255 characters."""
    for i, rule in enumerate(declared.rules):
        text = rule_marker(env, rule.description)
        if len(text) > NEUTRON_NAME_MAX:
            raise ConfigError(
                f"{spec.path}: secgroups.{declared.name}.rules[{i}].description: with ivc's "
                f"marker {rule_marker(env)!r} it is {len(text)} characters, over Neutron's "
                f"{NEUTRON_NAME_MAX}; shorten it to {NEUTRON_NAME_MAX - len(rule_marker(env)) - 1}")


def plan_secgroups(cloud: Cloud, spec: Spec, names: Iterable[str] = (), *, prune: bool = False
                   ) -> SecGroupsPlan:
    """Compare the declared groups (all, or those in ``names``) with the project's (one request).

    :raises ConfigError: unknown or ambiguous group, a rule whose ``remote_group`` neither
        exists nor is being ensured in this run, a rule description too long with ivc's marker.
    :raises CloudCallError: the listing failed.
    """
    selected = select_groups(spec, names)
    plan = SecGroupsPlan(prune=prune, env=cloud.env)
    if not selected:
        return plan
    existing = groups_by_name(cloud, spec, spec.secgroups)
    plan.ids = {name: group.id for name, group in existing.items()}
    selected_names = {g.name for g in selected}
    for declared in selected:
        for i, rule in enumerate(declared.rules):
            remote = rule.remote_group
            if remote and remote not in plan.ids and remote not in selected_names:
                raise ConfigError(
                    f"{spec.path}: secgroups.{declared.name}.rules[{i}].remote_group: group "
                    f"{remote!r} does not exist in the cloud yet; ensure it in the same run "
                    f"(add --name {remote}, or run ensure-secgroups without --name)")
        _check_descriptions(spec, declared, cloud.env)
        group = existing.get(declared.name)
        envs = tagged_envs(group) if group is not None else []
        shared_with = [e for e in envs if e != cloud.env]
        rules = group_rules(cloud, declared,
                            group.security_group_rules if group else neutron_defaults(),
                            plan.ids, shared_with)
        plan.groups.append(GroupPlan(
            declared=declared, existing=group, rules=rules,
            update_description=group is not None and
            (group.description or "") != declared.description,
            tag=cloud.env not in envs, shared_with=shared_with))
    return plan


def _unmanaged_warning(gp: GroupPlan, rules: Sequence[Any], names_by_id: Mapping[str, str]
                       ) -> str:
    texts = "; ".join(rule_text(r, names_by_id) for r in rules)
    name = gp.declared.name
    if all(is_default_egress(r) for r in rules):
        return (f"security group {name}: Neutron's default egress rules kept ({texts}): this "
                f"declaration does not want them, but environment(s) "
                f"{', '.join(gp.shared_with)} share the group; delete them by hand if none needs "
                "outbound traffic")
    return (f"security group {name}: {len(rules)} rule(s) that no ivc environment made kept "
            f"({texts}); --prune leaves them: declare them, or delete them by hand")


def _planned_actions(plan: SecGroupsPlan, env: str) -> tuple[list[Action], list[str]]:
    """The actions a plan implies, and warnings about undeclared rules kept."""
    names_by_id = {v: k for k, v in plan.ids.items()}
    actions: list[Action] = []
    warnings: list[str] = []
    for gp in plan.groups:
        name = gp.declared.name
        if gp.existing is None:
            actions.append(Action("create", "security_group", name, gp.declared.description))
        elif gp.update_description:
            actions.append(Action("update", "security_group", name,
                                  f"description {gp.declared.description!r}"))
        if gp.tag:
            actions.append(Action("tag", "security_group", name, group_tag(env)))
        actions += [Action("create", "security_group_rule", name, rule_text(body, names_by_id))
                    for body in gp.rules.create]
        undeclared = gp.rules.delete
        if undeclared and plan.prune:
            actions += [Action("delete", "security_group_rule", name,
                               rule_text(rule, names_by_id),
                               {"id": rule["id"]} if rule.get("id") else {})
                        for rule in undeclared]
        elif undeclared:
            warnings.append(undeclared_warning(name, undeclared, names_by_id, env))
        if gp.rules.unmanaged:
            warnings.append(_unmanaged_warning(gp, gp.rules.unmanaged, names_by_id))
    return actions, warnings


def apply_secgroups(cloud: Cloud, plan: SecGroupsPlan) -> StepResult:
    """Carry out a plan: create groups, update descriptions, tag them with the environment,
    POST the missing rules (one request per group), and prune if asked.

    :raises CloudCallError: a cloud call failed for good.
    """
    result = StepResult(step=STEP)
    ids = dict(plan.ids)
    current_rules: dict[str, list[Any]] = {}
    for gp in plan.groups:
        group = _ensure_group(cloud, gp, plan, result)
        ids[gp.declared.name] = group.id
        current_rules[gp.declared.name] = list(group.security_group_rules or [])
    names_by_id = {v: k for k, v in ids.items()}
    pending = _missing_rules(cloud, plan.groups, current_rules, ids)
    if pending:
        _create_rules(cloud, plan.groups, ids, pending)
        log.info("created %d security group rule(s)", len(pending))
    result.actions += [Action("create", "security_group_rule", names_by_id[body["security_group_id"]],
                              rule_text(body, names_by_id)) for body in pending]
    for gp in plan.groups:
        _prune_group(cloud, gp, plan, current_rules[gp.declared.name], ids, result)
    if result.actions:
        forget(cloud, "security_groups")
    result.info["ids"] = {gp.declared.name: ids[gp.declared.name] for gp in plan.groups}
    return result


def _ensure_group(cloud: Cloud, gp: GroupPlan, plan: SecGroupsPlan, result: StepResult) -> Any:
    """The group, created or its description updated, tagged with the environment."""
    conn = cloud.conn
    name = gp.declared.name
    tag = group_tag(cloud.env)
    if gp.existing is None:
        group = cloud.call(
            f"create security group {name}",
            lambda: conn.network.create_security_group(
                name=gp.declared.name, description=gp.declared.description),
            done_already=lambda: _group_made_meanwhile(cloud, name, plan.ids))
        log.info("created security group %s (%s)", name, group.id)
        result.actions.append(Action("create", "security_group", name,
                                     gp.declared.description, {"id": group.id}))
    else:
        group = gp.existing
        if gp.update_description:
            cloud.call(f"update security group {name}",
                       lambda: conn.network.update_security_group(
                           gp.existing, description=gp.declared.description))
            result.actions.append(Action("update", "security_group", name,
                                         f"description {gp.declared.description!r}",
                                         {"id": gp.existing.id}))
    if gp.tag:  # PUT .../tags/<tag>: idempotent, keeps the other environments' tags
        cloud.call(f"tag security group {name} with {tag}",
                   lambda: conn.network.add_tag(group, tag))
        result.actions.append(Action("tag", "security_group", name, tag, {"id": group.id}))
    return group


def _prune_group(cloud: Cloud, gp: GroupPlan, plan: SecGroupsPlan, current: list[Any],
                 ids: Mapping[str, str], result: StepResult) -> None:
    """Report the group's undeclared rules, or with ``--prune`` delete this environment's."""
    conn = cloud.conn
    name = gp.declared.name
    names_by_id = {v: k for k, v in ids.items()}
    rules = group_rules(cloud, gp.declared, current, ids, gp.shared_with)
    undeclared = rules.delete
    if undeclared and not plan.prune:
        result.warnings.append(undeclared_warning(name, undeclared, names_by_id, cloud.env))
        undeclared = []
    if rules.unmanaged:
        result.warnings.append(_unmanaged_warning(gp, rules.unmanaged, names_by_id))
    if undeclared:
        log.info("deleting %d undeclared rule(s) of %s: %s", len(undeclared), name,
                 "; ".join(rule_text(r, names_by_id) for r in undeclared))
    for rule in undeclared:
        delete_or_gone(cloud, f"delete rule {rule['id']} of {name}",
                       lambda rule=rule: conn.network.delete_security_group_rule(
                           rule["id"], ignore_missing=False))
        result.actions.append(Action("delete", "security_group_rule", name,
                                     rule_text(rule, names_by_id), {"id": rule["id"]}))


def _missing_rules(cloud: Cloud, groups: Sequence[GroupPlan], current: Mapping[str, list[Any]],
                   ids: Mapping[str, str]) -> list[dict[str, Any]]:
    """API bodies (with ``security_group_id``) of every declared rule missing from ``current``."""
    bodies = []
    for gp in groups:
        name = gp.declared.name
        rules = group_rules(cloud, gp.declared, current.get(name, []), ids, gp.shared_with)
        for body in rules.create:
            bodies.append({**body, "security_group_id": ids[name]})
    return bodies


def _create_rules(cloud: Cloud, groups: Sequence[GroupPlan], ids: Mapping[str, str],
                  pending: list[dict[str, Any]]) -> None:
    """POST ``pending``, one request per group (Neutron's bulk create takes one group at a
    time); when rules appeared meanwhile, list and send the rest."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for body in pending:
        by_group.setdefault(body["security_group_id"], []).append(body)
    for group_id, bodies in by_group.items():
        mine = [gp for gp in groups if ids.get(gp.declared.name) == group_id]
        _create_group_rules(cloud, mine, ids, bodies)


def _create_group_rules(cloud: Cloud, groups: Sequence[GroupPlan], ids: Mapping[str, str],
                        pending: list[dict[str, Any]]) -> None:
    """POST one group's missing rules in one request, with the 409 and lost-response handling."""
    conn = cloud.conn
    wanted = {gp.declared.name for gp in groups}

    def still_missing() -> list[dict[str, Any]]:
        fresh = {g.name: list(g.security_group_rules or [])
                 for g in list_security_groups(cloud, refresh=True) if g.name in wanted}
        return _missing_rules(cloud, groups, fresh, ids)

    for _ in range(RULE_CREATE_ROUNDS):
        if not pending:
            return
        batch = pending

        def rules_made() -> bool | None:
            nonlocal batch
            batch = still_missing()  # a lost attempt may have created them (all or none)
            return True if not batch else None

        try:
            cloud.call(f"create {len(batch)} security group rules",
                       lambda batch=batch: list(conn.network.create_security_group_rules(batch)),
                       done_already=rules_made)
            return
        except CloudCallError as exc:
            if exc.status != 409 or "already exists" not in exc.details.lower():
                raise
            log.info("a declared rule appeared meanwhile (%s); listing again",
                     exc.details.strip())
            pending = still_missing()
    if pending:
        raise CloudCallError(f"create {len(pending)} security group rules",
                             RuntimeError("rules kept appearing concurrently; run again"))


def _group_made_meanwhile(cloud: Cloud, name: str, known: Mapping[str, str]) -> Any | None:
    """The group named ``name`` that a lost create made (one that was not there before)."""
    for group in list_security_groups(cloud, refresh=True):
        if group.name == name and group.id not in known.values():
            return group
    return None


def ensure_secgroups(cloud: Cloud, spec: Spec, names: Iterable[str] = (), *, prune: bool = False,
                     dry_run: bool = False) -> StepResult:
    """Make the declared groups (all, or ``names``) and their rules exist.

    :param prune: also delete the rules that are not declared.
    :param dry_run: return the plan; change nothing.
    :raises ConfigError: invalid input (before any change).
    :raises CloudCallError: a cloud call failed.
    """
    plan = plan_secgroups(cloud, spec, names, prune=prune)
    return describe_secgroups(plan) if dry_run else apply_secgroups(cloud, plan)


def describe_secgroups(plan: SecGroupsPlan) -> StepResult:
    """What ``apply_secgroups`` would do, for a dry run (no request)."""
    actions, warnings = _planned_actions(plan, plan.env)
    return StepResult(step=STEP, dry_run=True, actions=actions, warnings=warnings,
                      info={"ids": dict(plan.ids)})
