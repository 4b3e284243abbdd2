"""The Invoke namespace of ivc. It only assembles collections: the tasks live in ivc_tasks.tasks."""

from invoke import Collection

from ivc_tasks.tasks import demo, devcloud, rotate, steps

ns = Collection()
for step in (steps.ensure_secgroups, steps.create_instance, steps.attach_volume, steps.deploy):
    ns.add_task(step)
for lifecycle in (rotate.rotate_instance, rotate.status, rotate.destroy):
    ns.add_task(lifecycle)
ns.add_task(demo.demo)
ns.add_collection(Collection.from_module(devcloud))
