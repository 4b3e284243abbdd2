"""Report floating IP statuses as an L3 agent would: ACTIVE when associated, DOWN otherwise.

Without an L3 agent a floating IP stays DOWN forever. Once a second this process reads the
floating IPs from Neutron's database and, for any whose status is wrong, calls Neutron's own L3
RPC method ``update_floatingip_statuses`` (topic q-l3-plugin, version 1.1), as the agent does.

Usage: ivc-devcloud-fip-status --config-file neutron.conf
"""

import sys
import time

import oslo_messaging
import sqlalchemy as sa
from neutron.common import config as common_config
from neutron_lib import context as n_context
from neutron_lib import rpc as n_rpc
from oslo_config import cfg
from oslo_db import options as db_options
from oslo_db.sqlalchemy import engines

QUERY = sa.text(
    "SELECT id, router_id, fixed_port_id, status FROM floatingips")


def main():
    conf = cfg.CONF
    # Neutron's own option set and RPC defaults (its exchange is "neutron", not "openstack").
    common_config.register_common_config_options()
    db_options.set_defaults(conf)
    common_config.init(sys.argv[1:])
    client = n_rpc.get_client(
        oslo_messaging.Target(topic="q-l3-plugin", version="1.1"))
    engine = engines.create_engine(conf.database.connection)
    ctx = n_context.get_admin_context()
    print("fip-status: reporting floating IP statuses every second", flush=True)
    while True:
        try:
            with engine.connect() as db:
                rows = db.execute(QUERY).fetchall()
            wrong = {}
            for fip_id, router_id, port_id, status in rows:
                want = "ACTIVE" if port_id else "DOWN"
                if status != want and router_id:
                    wrong.setdefault(router_id, {})[fip_id] = want
                elif status != want:
                    # Disassociated: no router any more. Any router id will do for the call.
                    wrong.setdefault(None, {})[fip_id] = want
            for router_id, statuses in wrong.items():
                client.prepare().call(ctx, "update_floatingip_statuses",
                                      router_id=router_id, fip_statuses=statuses)
                print(f"fip-status: {statuses}", flush=True)
        except Exception as exc:  # noqa: BLE001 (keep reporting; the log says what went wrong)
            print(f"fip-status: {type(exc).__name__}: {exc}", flush=True)
            time.sleep(4)
        time.sleep(1)


if __name__ == "__main__":
    main()
