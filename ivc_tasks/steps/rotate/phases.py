"""The phases a rotation goes through, in order: ONE list that the executor runs and the
dry run describes, so the two cannot drift.

  preflight         (``preflight.py``) checks, before anything changes.
  rollback          a resumed rotation that cannot finish is rolled back first, then rotated.
  create            create the new server (same declaration, next ``ivc_gen``, its own port,
                    the markers in its metadata; the old server is untouched) and wait ACTIVE;
                    resuming: wait for the new server the crashed run made.
  ready-gate        the new server's checks that need neither volumes nor address
                    (``gates.py``), before the old server is touched.
  stop              stop the old server gracefully, wait SHUTOFF (``--no-stop`` skips).
  move-port         only with a kept port (``keep_address``), and then BEFORE create: see
                    ``KEPT_PORT_FIRST`` below.
  move-volumes      each declared volume: detach from the old server, wait available, attach
                    to the new one, wait in-use (side by side).
  move-floating-ip  ONE update of each floating IP's port_id, to the new server's port.
  healthy-gate      every check of the new server, on the address clients use (``gates.py``).
  delete-old        delete the old server and wait until it is gone.
  finish            clear the markers from the new server.

An old server in ERROR cannot have volumes detached (Nova refuses, 409): it is deleted first,
which frees them (no stop). When the old server is gone already, the volumes and floating IPs
just move. A failure before ``delete-old`` rolls back; from ``delete-old`` on there is no way
back, and a rerun finishes the rotation.
"""

from __future__ import annotations

from ivc_tasks.steps.rotate.decide import CREATE, FINISH, FORWARD, ROLLBACK, ROTATE

PHASES = ("preflight", "rollback", "create", "ready-gate", "stop", "move-port", "move-volumes",
          "move-floating-ip", "healthy-gate", "delete-old", "finish")
POINT_OF_NO_RETURN = "delete-old"
# A server with a kept port (``keep_address``, ``resources/ports.py``) is stopped and its port
# detached BEFORE the new server is made with it (one port, one server at a time):
#   move-port       tag the port with the move under way (the new server does not exist yet to
#                   hold a marker), detach it from the stopped old server, wait until free;
#                   ``create`` then boots the new server with it (same IP, same MAC).
KEPT_PORT_FIRST = ["stop", "move-port"]


def after_create(old_status: str | None) -> list[str]:
    """The phases after the new server is ACTIVE, given the old server's status (None: gone)."""
    if old_status is None:
        return ["move-volumes", "move-floating-ip", "healthy-gate", "finish"]
    if old_status == "ERROR":
        return ["ready-gate", "delete-old", "move-volumes", "move-floating-ip", "healthy-gate",
                "finish"]
    return ["ready-gate", "stop", "move-volumes", "move-floating-ip", "healthy-gate",
            "delete-old", "finish"]


def plan_phases(kind: str, *, old_status: str | None, wait_for_new: bool = False,
                keep_port: bool = False) -> list[str]:
    """The phases after preflight for a decision ``kind`` (see ``decide.py``).

    :param old_status: the old server's status as listed (None: it is gone).
    :param wait_for_new: resuming a rotation whose new server is still booting.
    :param keep_port: the server has a kept port to move (``keep_address``): stop, move-port,
        then create (an old server in ERROR or gone: the usual order).
    """
    if kind == CREATE:
        return ["create", "healthy-gate"]
    if keep_port and kind in (ROTATE, ROLLBACK) and old_status is not None:
        first = ["rollback"] if kind == ROLLBACK else []
        if old_status == "ERROR":  # Nova detaches no port from it: deleting it frees the port
            return first + ["delete-old", "create", "move-volumes", "move-floating-ip",
                            "healthy-gate", "finish"]
        rest = [p for p in after_create(old_status) if p != "stop"]
        return first + KEPT_PORT_FIRST + ["create", *rest]
    if kind == ROTATE:
        return ["create", *after_create(old_status)]
    if kind == ROLLBACK:
        return ["rollback", "create", *after_create(old_status)]
    if kind in (FORWARD, FINISH):
        return (["create"] if wait_for_new else []) + after_create(old_status)
    raise ValueError(f"no phases for a {kind!r} decision")
