"""Operations on one kind of cloud thing each: find or learn it is gone (resolve), servers and
their metadata (servers), waits, volume attachments, floating IPs, ports, the shared poller and the
per-server lock. Plain Python; imports nothing of ivc_tasks.steps or ivc_tasks.tasks."""
