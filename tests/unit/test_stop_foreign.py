"""``up`` stops processes of another cloud, never one its own cache folder recorded."""

import subprocess

from ivc_tasks.devcloud import lifecycle, procs
from ivc_tasks.devcloud.layout import Layout


def test_a_recorded_service_unknown_to_this_checkout_is_not_foreign(tmp_path, monkeypatch):
    layout = Layout(tmp_path)
    layout.make_dirs()
    known = subprocess.Popen(["sleep", "30"], start_new_session=True)
    stray = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        # a service of a newer checkout (not in this one's list), recorded in its PID file
        (layout.run / "some-newer-service.pid").write_text(
            f"{known.pid} {procs.start_time(known.pid)}\n")
        monkeypatch.setattr(procs, "marked_processes", lambda: {
            known.pid: (str(layout.root), "some-newer-service"),
            stray.pid: (str(layout.root), "unrecorded")})
        stopped = []
        monkeypatch.setattr(procs, "stop", lambda *p: stopped.extend(x.pid for x in p))
        said = []
        assert lifecycle._stop_foreign(layout, said.append) == [f"unrecorded@{layout.root}"]
        assert stopped == [stray.pid]
    finally:
        for proc in (known, stray):
            proc.kill()
            proc.wait()
