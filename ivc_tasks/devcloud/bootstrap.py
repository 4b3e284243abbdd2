"""Install the cloud (Debian packages, the virtualenv) and prepare its databases and queue.

Each function is idempotent and says what it did through the ``say`` callback.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from .configs import db_url
from .layout import (
    CLOUD_REQUIREMENTS,
    DATABASES,
    DEBIAN_PACKAGES,
    HOST,
    META_DATABASE,
    PLUGIN_DIR,
    Layout,
)

Say = Callable[[str], None]


class DevcloudError(Exception):
    """The local cloud could not be installed, started or stopped; the message says why."""


def shown(argv: list[str]) -> str:
    """The command line as it may be logged: passwords masked."""
    words = []
    for i, word in enumerate(argv):
        if i and argv[i - 1] in ("--bootstrap-password",) or word.count(":") and "@" in word:
            word = re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", word) if "@" in word else "***"
        words.append(word)
    return " ".join(words)


def run(argv: list[str], *, log: Path | None = None, env: dict | None = None,
        input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command; on failure raise DevcloudError with the command and its last output."""
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)
    if log is not None:
        with open(log, "a") as handle:
            handle.write(f"$ {shown(argv)}\n{proc.stdout}{proc.stderr}")
    if check and proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip().splitlines()[-12:]
        raise DevcloudError(f"`{shown(argv[:4])}` failed (exit {proc.returncode}):\n  "
                            + "\n  ".join(out))
    return proc


