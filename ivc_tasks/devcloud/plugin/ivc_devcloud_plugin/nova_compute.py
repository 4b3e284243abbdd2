"""Run nova-compute with this plugin's fake driver registered as ``nova.virt.ivc_fake``.

Nova loads a compute driver only from inside the ``nova.virt`` package; this entry point makes
the module importable there, then runs nova-compute's own main (arguments as usual).
"""

import sys

import nova.virt
from nova.cmd import compute  # first: nova.cmd sets up the process as nova-compute expects

from ivc_devcloud_plugin import fake_virt

sys.modules["nova.virt.ivc_fake"] = fake_virt
nova.virt.ivc_fake = fake_virt

if __name__ == "__main__":
    sys.exit(compute.main())
