"""demo: the whole job against the local cloud, as the commands a user would type."""

import sys

from invoke import task

IN_WEB1 = "devcloud.guest web1 --"
DATA_VOLUME = "web1-data"


def volume_note(disk: str) -> str:
    """In web1's guest: its data volume (found by its by-id path, as on KVM: device letters
    change across a rotate) gets a filesystem the first time, then a line saying which server
    wrote it; the file is shown before and after the rotate."""
    return (f"d={disk}; blkid $d >/dev/null || mkfs.ext4 -q $d; mount $d /mnt && "
            "echo \"written by $(hostname) (instance $(cat /var/lib/cloud/data/instance-id))\" "
            ">> /mnt/ivc-demo.txt && cat /mnt/ivc-demo.txt; umount /mnt")


def steps(disk: str) -> list[str]:
    return [
        "deploy",
        "deploy",            # the second run changes nothing, and says so
        # what only a running guest can show: cloud-init ran web1's user_data
        f"{IN_WEB1} cloud-init status --wait",
        f"{IN_WEB1} cat /etc/ivc-greeting",
        f"{IN_WEB1} sh -c '{volume_note(disk)}'",
        "rotate --name web1",
        # the new web1 reads what the old one wrote on the same volume
        f"{IN_WEB1} cloud-init status --wait",
        f"{IN_WEB1} sh -c '{volume_note(disk)}'",
        "status",
    ]


def _run(c, step):
    c.run(f"{sys.executable} -m invoke {step}", echo=True, pty=False, env={"IVC_ENV": "local"})


@task
def demo(c):
    """Run the demo on the local cloud: up, deploy (twice), look inside web1, rotate it, status."""
    from ivc_tasks.devcloud import guests
    _run(c, "devcloud.up")
    for step in steps(guests.volume_disk_path(DATA_VOLUME)):
        _run(c, step)
