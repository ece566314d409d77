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
from tests.support.processes import cpu_seconds
from tools.service_process import arguments_of
from tools.synthetic_video import write_video

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux's SCHED_IDLE scheduling class")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every frame of 1 s segments of a 640x360 25 fps video: decoding is a good part of the work (a quarter of it on
# the tiny model), and it runs on the job's thread, not the model's.
DECODING_JOB = {"segment_duration": "1", "frames_per_segment": "25"}


@pytest.fixture(scope="module")
def decoding_video(tmp_path_factory) -> str:
    return write_video(str(tmp_path_factory.mktemp("cpu-class") / "busy.mp4"), duration=60, fps=25, size=(640, 360))


def thread_classes(pid: int) -> Dict[int, int]:
    """Each thread of `pid` and its scheduling policy, now."""
    found = {}
    for name in os.listdir(f"/proc/{pid}/task"):
        try:
            found[int(name)] = os.sched_getscheduler(int(name))
        except ProcessLookupError:
            pass  # ended meanwhile
    return found


def cpu_by_class(pid: int, seconds: float = 3.0) -> Dict[str, float]:
    """CPU seconds `pid` used over `seconds`: in all, and in its threads of the normal class (those alive at the
    end; a thread that ended meanwhile counts in the total only)."""
    def threads() -> Dict[int, float]:
        found = {}
        for name in os.listdir(f"/proc/{pid}/task"):
            try:
                found[int(name)] = cpu_seconds(pid, int(name))
            except (OSError, IndexError):
                pass  # ended meanwhile
        return found

    before, total_before = threads(), cpu_seconds(pid)
    time.sleep(seconds)
    after, total_after = threads(), cpu_seconds(pid)
    classes = thread_classes(pid)
    normal = sum(used - before.get(tid, 0.0) for tid, used in after.items()
                 if classes.get(tid) == os.SCHED_OTHER)
    return {"total": total_after - total_before, "normal": normal}


# Threads from before the call stand for the pools mlx and OpenBLAS start on import; the main thread calls it,
# as the model processes do at their start. Then a SIGALRM whose handler raises (as RQ's second SIGTERM does)
# interrupts a caller waiting in call_as_compute.
_SCRIPT = """
import json, os, signal, threading, time
from video_analysis.model.cpu_priority import call_as_compute, compute_thread, yield_cpu_to_other_work
release = threading.Event()
seen = {}
def wait():
    release.wait()
def note(name):
    seen[name] = os.sched_getscheduler(0)
go_on = threading.Event()
children = []
def pool_thread_that_starts_one_later():
    go_on.wait()
    thread = threading.Thread(target=note, args=("started by a pool's thread",))
    thread.start()
    children.append(thread)
    wait()
pool = [threading.Thread(target=wait) for _ in range(3)] + [threading.Thread(target=pool_thread_that_starts_one_later)]
for thread in pool:
    thread.start()
took = yield_cpu_to_other_work()
go_on.set()
def computing():
    compute_thread()
    note("computing")
    child = threading.Thread(target=note, args=("started by a computing thread",))
    child.start()
    child.join()
later = [threading.Thread(target=computing), threading.Thread(target=note, args=("started by the main thread later",))]
for thread in later:
    thread.start()
for thread in later:
    thread.join()
while not children:
    time.sleep(0.01)
children[0].join()
in_call = call_as_compute(lambda: os.sched_getscheduler(0))
try:
    call_as_compute(lambda: 1 / 0)
    raised = False
except ZeroDivisionError:
    raised = True
class Interrupted(Exception):
    pass
def interrupt(signum, frame):
    raise Interrupted()
signal.signal(signal.SIGALRM, interrupt)
stop, ended = threading.Event(), threading.Event()
def long_work():
    stop.wait(30)
    time.sleep(0.2)  # winds down a little after being told
    ended.set()
signal.setitimer(signal.ITIMER_REAL, 0.3)
try:
    call_as_compute(long_work, on_interrupt=stop.set)
    interrupted = "not interrupted"
except Interrupted:
    interrupted = "ended first" if ended.is_set() else "still running"
pools = {str(t.native_id): os.sched_getscheduler(t.native_id) for t in pool}
release.set()
print(json.dumps({"took": took, "main": os.sched_getscheduler(0), "pool": pools, "seen": seen,
                  "call_as_compute": in_call, "raised": raised, "interrupted": interrupted}))
"""


