"""Cinder's fake volume driver: each volume a sparse file of its size; latency of ``latency.py``.

Configured as ``volume_driver = ivc_devcloud_plugin.fake_volume.FakeVolumeDriver``. The file
(``<devcloud dir>/data/volumes/<volume id>.img``, see ``guest.volume_file``) is made at
create, kept across detach and attach, grown by an extend and deleted with the volume; the virt
driver shows it to a guest as a block device (a loop device over the file).
"""

import os

from cinder.tests import fake_driver

from ivc_devcloud_plugin import guest, latency

GIB = 1024 ** 3


def _slowed(name, method):
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


def _field(volume, name):
    try:
        return volume[name]
    except (KeyError, TypeError):
        return getattr(volume, name)


def ensure_file(volume_id, size_gb):
    """Make the volume's sparse file (or grow it to ``size_gb``); return its path."""
    if not guest.devcloud_dir():
        return None
    path = guest.volume_file(volume_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        if handle.seek(0, os.SEEK_END) < int(size_gb) * GIB:
            handle.truncate(int(size_gb) * GIB)
    return path


class FakeVolumeDriver(fake_driver.FakeLoggingVolumeDriver):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        latency.record_driver("cinder-volume")

    def _ivc_create_volume(self, volume):
        update = super().create_volume(volume)
        ensure_file(_field(volume, "id"), _field(volume, "size"))
        return update

    def _ivc_delete_volume(self, volume):
        super().delete_volume(volume)
        if guest.devcloud_dir():
            guest.volume_file(_field(volume, "id")).unlink(missing_ok=True)

    def _ivc_initialize_connection(self, volume, connector):
        info = super().initialize_connection(volume, connector)
        # a volume made before the files existed gets one now
        path = ensure_file(_field(volume, "id"), _field(volume, "size"))
        if path is not None:
            info.setdefault("data", {}).update(device_path=str(path),
                                               volume_id=_field(volume, "id"))
        return info

    def extend_volume(self, volume, new_size):
        super().extend_volume(volume, new_size)
        ensure_file(_field(volume, "id"), new_size)

    create_volume = _slowed("create_volume", _ivc_create_volume)
    delete_volume = _slowed("delete_volume", _ivc_delete_volume)
    initialize_connection = _slowed("initialize_connection", _ivc_initialize_connection)
    terminate_connection = _slowed("terminate_connection",
                                   fake_driver.FakeLoggingVolumeDriver.terminate_connection)
