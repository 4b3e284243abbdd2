"""Write each service's configuration under ``<cache>/etc/<service>/``.

The options that matter (see shared/devcloud-notes.md): fernet tokens; nova's fake virt driver
with no VIF-plugging wait; ML2 with this project's always-bind mechanism driver; cinder's fake
volume driver; glance's file store; one worker per service; every listener on 127.0.0.1.
"""

from __future__ import annotations

import configparser
import hashlib
import hmac
import shutil
from pathlib import Path

from .layout import HOST, REGION, Layout

PORTS = {"keystone": 5000, "glance": 9292, "placement": 8778, "nova-api": 8774, "nova-metadata": 8775,
         "neutron-api": 9696, "cinder-api": 8776}
KEYSTONE_URL = f"http://{HOST}:{PORTS['keystone']}"


def db_url(secrets: dict, name: str) -> str:
    return f"mysql+pymysql://devcloud:{secrets['database']}@{HOST}/{name}?charset=utf8"


def transport_url(secrets: dict) -> str:
    return f"rabbit://devcloud:{secrets['rabbit']}@{HOST}:5672/devcloud"


def _auth(secrets: dict, user: str) -> dict:
    """A keystoneauth password section for service user ``user``."""
    return {"auth_url": KEYSTONE_URL, "auth_type": "password", "project_domain_name": "Default",
            "user_domain_name": "Default", "project_name": "service", "username": user,
            "password": secrets["service"], "region_name": REGION}


def _authtoken(secrets: dict, user: str) -> dict:
    return {"www_authenticate_uri": KEYSTONE_URL, "service_token_roles_required": "true",
            **_auth(secrets, user)}


def metadata_secret(secrets: dict) -> str:
    """The secret Nova's metadata API and the metadata proxy share (derived: no new secret to
    store, and a cloud made before it existed gets it too)."""
    return hmac.new(secrets["service"].encode(), b"ivc-devcloud metadata proxy",
                    hashlib.sha256).hexdigest()


def _write(path: Path, sections: dict[str, dict]) -> None:
    parser = configparser.RawConfigParser()
    parser.optionxform = str
    for section, options in sections.items():
        if section != "DEFAULT":
            parser.add_section(section)
        for key, value in options.items():
            parser.set(section, key, str(value))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        parser.write(handle)
    path.chmod(0o600)


# A user holding this role in a project is refused the console log (HTTP 403), as on clouds
# that disable it: the tests make such a user to see ivc's checks without the console. No one
# else holds it, so nothing changes for the cloud's other users.
NO_CONSOLE_ROLE = "ivc-no-console"
NOVA_POLICY = (
    "# written by ivc's devcloud (configs.py); oslo.policy re-reads it when it changes\n"
    f'"os_compute_api:os-console-output": "rule:project_member_or_admin and not '
    f'role:{NO_CONSOLE_ROLE}"\n')


def write_nova_policy(path: Path) -> bool:
    """Write Nova's policy file (see ``NOVA_POLICY``); True when it changed."""
    if path.exists() and path.read_text() == NOVA_POLICY:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(NOVA_POLICY)
    tmp.replace(path)
    return True


