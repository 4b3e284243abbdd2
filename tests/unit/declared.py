"""Declaration texts the unit tests' worlds share: a test module composes its ``SPEC`` (the
constant conftest's ``spec_of``, ``spec`` and ``task_env`` read) from them, adding its own
lines, rather than copying them.

- ``DEFAULTS``: the ``[defaults]`` the fake cloud (fakecloud.py) can serve: its image, flavor
  and keypair, and conftest's template ``t.j2``.
- ``WEB1``: server ``web1`` on ``private`` with volumes ``web1-data`` and ``web1-logs``
  (``VOLUMES`` for conftest's ``conn``) and a floating IP; the lines a module adds after it
  belong to ``[servers.web1]`` until the next table.
"""

DEFAULTS = """
[defaults]
image = "ivc-tiny"
flavor = "m1.tiny"
keypair = "ivc-demo"
userdata = "t.j2"
"""

WEB1 = """
[servers.web1]
networks = ["private"]
volumes = ["web1-data", "web1-logs"]
floating_ip = true
"""
