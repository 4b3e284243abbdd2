"""demo: the whole job against the local cloud, as the commands a user would type."""

import sys

from invoke import task

STEPS = [
    "devcloud.up",
    "deploy",
    "deploy",            # the second run changes nothing, and says so
    "rotate --name web1",
    "status",
]


@task
def demo(c):
    """Run the demo on the local cloud: devcloud.up, deploy (twice), rotate web1, status."""
    for step in STEPS:
        c.run(f"{sys.executable} -m invoke {step}", echo=True, pty=False,
              env={"IVC_ENV": "local"})
