"""Where the local cloud keeps its install, configs, logs, PID files and data, and its secrets.

Everything lives under one cache folder (default ``<repo>/.devcloud``, git-ignored; the
``DEVCLOUD_DIR`` environment variable moves it). MariaDB and RabbitMQ are the machine's own
(Debian packages) and keep their data where Debian puts it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DIR = Path(__file__).resolve().parent / "plugin"

# The PyPI releases that make up the cloud (one virtualenv holds them all; no pin conflict).
CLOUD_REQUIREMENTS = [
    "keystone==30.0.0",
    "glance==33.0.0",
    "openstack-placement==16.0.0",
    "nova==34.0.0",
    "neutron==29.0.0",
    "cinder==29.0.0",
    "PyMySQL",
    "gunicorn",
    "python-openstackclient",
]
# debootstrap builds the guests' shared Debian root (guests.py); iptables: their network
# openssh-client: the tests (and a user) ssh into the guests with the known_hosts ivc writes
DEBIAN_PACKAGES = ["mariadb-server", "rabbitmq-server", "debootstrap", "iptables", "openssh-client"]

HOST = "127.0.0.1"
REGION = "RegionOne"
DATABASES = ["keystone", "glance", "placement", "nova_api", "nova", "nova_cell0", "neutron", "cinder"]
META_DATABASE = "ivc_devcloud"
CLOUD_NAME = "ivc-local"
ADMIN_CLOUD_NAME = "ivc-local-admin"
DEMO_PROJECT = "ivc"
DEMO_USER = "ivc"
# The second shape (OVH style): a project and user that see the shared external network ext-net.
OVH_CLOUD_NAME = "ivc-local-ovh"
OVH_PROJECT = "ivc-ovh"
OVH_USER = "ivc-ovh"
# The environment variable that marks every process a devcloud starts with its cache folder, so
# that the processes of a cloud started from another checkout can be recognised.
MARK = "IVC_DEVCLOUD_DIR"


@dataclass(frozen=True)
class Layout:
    """The cache folder and the paths inside it."""

    root: Path

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def logs(self) -> Path:
        return self.root / "log"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def clouds_yaml(self) -> Path:
        return self.root / "clouds.yaml"

    @property
    def keypair_file(self) -> Path:
        return self.root / "ivc-demo.key"

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def log(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def pidfile(self, service: str) -> Path:
        return self.run / f"{service}.pid"

    def stamp(self, name: str) -> Path:
        return self.state / name

    def make_dirs(self) -> None:
        for path in (self.etc, self.logs, self.run, self.data, self.state):
            path.mkdir(parents=True, exist_ok=True)
        # Services run in this folder; the marker lets another checkout's devcloud recognise them.
        (self.root / ".ivc-devcloud").write_text("ivc devcloud cache folder\n")


def default_layout() -> Layout:
    """Return the layout of this checkout's local cloud (``DEVCLOUD_DIR`` moves it)."""
    root = os.environ.get("DEVCLOUD_DIR") or str(REPO_ROOT / ".devcloud")
    return Layout(Path(root).resolve())


def load_secrets(layout: Layout) -> dict[str, str]:
    """Return the cloud's passwords, generating them on first use (file mode 0600)."""
    path = layout.root / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    names = ["admin", "demo", "service", "database", "rabbit"]
    values = {name: secrets.token_urlsafe(18) for name in names}
    layout.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(values, handle)
    return values


def plugin_module(name: str):
    """Load one of the plugin's stand-alone modules (``guest``, ``guest_mode``) by path."""
    spec = importlib.util.spec_from_file_location(
        f"ivc_devcloud_plugin_{name}", PLUGIN_DIR / "ivc_devcloud_plugin" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
