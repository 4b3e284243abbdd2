"""An ML2 mechanism driver that binds every port at once (vif_type ovs, status ACTIVE).

The local cloud has no Open vSwitch and no agents; Nova's fake virt driver plugs nothing. This
driver stands in for the agent-based drivers so that ports bind on any host and servers go ACTIVE.
"""

from neutron_lib import constants
from neutron_lib.api.definitions import portbindings
from neutron_lib.plugins.ml2 import api


class AlwaysBindMechanismDriver(api.MechanismDriver):
    """Bind each port to the first segment offered."""

    def initialize(self):
        pass

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            context.set_binding(
                segment[api.ID],
                portbindings.VIF_TYPE_OVS,
                {portbindings.CAP_PORT_FILTER: True},
                status=constants.PORT_STATUS_ACTIVE,
            )
            return
