"""ivc: infrastructure via code. A plain-Python library (no Invoke here) plus thin task wrappers
in ivc_tasks.tasks."""