@pytest.mark.parametrize("switch", ["1", "0"])
def test_a_model_process_puts_its_computing_threads_in_the_idle_class_and_keeps_the_others(switch):
    run = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=ROOT, MODEL_YIELDS_CPU=switch))
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    idle = os.SCHED_IDLE if switch == "1" else os.SCHED_OTHER
    assert got["took"] is (switch == "1")
    assert set(got["pool"].values()) == {idle} and len(got["pool"]) == 4
    assert got["seen"] == {"started by a pool's thread": idle, "computing": idle,
                           "started by a computing thread": idle, "started by the main thread later": os.SCHED_OTHER}
    assert got["main"] == os.SCHED_OTHER  # the caller: it answers, beats and hears signals
    assert got["call_as_compute"] == idle and got["raised"]  # its exception comes back to the caller
    # interrupted while it waits: the work is told to stop and has ended before the interruption goes on (without
    # yielding, the work runs in the caller, and the interruption cuts through it as it always did)
    assert got["interrupted"] == ("ended first" if switch == "1" else "still running")


def _analysis_pid(service) -> int:
    found = [pid for pid in service.descendants() if any("spawn_main" in word for word in arguments_of(pid))]
    assert len(found) == 1, found
    return found[0]


def _wait_running(base: str, session_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        body = requests.get(f"{base}/api/v1/video/status/{session_id}", timeout=10).json()
        if body["status"] == "processing" and body["segmentsDone"] >= 1:
            return
        assert body["status"] in ("pending", "processing") and time.monotonic() < deadline, body
        time.sleep(0.1)


def test_embedded_the_analysis_process_computes_in_the_idle_class_and_the_web_process_does_not(start_service,
                                                                                                   decoding_video):
    service = start_service(env={"JOB_WORKERS": "1"})
    with open(decoding_video, "rb") as video:
        answer = requests.post(f"{service.base}/api/v1/video/upload", files={"video": video}, data=DECODING_JOB,
                               timeout=60)
    assert answer.status_code == 202, answer.text
    session_id = answer.json()["sessionId"]
    _wait_running(service.base, session_id)  # the model, mlx's and OpenBLAS's threads at work now

    analysis = _analysis_pid(service)
    used = cpu_by_class(analysis)
    still = requests.get(f"{service.base}/api/v1/video/status/{session_id}", timeout=10).json()["status"]
    assert still == "processing"  # the job ran the whole time measured
    classes = thread_classes(analysis)
    web = {pid: thread_classes(pid) for pid in [service.process.pid, *service.descendants()] if pid != analysis}
    requests.post(f"{service.base}/api/v1/video/cancel/{session_id}", timeout=30)
    assert used["total"] > 0.2 and used["normal"] <= 0.1 * used["total"], used  # the work is in the idle class
    assert os.SCHED_IDLE in classes.values() and classes[analysis] == os.SCHED_OTHER, classes  # not its main thread
    # gunicorn, nginx, Python's resource tracker: none in the idle class
    assert web and all(set(threads.values()) == {os.SCHED_OTHER} for threads in web.values()), web


def _end(api: ClusterApi, session_id: str) -> None:
    """Cancel the job if it still runs (a quick machine may have finished it), and wait until it has ended."""
    requests.post(f"{api.base}/api/v1/video/cancel/{session_id}", timeout=30)
    assert api.wait_ended(session_id)["status"] in ("cancelled", "completed")


def test_cluster_the_model_worker_computes_in_the_idle_class_unless_told_not_to(cluster, decoding_video, redis_server):
    api_process = cluster.start_api()
    yielding = cluster.add_worker()
    api = ClusterApi(cluster)
    session_id = api.start(decoding_video, **DECODING_JOB)
    api.wait(session_id, lambda body: body["segmentsDone"] >= 1)
    used = cpu_by_class(yielding.process.pid)
    assert api.status(session_id)["status"] == "processing"  # the job ran the whole time measured
    classes = thread_classes(yielding.process.pid)
    others = {pid: thread_classes(pid) for pid in [api_process.process.pid, *api_process.descendants(),
                                                   redis_server.process.pid]}
    assert used["total"] > 0.2 and used["normal"] <= 0.1 * used["total"], used
    # its main thread (RQ's loop, SIGTERM) and the heartbeat and listener threads stay in the normal class
    assert os.SCHED_IDLE in classes.values() and classes[yielding.process.pid] == os.SCHED_OTHER, classes
    assert sum(1 for policy in classes.values() if policy == os.SCHED_OTHER) >= 3, classes
    assert all(set(threads.values()) == {os.SCHED_OTHER} for threads in others.values()), others
    _end(api, session_id)

    normal = cluster.add_worker(MODEL_YIELDS_CPU="0")
    yielding.stop()
    session_id = api.start(decoding_video, **DECODING_JOB)
    api.wait(session_id, lambda body: body["segmentsDone"] >= 1)
    assert api.status(session_id)["worker"] == normal.name
    classes = thread_classes(normal.process.pid)
    assert set(classes.values()) == {os.SCHED_OTHER}, classes
    _end(api, session_id)
