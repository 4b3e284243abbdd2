"""demo: the whole job against the local cloud, as the commands a user would type."""

import sys

from invoke import task

# In web1's guest: its data volume (the first declared, /dev/vdb) gets a filesystem the first
# time, then a line saying which server wrote it; the file is shown before and after the rotate.
VOLUME_NOTE = ("blkid /dev/vdb >/dev/null || mkfs.ext4 -q /dev/vdb; mount /dev/vdb /mnt && "
               "echo \"written by $(hostname) (instance $(cat /var/lib/cloud/data/instance-id))"
               "\" >> /mnt/ivc-demo.txt && cat /mnt/ivc-demo.txt; umount /mnt")
IN_WEB1 = "devcloud.guest web1 --"

STEPS = [
    "devcloud.up",
    "deploy",
    "deploy",            # the second run changes nothing, and says so
    # what only a running guest can show: cloud-init ran web1's user_data
    f"{IN_WEB1} cloud-init status --wait",
    f"{IN_WEB1} cat /etc/ivc-greeting",
    f"{IN_WEB1} sh -c '{VOLUME_NOTE}'",
    "rotate --name web1",
    # the new web1 reads what the old one wrote on the same volume
    f"{IN_WEB1} cloud-init status --wait",
    f"{IN_WEB1} sh -c '{VOLUME_NOTE}'",
    "status",
]


@task
def demo(c):
    """Run the demo on the local cloud: up, deploy (twice), look inside web1, rotate it, status."""
    for step in STEPS:
        c.run(f"{sys.executable} -m invoke {step}", echo=True, pty=False,
              env={"IVC_ENV": "local"})
