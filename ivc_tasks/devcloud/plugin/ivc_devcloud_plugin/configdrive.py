"""The config drive's tree, built by Nova's own code, as a VM's drive would hold it.

``nova.virt.libvirt`` builds its drive from ``InstanceMetadata(...)`` through
``ConfigDriveBuilder``; this takes the same ``(path, data)`` pairs
(``metadata_for_config_drive``) and hands them to the guest, which finds them where
cloud-init's ConfigDrive datasource reads a seed (/var/lib/cloud/seed/config_drive).
"""

from nova.api.metadata import base as instance_metadata
from nova.virt import configdrive


def wanted(instance):
    """Whether Nova gives this instance a config drive (flag, image property, or forced)."""
    return configdrive.required_by(instance)


def tree(instance, network_info=None, injected_files=None, admin_password=None):
    """``{relative path: bytes}``: the drive's files (openstack/latest/meta_data.json, ...)."""
    extra_md = {"admin_pass": admin_password} if admin_password else {}
    metadata = instance_metadata.InstanceMetadata(
        instance, content=injected_files, extra_md=extra_md, network_info=network_info)
    return {path: data if isinstance(data, bytes) else str(data).encode()
            for path, data in metadata.metadata_for_config_drive()}
