"""The model's processes give way to every other process on the machine (model/cpu_priority.py).

Real processes and the kernel's own record of each thread's class: the
analysis process and the model worker in SCHED_IDLE, threads that mlx starts
during a job included; the web processes that serve them in the normal class.
A process cannot leave SCHED_IDLE without privileges, so the direct case runs
in an interpreter of its own.
"""
import json
import os
import subprocess
import sys
import time
from typing import Dict

import pytest
import requests

from tests.support.cluster import ClusterApi

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux's SCHED_IDLE scheduling class")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 90 segments of about 0.8 s each on the tiny model (tests/test_cluster_workers.py): still running when looked at.
LONG_JOB = {"segment_duration": "1", "max_tokens": "1024"}


def thread_classes(pid: int) -> Dict[int, int]:
    """Each thread of `pid` and its scheduling policy, now."""
    found = {}
    for name in os.listdir(f"/proc/{pid}/task"):
        try:
            found[int(name)] = os.sched_getscheduler(int(name))
        except ProcessLookupError:
            pass  # ended meanwhile
    return found


_SCRIPT = """
import json, os, threading
from video_analysis.model.cpu_priority import yield_cpu_to_other_work
release = threading.Event()
def wait():
    release.wait()
before = [threading.Thread(target=wait) for _ in range(3)]
for thread in before:
    thread.start()
took = yield_cpu_to_other_work()
later = []
def start_one():  # a thread started by a thread that was there before the call
    thread = threading.Thread(target=wait)
    thread.start()
    later.append(thread.native_id)
    wait()
nested = threading.Thread(target=start_one)
nested.start()
while not later:
    pass
classes = {name: os.sched_getscheduler(int(name)) for name in os.listdir("/proc/self/task")}
release.set()
print(json.dumps({"took": took, "classes": classes, "threads": len(classes)}))
"""


@pytest.mark.parametrize("switch, wanted", [("1", os.SCHED_IDLE if hasattr(os, "SCHED_IDLE") else None),
                                            ("0", os.SCHED_OTHER)])
def test_every_thread_and_those_started_after_take_the_class(switch, wanted):
    run = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=ROOT, MODEL_YIELDS_CPU=switch))
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["took"] is (switch == "1")
    assert seen["threads"] >= 6  # main, three from before, the nested one and its child
    assert set(seen["classes"].values()) == {wanted}, seen["classes"]


def _analysis_pid(service) -> int:
    found = [pid for pid in service.descendants() if b"spawn_main" in _command_line(pid)]
    assert len(found) == 1, found
    return found[0]


def _command_line(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _wait_running(base: str, session_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        body = requests.get(f"{base}/api/v1/video/status/{session_id}", timeout=10).json()
        if body["status"] == "processing" and body["segmentsDone"] >= 1:
            return
        assert body["status"] in ("pending", "processing") and time.monotonic() < deadline, body
        time.sleep(0.1)


def test_embedded_the_analysis_process_yields_and_the_web_process_does_not(start_service, videos):
    service = start_service(env={"JOB_WORKERS": "1"})
    with open(videos["long"], "rb") as video:
        answer = requests.post(f"{service.base}/api/v1/video/upload", files={"video": video}, data=LONG_JOB,
                               timeout=60)
    assert answer.status_code == 202, answer.text
    session_id = answer.json()["sessionId"]
    _wait_running(service.base, session_id)  # mlx's and OpenBLAS's threads are at work now

    model = thread_classes(_analysis_pid(service))
    web = thread_classes(service.worker_pid())
    requests.post(f"{service.base}/api/v1/video/cancel/{session_id}", timeout=30)
    assert len(model) > 3 and set(model.values()) == {os.SCHED_IDLE}, model
    assert set(web.values()) == {os.SCHED_OTHER}, web


def test_cluster_the_model_worker_yields_unless_told_not_to(cluster, videos):
    api_process = cluster.start_api()
    yielding = cluster.add_worker()
    api = ClusterApi(cluster)
    session_id = api.start(videos["long"], **LONG_JOB)
    api.wait(session_id, lambda body: body["segmentsDone"] >= 1)
    model = thread_classes(yielding.process.pid)
    web = {pid: thread_classes(pid) for pid in api_process.descendants() if b"gunicorn" in _command_line(pid)}
    assert len(model) > 3 and set(model.values()) == {os.SCHED_IDLE}, model
    assert web and all(set(classes.values()) == {os.SCHED_OTHER} for classes in web.values()), web
    api.cancel(session_id)
    api.wait_ended(session_id)

    normal = cluster.add_worker(MODEL_YIELDS_CPU="0")
    yielding.stop()
    session_id = api.start(videos["long"], **LONG_JOB)
    api.wait(session_id, lambda body: body["segmentsDone"] >= 1)
    assert api.status(session_id)["worker"] == normal.name
    classes = thread_classes(normal.process.pid)
    assert set(classes.values()) == {os.SCHED_OTHER}, classes
    api.cancel(session_id)
    assert api.wait_ended(session_id)["status"] == "cancelled"
