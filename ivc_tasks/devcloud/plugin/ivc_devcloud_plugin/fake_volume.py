"""Cinder's fake volume driver with the simulated latency of ``latency.py``.

Configured as ``volume_driver = ivc_devcloud_plugin.fake_volume.FakeVolumeDriver``.
"""

from cinder.tests import fake_driver

from ivc_devcloud_plugin import latency


def _slowed(name):
    method = getattr(fake_driver.FakeLoggingVolumeDriver, name)

    def wrapper(self, *args, **kwargs):
        volume = kwargs.get("volume", args[0] if args else None)
        try:
            label = volume["display_name"]
        except (KeyError, TypeError, IndexError):
            label = getattr(volume, "display_name", None)
        latency.pause(name, label)
        return method(self, *args, **kwargs)
    wrapper.__name__ = name
    wrapper.__doc__ = method.__doc__
    return wrapper


class FakeVolumeDriver(fake_driver.FakeLoggingVolumeDriver):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        latency.record_driver("cinder-volume")

    create_volume = _slowed("create_volume")
    delete_volume = _slowed("delete_volume")
    initialize_connection = _slowed("initialize_connection")
    terminate_connection = _slowed("terminate_connection")
