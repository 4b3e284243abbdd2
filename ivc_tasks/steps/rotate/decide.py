"""What a run does with the servers of one declared name: the decision (pure, table-tested).

A rerun reads one server listing and ``decide`` picks: no server -> create; one server, no
rotation under way -> rotate; a rotation under way whose new server is ACTIVE (or booting, then
ACTIVE) -> roll forward; new server in ERROR, not ACTIVE in time, or marked ``ivc_rollback=1``
(a rollback had started) -> roll back, then rotate afresh; old server gone -> finish (volumes
and floating IP onto the new server, clear the markers); servers ivc cannot account for ->
conflict (touch nothing).

Adopting (``rotate --adopt``): a server ivc did not make is the old server of a plain rotation
(``Decision.adopt``), only while ivc has no server of that name. Its rotation is resumed like
any other: the caller lists it too, found by id from the new server's ``ivc_replaces`` (it is
not among the managed servers), and ``decide`` finds it there as the old server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ivc_tasks.resources.markers import Markers
from ivc_tasks.resources.servers import WAITING_STATES, generation

CREATE = "create"      # no server: make it
ROTATE = "rotate"      # one server, no rotation under way: rotate it
FORWARD = "forward"    # a rotation under way whose new server is ACTIVE (or booting): finish it
ROLLBACK = "rollback"  # a rotation under way that cannot finish: roll it back
FINISH = "finish"      # the old server is gone already: the new one gets everything
CONFLICT = "conflict"  # servers ivc cannot account for: touch nothing


@dataclass(frozen=True)
class Seen:
    """What one listing says about a server of the rotation (the decision's input)."""

    id: str
    status: str
    task_state: str | None = None
    rotation: str | None = None
    role: str | None = None
    replaces: str | None = None
    rollback: bool = False
    gen: int = 0

    @classmethod
    def of(cls, server: Any) -> Seen:
        marks = Markers.of(server)
        return cls(id=server.id, status=str(server.status or "").upper(),
                   task_state=getattr(server, "task_state", None), rotation=marks.rotation,
                   role=marks.role, replaces=marks.replaces, rollback=marks.rollback,
                   gen=generation(server))


@dataclass(frozen=True)
class Decision:
    kind: str
    old: Seen | None = None
    new: Seen | None = None
    reason: str = ""
    wait_for_new: bool = False  # FORWARD: the new server is still booting
    adopt: bool = False  # ROTATE: the old server is one ivc did not make

    @property
    def label(self) -> str:
        """The decision as reported: its kind, or ``adopt``."""
        return "adopt" if self.adopt else self.kind


def decide(servers: Sequence[Seen], *, adopt: Seen | None = None) -> Decision:
    """Decide what a run does with the servers of one declared name (table-tested).

    :param servers: every managed server of that name in the environment, and the old server
        a rotation under way replaces when ivc did not make it (found by ``ivc_replaces``).
    :param adopt: a server ivc did not make, to take over (``--adopt``).
    """
    if adopt is not None:
        if not servers:
            return Decision(ROTATE, old=adopt, adopt=True,
                            reason=f"adopt server {adopt.id}, which ivc did not make")
        if not any(s.replaces == adopt.id for s in servers):
            return Decision(CONFLICT, reason=f"--adopt {adopt.id}: ivc has a server of this "
                            "name already (without --adopt, rotate replaces that one)")
        if adopt.id not in {s.id for s in servers}:  # resuming the adoption under way
            servers = [*servers, adopt]
    if not servers:
        return Decision(CREATE, reason="no server yet")
    rotations = {s.rotation for s in servers if s.rotation}
    plain = [s for s in servers if not s.rotation]
    if not rotations:
        if len(plain) > 1:
            return Decision(CONFLICT, reason=f"{len(plain)} servers and no rotation under way")
        return Decision(ROTATE, old=plain[0], reason="one server, no rotation under way")
    if len(rotations) > 1:
        return Decision(CONFLICT, reason=f"{len(rotations)} rotations under way at once")
    news = [s for s in servers if s.rotation and (s.role == "new" or s.replaces)]
    if len(news) > 1:
        return Decision(CONFLICT, reason="several new servers in one rotation")
    new = news[0] if news else None
    rest = [s for s in servers if s is not new]
    if new is not None and new.replaces:
        # the old server is the one the new replaces, marked or not (Nova refuses to change
        # the metadata of a server in ERROR, so such an old server carries no marker)
        olds = [s for s in rest if s.id == new.replaces]
    else:
        olds = [s for s in rest if s.rotation]
    extras = [s for s in rest if s not in olds]
    if extras:
        return Decision(CONFLICT, reason="servers outside the rotation under way")
    if len(olds) > 1:
        return Decision(CONFLICT, reason="several old servers in one rotation")
    old = olds[0] if olds else None
    if new is None:
        return Decision(ROLLBACK, old=old, reason="the new server was never made (or is "
                        "deleted already)")
    if old is None:
        return Decision(FINISH, new=new, reason="the old server is gone already",
                        wait_for_new=new.status in WAITING_STATES)
    if new.rollback:
        return Decision(ROLLBACK, old=old, new=new, reason="a rollback had started")
    if new.status == "ACTIVE":
        return Decision(FORWARD, old=old, new=new, reason="the new server is ACTIVE")
    if new.status in WAITING_STATES:
        return Decision(FORWARD, old=old, new=new, wait_for_new=True,
                        reason=f"the new server is {new.status}")
    return Decision(ROLLBACK, old=old, new=new, reason=f"the new server is {new.status}")
