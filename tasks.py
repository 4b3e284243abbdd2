"""The Invoke namespace of ivc. It only assembles collections: the tasks live in ivc_tasks.tasks."""

from invoke import Collection

from ivc_tasks.tasks import devcloud

ns = Collection()
ns.add_collection(Collection.from_module(devcloud))
