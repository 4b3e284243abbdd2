"""Serve an OpenStack WSGI module under gunicorn: ``ivc_devcloud_plugin.wsgi:application``.

Several services' WSGI modules parse ``sys.argv`` with oslo.config when imported, and gunicorn's
own arguments are there. This shim puts only the service's arguments there (IVC_WSGI_ARGS, e.g.
cinder's ``--config-file``), then imports IVC_WSGI_MODULE and exposes its ``application``.
"""

import importlib
import os
import sys

sys.argv = [sys.argv[0], *os.environ.get("IVC_WSGI_ARGS", "").split()]
application = importlib.import_module(os.environ["IVC_WSGI_MODULE"]).application
