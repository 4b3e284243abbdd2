"""Nova's fake virt driver, made to survive a restart of nova-compute.

Upstream's FakeDriver draws its node UUID at random in each process, so a restarted nova-compute
tries to create a second compute node for the same host and refuses to start; and it keeps its
instances in memory only, so after a restart it knows none of the servers in the database and
fails to stop, detach or delete them. This subclass takes the node UUID from nova's own
persistent identity file, and adopts an instance it does not know with the power state the
database records for it. Configured as ``compute_driver = ivc_fake.FakeDriver`` (see nova_compute.py).

Boot, stop, start, reboot, delete, attach and detach wait what ``latency.py``'s mode asks
(nothing by default), so that the local cloud can take a real cloud's wall time.

Each server also gets a guest (``guest.py``: a container running Debian's cloud-init on what
Nova gives a VM), unless ``guest_mode.py``'s switch turns it off for its name or the machine
cannot make one; a server without a guest behaves as upstream's fake one. Whether a server has
a guest is whether its state folder exists, so that a restarted nova-compute knows.
"""

import functools

from nova.compute import power_state
from nova.virt import driver, fake, node
from oslo_log import log as logging

from ivc_devcloud_plugin import configdrive, guest, guest_mode, latency

LOG = logging.getLogger(__name__)


