"""The processes that make up the local cloud: how each is started and how it is probed."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from .configs import PORTS
from .layout import HOST, MARK, PLUGIN_DIR, Layout


@dataclass(frozen=True)
class Service:
    name: str
    role: str                       # "infra" (machine-wide, shared) | "api" | "worker"
    argv: list[str]
    port: int | None = None
    probe: str | None = None        # URL answered by an API; infra is probed by TCP
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    user: str | None = None         # run as this system user (RabbitMQ refuses root)


def _gunicorn(layout: Layout, name: str, threads: int = 4) -> list[str]:
    return [layout.bin("gunicorn"), "--bind", f"{HOST}:{PORTS[name]}", "--workers", "1",
            "--threads", str(threads), "--timeout", "300", "--graceful-timeout", "5",
            "--control-socket", str(layout.run / f"{name}.ctl"),
            "--name", f"devcloud-{name}", "--error-logfile", "-",
            "ivc_devcloud_plugin.wsgi:application"]


def _wsgi(module: str, args: str = "", **env: str) -> dict[str, str]:
    return {"IVC_WSGI_MODULE": module, "IVC_WSGI_ARGS": args, **env}


def all_services(layout: Layout) -> list[Service]:
    """Every process, in start order (infra first, then keystone, then the rest)."""
    etc = layout.etc
    nova = ["--config-file", str(etc / "nova/nova.conf")]
    neutron = ["--config-file", str(etc / "neutron/neutron.conf"),
               "--config-file", str(etc / "neutron/plugins/ml2/ml2_conf.ini")]
    cinder = ["--config-file", str(etc / "cinder/cinder.conf")]
    rabbit_env = {
        "RABBITMQ_NODE_IP_ADDRESS": HOST, "RABBITMQ_NODENAME": "rabbit@localhost",
        "RABBITMQ_DIST_PORT": "25672", "ERL_EPMD_ADDRESS": HOST,
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "HOME": "/var/lib/rabbitmq",
    }
    url = f"http://{HOST}"
    return [
        Service("mariadb", "infra", [shutil.which("mariadbd") or "/usr/sbin/mariadbd",
                "--user=mysql", f"--bind-address={HOST}", "--port=3306",
                "--max-connections=1000", "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci", "--skip-name-resolve",
                "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
                "--innodb-buffer-pool-size=64M", "--skip-log-bin"], port=3306),
        Service("epmd", "infra", [shutil.which("epmd") or "/usr/bin/epmd", "-address", HOST,
                "-port", "4369"], port=4369, env={"ERL_EPMD_ADDRESS": HOST}),
        # The real script, not Debian's wrapper: the wrapper goes through `su`, whose child
        # leaves the process group, so that stopping the group would miss it.
        Service("rabbitmq", "infra", ["/usr/lib/rabbitmq/bin/rabbitmq-server"],
                port=5672, env=rabbit_env, cwd="/var/lib/rabbitmq", user="rabbitmq"),
        Service("keystone", "api", _gunicorn(layout, "keystone"),
                port=PORTS["keystone"], probe=f"{url}:{PORTS['keystone']}/v3",
                env=_wsgi("keystone.wsgi.api", OS_KEYSTONE_CONFIG_DIR=str(etc / "keystone"),
                         OS_KEYSTONE_CONFIG_FILES="keystone.conf")),
        Service("placement", "api", _gunicorn(layout, "placement"),
                port=PORTS["placement"], probe=f"{url}:{PORTS['placement']}/",
                env=_wsgi("placement.wsgi.api", OS_PLACEMENT_CONFIG_DIR=str(etc / "placement"))),
        Service("glance", "api", _gunicorn(layout, "glance"),
                port=PORTS["glance"], probe=f"{url}:{PORTS['glance']}/versions",
                env=_wsgi("glance.wsgi.api", OS_GLANCE_CONFIG_DIR=str(etc / "glance"))),
        Service("neutron-api", "api", _gunicorn(layout, "neutron-api"),
                port=PORTS["neutron-api"], probe=f"{url}:{PORTS['neutron-api']}/",
                env=_wsgi("neutron.wsgi.api", OS_NEUTRON_CONFIG_DIR=str(etc / "neutron"))),
        Service("neutron-rpc", "worker", [layout.bin("neutron-rpc-server"), *neutron]),
        Service("neutron-periodic", "worker", [layout.bin("neutron-periodic-workers"), *neutron]),
        Service("fip-status", "worker", [layout.bin("ivc-devcloud-fip-status"), *neutron]),
        Service("nova-api", "api", _gunicorn(layout, "nova-api"),
                port=PORTS["nova-api"], probe=f"{url}:{PORTS['nova-api']}/",
                env=_wsgi("nova.wsgi.osapi_compute", OS_NOVA_CONFIG_DIR=str(etc / "nova"))),
        Service("nova-metadata", "api", _gunicorn(layout, "nova-metadata"),
                port=PORTS["nova-metadata"], probe=f"{url}:{PORTS['nova-metadata']}/",
                env=_wsgi("nova.wsgi.metadata", OS_NOVA_CONFIG_DIR=str(etc / "nova"))),
        Service("nova-conductor", "worker", [layout.bin("nova-conductor"), *nova]),
        Service("nova-scheduler", "worker", [layout.bin("nova-scheduler"), *nova]),
        Service("nova-compute", "worker", [layout.bin("python"), "-m",
                "ivc_devcloud_plugin.nova_compute", *nova]),
        Service("cinder-api", "api", _gunicorn(layout, "cinder-api"),
                port=PORTS["cinder-api"], probe=f"{url}:{PORTS['cinder-api']}/",
                env=_wsgi("cinder.wsgi.api", f"--config-file {etc / 'cinder/cinder.conf'}")),
        Service("cinder-scheduler", "worker", [layout.bin("cinder-scheduler"), *cinder]),
        Service("cinder-volume", "worker", [layout.bin("cinder-volume"), *cinder]),
        *_network_agent(layout),
    ]


ISOLATED_METADATA = "ext-net"     # seed.EXT_NET: the networks without a router given metadata


def _network_agent(layout: Layout) -> list[Service]:
    """The guests' network (plugin netagent.py): namespaces, veths, routes and iptables need
    root; without it there is no agent and servers have no network, as before."""
    if os.geteuid() != 0:
        return []
    etc = layout.etc
    # PYTHONPATH: this checkout's plugin, whatever checkout installed the venv's editable copy
    return [Service("netagent", "worker", [layout.bin("python"), "-m",
                    "ivc_devcloud_plugin.netagent", "--neutron-config",
                    str(etc / "neutron/neutron.conf"), "--nova-config", str(etc / "nova/nova.conf"),
                    # as OVHcloud's Ext-Net: its servers read the metadata service directly
                    "--isolated-metadata", ISOLATED_METADATA],
                    env={"PYTHONPATH": str(PLUGIN_DIR)})]


def process_env(layout: Layout, service: Service) -> dict[str, str]:
    """The environment a service runs with: marked with the cache folder, venv first on PATH,
    this checkout's plugin first on the import path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "VIRTUAL_ENV",
                                                                     "PYTHON"))}
    if service.role != "infra":
        env["PATH"] = f"{layout.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env["VIRTUAL_ENV"] = str(layout.venv)
        # the plugin of the checkout that starts the service, whichever one installed it
        env["PYTHONPATH"] = str(PLUGIN_DIR)
    env.update(service.env)
    env[MARK] = str(layout.root)
    env["IVC_DEVCLOUD_SERVICE"] = service.name
    return env