def ensure_debian_packages(say: Say) -> None:
    """apt-get install MariaDB, RabbitMQ, debootstrap (the guests' root) and, as root, iptables
    (the guests' network) and the ssh client (into the guests) when they are missing."""
    if shutil.which("mariadbd") and shutil.which("rabbitmq-server") and shutil.which("epmd") \
            and (shutil.which("debootstrap") or os.path.exists("/usr/sbin/debootstrap")) \
            and ((shutil.which("iptables-restore") and shutil.which("ssh"))
                 or os.geteuid() != 0):  # the guests' network, ssh into them
        return
    if os.geteuid() != 0:
        raise DevcloudError("mariadb-server, rabbitmq-server or debootstrap is missing; install: "
                            f"sudo apt-get install -y {' '.join(DEBIAN_PACKAGES)}")
    say(f"installing Debian packages: {' '.join(DEBIAN_PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *DEBIAN_PACKAGES], env=env)


def _install_fingerprint() -> str:
    digest = hashlib.sha256("\n".join(CLOUD_REQUIREMENTS).encode())
    digest.update(f"{sys.version_info[:2]}".encode())
    digest.update((PLUGIN_DIR / "pyproject.toml").read_bytes())
    return digest.hexdigest()[:16]


def ensure_venv(layout: Layout, say: Say) -> bool:
    """Create the cloud's virtualenv and install the services; return True if it installed."""
    stamp = layout.stamp("install")
    fingerprint = _install_fingerprint()
    if stamp.exists() and stamp.read_text() == fingerprint and Path(layout.bin("nova-api")).parent.exists():
        return False
    log = layout.log("install")
    if not (layout.venv / "bin" / "python").exists():
        say(f"creating the cloud's virtualenv in {layout.venv}")
        run([sys.executable, "-m", "venv", str(layout.venv)], log=log)
    say("installing the OpenStack services from PyPI (about a minute; log: "
        f"{log.relative_to(layout.root.parent) if log.is_relative_to(layout.root.parent) else log})")
    pip = [layout.bin("python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run([*pip, *CLOUD_REQUIREMENTS], log=log)
    run([*pip, "--no-deps", "-e", str(PLUGIN_DIR)], log=log)
    stamp.write_text(fingerprint)
    return True


def mysql(sql: str) -> str:
    """Run SQL as MariaDB's root through its unix socket (root's default on Debian)."""
    return run(["mariadb", "-u", "root", "--batch", "--skip-column-names"], input=sql).stdout


def prepare_mariadb_datadir(say: Say) -> None:
    Path("/run/mysqld").mkdir(exist_ok=True)
    shutil.chown("/run/mysqld", "mysql", "mysql")
    if not Path("/var/lib/mysql/mysql").exists():
        say("initialising MariaDB's data folder")
        run(["mariadb-install-db", "--user=mysql", "--datadir=/var/lib/mysql"])


def db_owner(layout: Layout) -> str | None:
    """Return the stamp recorded in MariaDB by the devcloud that built the databases, if any."""
    out = mysql(f"SELECT CONCAT(stamp, ' ', cache_dir) FROM {META_DATABASE}.owner WHERE id=1"
                if META_DATABASE in mysql("SHOW DATABASES").split() else "SELECT NULL")
    value = out.strip()
    return None if value in ("", "NULL") else value


def rebuild_databases(layout: Layout, secrets: dict, stamp: str, say: Say) -> None:
    """Drop and create every service database, and record this cache folder as their owner."""
    pw = secrets["database"]
    statements = [f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name} CHARACTER SET utf8;"
                  for name in [*DATABASES, META_DATABASE]]
    statements += [
        f"CREATE USER IF NOT EXISTS 'devcloud'@'{HOST}' IDENTIFIED BY '{pw}';",
        f"ALTER USER 'devcloud'@'{HOST}' IDENTIFIED BY '{pw}';",
        f"GRANT ALL PRIVILEGES ON *.* TO 'devcloud'@'{HOST}';",
        f"CREATE TABLE {META_DATABASE}.owner (id INT PRIMARY KEY, stamp VARCHAR(64), "
        "cache_dir VARCHAR(1024));",
        "FLUSH PRIVILEGES;",
    ]
    mysql("\n".join(statements))
    say(f"created databases: {', '.join(DATABASES)}")


def record_db_owner(layout: Layout, stamp: str) -> None:
    mysql(f"REPLACE INTO {META_DATABASE}.owner VALUES (1, '{stamp}', '{layout.root}');")
    layout.stamp("databases").write_text(stamp)


RABBIT_ENV = {"RABBITMQ_NODENAME": "rabbit@localhost", "ERL_EPMD_ADDRESS": HOST}


def rabbitmqctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["rabbitmqctl", *args], env={**os.environ, **RABBIT_ENV}, check=check)


def rebuild_queue(secrets: dict, say: Say) -> None:
    """A fresh vhost (no stale messages) and the services' user, with its current password."""
    rabbitmqctl("delete_vhost", "devcloud", check=False)
    rabbitmqctl("add_vhost", "devcloud")
    if rabbitmqctl("add_user", "devcloud", secrets["rabbit"], check=False).returncode != 0:
        rabbitmqctl("change_password", "devcloud", secrets["rabbit"])
    rabbitmqctl("set_permissions", "-p", "devcloud", "devcloud", ".*", ".*", ".*")
    say("RabbitMQ: vhost devcloud and its user ready")


def sync_databases(layout: Layout, secrets: dict, say: Say) -> None:
    """Run every service's schema sync (in parallel chains) and keystone's key setup."""
    etc, log = layout.etc, layout.log("db-sync")
    b = layout.bin
    kc = ["--config-file", str(etc / "keystone/keystone.conf")]
    nc = ["--config-file", str(etc / "nova/nova.conf")]
    neutron = ["--config-file", str(etc / "neutron/neutron.conf"),
               "--config-file", str(etc / "neutron/plugins/ml2/ml2_conf.ini")]
    for sub in ("fernet-keys", "credential-keys"):
        (etc / "keystone" / sub).mkdir(mode=0o700, exist_ok=True)
    chains = {
        "keystone": [[b("keystone-manage"), *kc, "db_sync"],
                     [b("keystone-manage"), *kc, "fernet_setup", "--keystone-user", "root",
                      "--keystone-group", "root"],
                     [b("keystone-manage"), *kc, "credential_setup", "--keystone-user", "root",
                      "--keystone-group", "root"],
                     _keystone_bootstrap(layout, secrets)],
        "nova": [[b("nova-manage"), *nc, "api_db", "sync"],
                 [b("nova-manage"), *nc, "cell_v2", "map_cell0", "--database_connection",
                  db_url(secrets, "nova_cell0")],
                 [b("nova-manage"), *nc, "cell_v2", "create_cell", "--name", "cell1"],
                 [b("nova-manage"), *nc, "db", "sync"]],
        "neutron": [[b("neutron-db-manage"), *neutron, "upgrade", "heads"]],
        "placement": [[b("placement-manage"), "--config-file",
                       str(etc / "placement/placement.conf"), "db", "sync"]],
        "glance": [[b("glance-manage"), "--config-file", str(etc / "glance/glance-api.conf"),
                    "db_sync"]],
        "cinder": [[b("cinder-manage"), "--config-file", str(etc / "cinder/cinder.conf"),
                    "db", "sync"]],
    }

    def chain(name: str) -> str:
        for argv in chains[name]:
            run(argv, log=log)
        return name

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(chain, name) for name in
                   ("nova", "neutron", "keystone", "cinder", "glance", "placement")]
        for future in as_completed(futures):
            say(f"database schema ready: {future.result()} ({time.monotonic() - t0:.1f}s)")


def _keystone_bootstrap(layout: Layout, secrets: dict) -> list[str]:
    url = f"http://{HOST}:5000/v3/"
    return [layout.bin("keystone-manage"), "--config-file", str(layout.etc / "keystone/keystone.conf"),
         "bootstrap", "--bootstrap-password", secrets["admin"], "--bootstrap-username", "admin",
         "--bootstrap-project-name", "admin", "--bootstrap-role-name", "admin",
         "--bootstrap-service-name", "keystone", "--bootstrap-region-id", "RegionOne",
         "--bootstrap-admin-url", url, "--bootstrap-internal-url", url,
         "--bootstrap-public-url", url]


def ensure_compute_id(layout: Layout) -> None:
    """Pre-provision nova-compute's node identity file (``<state_path>/compute_id``).

    nova-compute refuses to start when its service record exists but the file does not (as after
    a first start that was stopped early); the file is filled from the database's compute node
    if there is one, with a new UUID otherwise.
    """
    path = layout.data / "nova" / "compute_id"
    if path.exists():
        return
    out = mysql("SELECT uuid FROM nova.compute_nodes WHERE host='ivc-compute-1' AND deleted=0 "
                "LIMIT 1").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out or str(uuid.uuid4()))