def _adopting(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        instance = kwargs.get("instance")
        if instance is None:
            instance = next(a for a in args if hasattr(a, "uuid") and hasattr(a, "power_state"))
        self.adopt(instance)
        return method(self, *args, **kwargs)
    return wrapper


def _slowed(method, operation):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        instance = kwargs.get("instance") or next(
            (a for a in args if hasattr(a, "uuid") and hasattr(a, "power_state")), None)
        latency.pause(operation, getattr(instance, "display_name", None))
        return method(self, *args, **kwargs)
    return wrapper


class FakeDriver(fake.FakeDriver):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        latency.record_driver("nova-compute")

    def adopt(self, instance):
        if instance.uuid not in self.instances and instance.host == self._host:
            state = instance.power_state or power_state.RUNNING
            self.instances[instance.uuid] = fake.FakeInstance(instance.name, state, instance.uuid)
            # A guest that was running when the host went down boots again, as a VM does with
            # resume_guests_state_on_host_boot; one still running is simply kept.
            if state == power_state.RUNNING and self._has_guest(instance) and \
                    not guest.running(instance.uuid):
                try:
                    self._boot(instance)
                except Exception as exc:  # noqa: BLE001 - adopting must not fail get_info
                    LOG.warning("guest of %s did not boot again: %s", instance.display_name, exc)

    # -- guests --------------------------------------------------------------------------------
    @staticmethod
    def _has_guest(instance):
        return guest.state_dir(instance.uuid).exists() if guest.devcloud_dir() else False

    @staticmethod
    def _guest_wanted(instance):
        why_not = guest.available() if guest.devcloud_dir() else "no devcloud folder"
        if why_not:
            LOG.info("no guest for %s: %s", instance.display_name, why_not)
            return False
        return guest_mode.enabled(guest_mode.read(), instance.display_name)

    @staticmethod
    def _boot(instance, network_info=None, seed=None):
        if guest.running(instance.uuid):
            return
        macs = [vif["address"] for vif in network_info or []]
        if not macs:  # power on / adoption: keep the MACs the spawn recorded
            try:
                macs = guest.state_dir(instance.uuid).joinpath("macs").read_text().split()
            except OSError:
                macs = []
        guest.prepare(instance.uuid, hostname=instance.hostname or instance.display_name,
                      macs=macs, seed=seed)
        pid = guest.start(instance.uuid)
        LOG.info("guest of %s booted (init pid %s)", instance.display_name, pid)

    def _spawn(self, context, instance, image_meta, injected_files, admin_password,
               allocations, network_info=None, block_device_info=None, power_on=True,
               accel_info=None):
        super().spawn(context, instance, image_meta, injected_files, admin_password,
                      allocations, network_info=network_info,
                      block_device_info=block_device_info, power_on=power_on,
                      accel_info=accel_info)
        if not self._guest_wanted(instance):
            return
        seed = configdrive.tree(instance, network_info, injected_files, admin_password) \
            if configdrive.wanted(instance) else None
        guest.state_dir(instance.uuid).mkdir(parents=True, exist_ok=True)
        # volumes given at boot (block device mappings) are disks from the start
        for bdm in driver.block_device_info_get_mapping(block_device_info):
            self._attach_disk(instance, bdm["connection_info"], bdm["mount_device"])
        if power_on:
            self._boot(instance, network_info, seed)
        else:
            guest.prepare(instance.uuid, hostname=instance.hostname or instance.display_name,
                          macs=[vif["address"] for vif in network_info or []], seed=seed)

    def _power_off(self, instance, timeout=0, retry_interval=0):
        fake.FakeDriver.power_off(self, instance, timeout, retry_interval)
        if self._has_guest(instance):
            guest.stop(instance.uuid)

    def _power_on(self, context, instance, network_info, block_device_info=None,
                  accel_info=None, share_info=None):
        fake.FakeDriver.power_on(self, context, instance, network_info, block_device_info)
        if self._has_guest(instance):
            self._boot(instance, network_info)

    def _reboot(self, context, instance, network_info, reboot_type, block_device_info=None,
                bad_volumes_callback=None, accel_info=None, share_info=None):
        # adopted by the wrapper, so known: upstream's reboot would just power on (the
        # wrapped power_on, which would add its latency to the reboot's)
        if self._has_guest(instance):
            guest.stop(instance.uuid)
        self._power_on(context, instance, network_info, block_device_info)

    def _destroy(self, context, instance, network_info, block_device_info=None,
                 destroy_disks=True, destroy_secrets=True):
        fake.FakeDriver.destroy(self, context, instance, network_info, block_device_info,
                                destroy_disks, destroy_secrets)
        if self._has_guest(instance):
            guest.destroy(instance.uuid)

    # Volumes are virtio disks, as on KVM: the root is vda, attachments vdb, vdc, ...
    def default_root_device_name(self, instance, image_meta, root_bdm):
        return "/dev/vda"

    def get_device_name_for_instance(self, instance, bdms, block_device_obj):
        return guest.next_device([b.device_name for b in bdms])

    def get_console_output(self, context, instance):
        if self._has_guest(instance):
            # no final newline: Nova's tail (`length`) counts an empty last line as one
            return guest.console(instance.uuid).rstrip(b"\n")
        return super().get_console_output(context, instance)

    def _attach_volume(self, context, connection_info, instance, mountpoint, disk_bus=None,
                       device_type=None, encryption=None):
        fake.FakeDriver.attach_volume(self, context, connection_info, instance, mountpoint,
                                      disk_bus, device_type, encryption)
        if self._has_guest(instance):
            self._attach_disk(instance, connection_info, mountpoint)

    @staticmethod
    def _attach_disk(instance, connection_info, mountpoint):
        volume_id = connection_info.get("serial") or \
            connection_info.get("data", {}).get("volume_id")
        guest.attach_disk(instance.uuid, volume_id, guest.volume_file(volume_id), mountpoint)

    def _detach_volume(self, context, connection_info, instance, mountpoint, encryption=None):
        fake.FakeDriver.detach_volume(self, context, connection_info, instance, mountpoint,
                                      encryption)
        if self._has_guest(instance):
            guest.detach_disk(instance.uuid, mountpoint)

    def get_available_resource(self, nodename):
        resources = super().get_available_resource(nodename)
        resources["uuid"] = node.get_local_node_uuid()
        return resources

    def get_nodenames_by_uuid(self, refresh=False):
        return {node.get_local_node_uuid(): name for name in self.get_available_nodes()}

    spawn = _slowed(_spawn, "spawn")
    get_info = _adopting(fake.FakeDriver.get_info)
    power_off = _slowed(_adopting(_power_off), "power_off")
    power_on = _slowed(_adopting(_power_on), "power_on")
    reboot = _slowed(_adopting(_reboot), "reboot")
    attach_volume = _slowed(_adopting(_attach_volume), "attach_volume")
    detach_volume = _slowed(_adopting(_detach_volume), "detach_volume")
    destroy = _slowed(_adopting(_destroy), "destroy")
