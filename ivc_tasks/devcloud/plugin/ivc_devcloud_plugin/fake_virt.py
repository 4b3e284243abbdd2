"""Nova's fake virt driver, made to survive a restart of nova-compute.

Upstream's FakeDriver draws its node UUID at random in each process, so a restarted nova-compute
tries to create a second compute node for the same host and refuses to start; and it keeps its
instances in memory only, so after a restart it knows none of the servers in the database and
fails to stop, detach or delete them. This subclass takes the node UUID from nova's own
persistent identity file, and adopts an instance it does not know with the power state the
database records for it. Configured as ``compute_driver = ivc_fake.FakeDriver`` (see nova_compute.py).

Boot, stop, start, reboot, delete, attach and detach wait what ``latency.py``'s mode asks
(nothing by default), so that the local cloud can take a real cloud's wall time.
"""

import functools

from nova.compute import power_state
from nova.virt import fake
from nova.virt import node

from ivc_devcloud_plugin import latency


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

    def get_available_resource(self, nodename):
        resources = super().get_available_resource(nodename)
        resources["uuid"] = node.get_local_node_uuid()
        return resources

    def get_nodenames_by_uuid(self, refresh=False):
        return {node.get_local_node_uuid(): name for name in self.get_available_nodes()}

    spawn = _slowed(fake.FakeDriver.spawn, "spawn")
    get_info = _adopting(fake.FakeDriver.get_info)
    power_off = _slowed(_adopting(fake.FakeDriver.power_off), "power_off")
    power_on = _slowed(_adopting(fake.FakeDriver.power_on), "power_on")
    reboot = _slowed(_adopting(fake.FakeDriver.reboot), "reboot")
    attach_volume = _slowed(_adopting(fake.FakeDriver.attach_volume), "attach_volume")
    detach_volume = _slowed(_adopting(fake.FakeDriver.detach_volume), "detach_volume")
    destroy = _slowed(_adopting(fake.FakeDriver.destroy), "destroy")
