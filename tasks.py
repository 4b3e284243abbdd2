"""The Invoke namespace of ivc. It only assembles collections: the tasks live in ivc_tasks.tasks
(``ivc_tasks.cli.namespace`` assembles them, for this file and for the ``ivc`` console script)."""

from ivc_tasks.cli import exit_2_on_usage_errors, namespace

ns = namespace()
# `invoke <task> --unknown-flag` exits 2 (a usage error), as `ivc` does; see ivc_tasks.cli
exit_2_on_usage_errors()