def write_all(layout: Layout, secrets: dict) -> None:
    """(Re)write every config file; cheap, so it runs on every ``up``.

    Long by nature: one block per service's config file, in the order the services start; split
    up, the options that must agree between services (URLs, passwords) would be far apart.
    """
    etc, data = layout.etc, layout.data
    common = {"transport_url": transport_url(secrets), "debug": "false", "use_stderr": "true"}
    lock = {"lock_path": str(data / "lock")}
    noop = {"driver": "noop"}

    _write(etc / "keystone/keystone.conf", {
        "DEFAULT": {"debug": "false", "use_stderr": "true"},
        "database": {"connection": db_url(secrets, "keystone")},
        "token": {"provider": "fernet"},
        # bcrypt's minimum cost for passwords set from now on: a token request checks the
        # password, and at the default 12 rounds that alone took ~220 ms of every ivc run here
        # (a throwaway cloud on loopback; real clouds keep their own setting)
        "identity": {"password_hash_rounds": "4"},
        # an in-process cache, as every real keystone has one (memcached there): without it
        # each service's first check of a new token costs 100-350 ms here, serialised
        "cache": {"enabled": "true", "backend": "oslo_cache.dict", "expiration_time": "600"},
        "fernet_tokens": {"key_repository": str(etc / "keystone/fernet-keys")},
        "credential": {"key_repository": str(etc / "keystone/credential-keys")},
        "oslo_messaging_notifications": noop,
    })

    _write(etc / "placement/placement.conf", {
        "DEFAULT": {"debug": "false", "use_stderr": "true"},
        "placement_database": {"connection": db_url(secrets, "placement")},
        "api": {"auth_strategy": "keystone"},
        "keystone_authtoken": _authtoken(secrets, "placement"),
    })

    _write(etc / "glance/glance-api.conf", {
        "DEFAULT": {"debug": "false", "use_stderr": "true", "enabled_backends": "file:file",
                    "workers": "1"},
        "database": {"connection": db_url(secrets, "glance")},
        "glance_store": {"default_backend": "file"},
        "file": {"filesystem_store_datadir": str(data / "glance/images")},
        "os_glance_staging_store": {"filesystem_store_datadir": str(data / "glance/staging")},
        "os_glance_tasks_store": {"filesystem_store_datadir": str(data / "glance/tasks")},
        "keystone_authtoken": _authtoken(secrets, "glance"),
        "paste_deploy": {"flavor": "keystone"},
        "oslo_concurrency": lock,
        "oslo_messaging_notifications": noop,
    })

    _write(etc / "nova/nova.conf", {
        "DEFAULT": {**common, "compute_driver": "ivc_fake.FakeDriver", "host": "ivc-compute-1",
                    "my_ip": HOST, "state_path": str(data / "nova"),
                    "instances_path": str(data / "nova/instances"),
                    "vif_plugging_is_fatal": "false", "vif_plugging_timeout": "0",
                    "osapi_compute_workers": "1", "metadata_workers": "1",
                    "metadata_listen": HOST, "metadata_listen_port": str(PORTS["nova-metadata"]),
                    "update_resources_interval": "20", "heal_instance_info_cache_interval": "0"},
        "api": {"auth_strategy": "keystone"},
        "wsgi": {"api_paste_config": str(etc / "nova/api-paste.ini")},
        "api_database": {"connection": db_url(secrets, "nova_api")},
        "database": {"connection": db_url(secrets, "nova")},
        "keystone_authtoken": _authtoken(secrets, "nova"),
        "service_user": {"send_service_user_token": "true", **_auth(secrets, "nova")},
        "placement": _auth(secrets, "nova"),
        # Nova's metadata API behind the devcloud's metadata proxy (netagent), which signs the
        # instance id as Neutron's proxy does
        "neutron": {**_auth(secrets, "nova"), "service_metadata_proxy": "true",
                    "metadata_proxy_shared_secret": metadata_secret(secrets)},
        "cinder": {"os_region_name": REGION, **_auth(secrets, "nova")},
        "glance": {"region_name": REGION},
        "scheduler": {"discover_hosts_in_cells_interval": "5", "workers": "1"},
        "conductor": {"workers": "1"},
        "oslo_concurrency": lock,
        "oslo_messaging_notifications": noop,
        "notifications": {"notification_format": "unversioned"},
        "vnc": {"enabled": "false"},
        "spice": {"enabled": "false"},
    })

    _write(etc / "neutron/neutron.conf", {
        "DEFAULT": {**common, "core_plugin": "ml2", "service_plugins": "router",
                    "auth_strategy": "keystone", "state_path": str(data / "neutron"),
                    "api_workers": "1", "rpc_workers": "1", "rpc_state_report_workers": "0",
                    "notify_nova_on_port_status_changes": "true",
                    "notify_nova_on_port_data_changes": "true",
                    "dhcp_agent_notification": "false",
                    "api_paste_config": str(etc / "neutron/api-paste.ini")},
        "database": {"connection": db_url(secrets, "neutron")},
        "keystone_authtoken": _authtoken(secrets, "neutron"),
        "nova": _auth(secrets, "neutron"),
        "oslo_concurrency": lock,
        "oslo_messaging_notifications": noop,
    })
    _write(etc / "neutron/plugins/ml2/ml2_conf.ini", {
        "ml2": {"type_drivers": "flat,vlan,vxlan", "tenant_network_types": "vxlan",
                "mechanism_drivers": "ivc_fake", "extension_drivers": "port_security"},
        "ml2_type_flat": {"flat_networks": "public"},
        "ml2_type_vxlan": {"vni_ranges": "1:1000"},
    })

    _write(etc / "cinder/cinder.conf", {
        "DEFAULT": {**common, "auth_strategy": "keystone", "state_path": str(data / "cinder"),
                    "my_ip": HOST, "host": "ivc-volume-1", "enabled_backends": "fake",
                    "osapi_volume_workers": "1",
                    "resource_query_filters_file": str(etc / "cinder/resource_filters.json"),
                    "api_paste_config": str(etc / "cinder/api-paste.ini")},
        "database": {"connection": db_url(secrets, "cinder")},
        "keystone_authtoken": _authtoken(secrets, "cinder"),
        "nova": _auth(secrets, "cinder"),
        "fake": {"volume_driver": "ivc_devcloud_plugin.fake_volume.FakeVolumeDriver",
                 "volume_backend_name": "fake"},
        "oslo_concurrency": lock,
        "oslo_messaging_notifications": noop,
    })

    write_nova_policy(etc / "nova/policy.yaml")

    # The paste files ship inside the wheels, under <venv>/etc/<service>/.
    shipped = layout.venv / "etc"
    for service, name in (("nova", "api-paste.ini"), ("neutron", "api-paste.ini"),
                          ("cinder", "api-paste.ini"), ("cinder", "resource_filters.json"),
                          ("glance", "glance-api-paste.ini")):
        shutil.copyfile(shipped / service / name, etc / service / name)
    for sub in ("glance/images", "glance/staging", "glance/tasks", "nova/instances", "neutron",
                "cinder", "lock"):
        (data / sub).mkdir(parents=True, exist_ok=True)
