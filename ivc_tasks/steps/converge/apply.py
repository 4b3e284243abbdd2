"""converge's changes to one server or to what servers share: ensure the security groups and
keypairs, create a missing server (under its lock), change a server in place.

In place (no new server): security groups added and removed (Nova's addSecurityGroup and
removeSecurityGroup), declared metadata set, the user_data digest re-recorded in its canonical
form (``userdata.userdata_digest``), a declared volume attached, the floating IP ensured.
Each runs under the server's lock and looks at the server again there.
"""

from __future__ import annotations

import logging
from typing import Any

from ivc_tasks.cloud import Cloud
from ivc_tasks.resources.lock import held
from ivc_tasks.resources.resolve import forget, list_security_groups
from ivc_tasks.resources.servers import META_USERDATA, managed_servers, set_metadata
from ivc_tasks.result import StepResult
from ivc_tasks.spec import Spec
from ivc_tasks.steps.converge.plan import ServerPlan
from ivc_tasks.steps.deploy import ensure_secgroups_locked
from ivc_tasks.steps.instances import apply_instance, apply_instance_locked, plan_instance
from ivc_tasks.steps.keypairs import apply_keypairs, plan_keypair
from ivc_tasks.steps.secgroups import describe_secgroups, plan_secgroups
from ivc_tasks.steps.status import declared_groups, server_groups
from ivc_tasks.steps.volumes import apply_attach, plan_attach
from ivc_tasks.userdata import userdata_digest

log = logging.getLogger("ivc")


def ensure_shared(cloud: Cloud, spec: Spec, *, dry_run: bool = False) -> list[StepResult]:
    """ensure-secgroups (every declared group) and ensure-keypairs (those the servers use).

    :raises ConfigError: a bad group or keypair declaration (nothing changed).
    """
    steps: list[StepResult] = []
    if spec.secgroups:
        plan = plan_secgroups(cloud, spec)
        steps.append(describe_secgroups(plan) if dry_run
                     else ensure_secgroups_locked(cloud, spec, plan))
    keypairs = {}
    for declared in spec.servers.values():
        if declared.keypair:
            wanted = plan_keypair(cloud, spec, declared)
            if wanted is not None:
                keypairs.setdefault(wanted.name, wanted)
    if keypairs:
        steps.append(apply_keypairs(cloud, keypairs, dry_run=dry_run))
    return steps


def create_one(cloud: Cloud, spec: Spec, plan: ServerPlan) -> bool:
    """Create a missing server (and attach its declared volumes, at boot); False when another
    run made it meanwhile.

    :raises IvcError: the create or its wait failed.
    """
    forget(cloud, "security_groups")
    instance = plan_instance(cloud, spec, plan.name)
    result = apply_instance_locked(cloud, spec, instance)
    return result.changed


def update_one(cloud: Cloud, spec: Spec, plan: ServerPlan) -> bool:
    """Change server ``plan.name`` in place, under its lock (looked at again there).

    :raises IvcError: a change failed.
    """
    declared = spec.servers[plan.name]
    changed = False
    with held(cloud, plan.name, op="converge"):
        forget(cloud, "servers")
        found = managed_servers(cloud, plan.name)
        if not found:
            return False
        server = found[0]
        want_groups = declared_groups(declared)
        have_groups = server_groups(server)
        if have_groups is not None and have_groups != want_groups:
            changed |= _security_groups(cloud, server, plan.name, want_groups, have_groups)
        meta = server.metadata or {}
        updates = {k: v for k, v in declared.metadata.items() if meta.get(k) != v}
        digest = userdata_digest(declared)
        if "userdata_record" in plan.drift and meta.get(META_USERDATA) != digest:
            updates[META_USERDATA] = digest
        if updates:
            set_metadata(cloud, server, f"set metadata of server {plan.name}", updates)
            log.info("server %s: metadata %s set in place", plan.name, ", ".join(sorted(updates)))
            changed = True
        if "volumes" in plan.drift:
            step = apply_attach(cloud, plan_attach(cloud, spec, plan.name, server=server))
            changed |= step.changed
        if "floating_ip" in plan.drift:
            instance = plan_instance(cloud, spec, plan.name)
            changed |= apply_instance(cloud, instance).changed
    forget(cloud, "servers")
    return changed


def _security_groups(cloud: Cloud, server: Any, name: str, want: list[str], have: list[str]
                     ) -> bool:
    conn = cloud.conn
    ids: dict[str, str] = {}
    for group in list_security_groups(cloud, refresh=True):
        ids.setdefault(group.name, group.id)
    for group in sorted(set(want) - set(have)):
        gid = ids.get(group, group)
        cloud.call(f"add security group {group} to server {name}",
                   lambda gid=gid: conn.compute.add_security_group_to_server(server.id, gid))
        log.info("server %s: security group %s added in place", name, group)
    for group in sorted(set(have) - set(want)):
        gid = ids.get(group, group)
        cloud.call(f"remove security group {group} from server {name}",
                   lambda gid=gid: conn.compute.remove_security_group_from_server(server.id, gid))
        log.info("server %s: security group %s removed in place", name, group)
    return True


__all__ = ["ensure_shared", "create_one", "update_one"]
