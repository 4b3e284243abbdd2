"""The steps users run (ensure-secgroups, ensure-keypairs, create-instance, attach-volume, deploy,
status, destroy, rotate/): each plans, describes and applies by composing ivc_tasks.resources.
Plain Python; imports nothing of ivc_tasks.tasks (the Invoke wrappers) nor of invoke."""
