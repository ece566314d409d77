"""Defects found by attacking a running server from outside (issue 14), each reproduced against real parts:
gunicorn in a subprocess, real sockets, real files, the real analysis child process.

- legacy requests that wait on their jobs must never starve the other routes (item 2);
- a cancelled or cleaned-up pending job frees its queue slot at once (item 4);
- SIGTERM answers every waiting legacy client, exits 0 in time and leaves no file (item 5);
- the hang-up check of legacy requests works past descriptor 1023 (item 7);
- the analysis runs in a child process: the web process does almost none of a job's work, and a child
  that dies fails its job with a sentence and is replaced (item 9).
"""
import os
import signal
import sys
import threading
import time

import pytest
import requests

from tests.support.api import data_dir_entries, stored_entries, upload, wait_for_status
from tests.support.http import get_json
from tests.support.processes import cpu_seconds
from tools.synthetic_video import write_video
from video_analysis.web.services import EXTENSION_KEY

LEGACY = "/analyze/highlights"


@pytest.fixture(scope="module")
def slow_video(tmp_path_factory):
    """240 one-second segments: far longer than any test here waits for."""
    return write_video(str(tmp_path_factory.mktemp("slow") / "slow.mp4"), duration=240, fps=2, size=(96, 72))


def _post_legacy(base: str, video: str, answers: list, timeout: float = 120.0) -> None:
    try:
        with open(video, "rb") as handle:
            response = requests.post(base + LEGACY, files={"video": handle}, data={"segment_duration": "1"},
                                     timeout=timeout)
        answers.append(response)
    except requests.RequestException as error:
        answers.append(error)


def _queue(base: str) -> dict:
    return get_json(base + "/health", timeout=5)[1]["queue"]


def _wait_for_queue(base: str, condition, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        queue = _queue(base)
        if condition(queue):
            return queue
        assert time.monotonic() < deadline, f"queue never got there: {queue}"
        time.sleep(0.05)


# -- item 2: legacy requests starve the async API ---------------------------------------------------
def test_waiting_legacy_requests_leave_every_other_route_answering(start_service, slow_video, videos):
    """6 request threads: at most 3 legacy requests wait; the other 5 of 8 get 503 + Retry-After at once,
    and health, upload, status, results, cancel and cleanup all answer while the 3 wait."""
    server = start_service(env={"HTTP_THREADS": "6"})
    answers: list = []
    clients = [threading.Thread(target=_post_legacy, args=(server.base, slow_video, answers)) for _ in range(8)]
    try:
        for client in clients:
            client.start()
        deadline = time.monotonic() + 30
        while len(answers) < 5:
            assert time.monotonic() < deadline, f"only {len(answers)} legacy requests were answered"
            time.sleep(0.05)
        time.sleep(0.5)
        assert len(answers) == 5, "more legacy requests were refused than the limit asks"
        for response in answers:
            assert response.status_code == 503, response
            assert response.headers["Content-Type"] == "application/problem+json"
            assert int(response.headers["Retry-After"]) > 0
            body = response.json()
            assert body["success"] is False and "asynchronous API" in body["error"]
        _wait_for_queue(server.base, lambda q: q["pending"] + q["processing"] == 3)

        # Every other route answers at once while the three wait (a generous 5 s per request).
        with open(videos["short"], "rb") as handle:
            uploaded = requests.post(server.base + "/api/v1/video/upload", files={"video": handle}, timeout=5)
        assert uploaded.status_code == 202
        session_id = uploaded.json()["sessionId"]
        api = server.base + "/api/v1/video"
        assert requests.get(f"{api}/status/{session_id}", timeout=5).json()["status"] == "pending"
        assert requests.get(f"{api}/results/{session_id}", timeout=5).status_code == 400
        assert requests.post(f"{api}/cancel/{session_id}", timeout=5).status_code == 200
        assert requests.delete(f"{api}/cleanup/{session_id}", timeout=5).status_code == 200
        assert requests.get(server.base + "/health", timeout=5).status_code == 200
    finally:
        server.stop()  # answers the three waiting clients
        for client in clients:
            client.join(30)


# -- item 4: cancelled pending jobs keep their slots ---------------------------------------------------
@pytest.mark.parametrize("how", ["cleanup", "cancel"])
def test_a_cancelled_or_cleaned_up_pending_job_frees_its_slot_at_once(make_app, slow_video, videos, how):
    app = make_app(MAX_QUEUED_JOBS=4, JOB_WORKERS=2)
    client = app.test_client()
    ids = [upload(client, slow_video, segment_duration="1").get_json()["sessionId"] for _ in range(4)]
    waiting = [sid for sid in ids if client.get(f"/api/v1/video/status/{sid}").get_json()["status"] == "pending"]
    assert len(waiting) >= 2
    full = upload(client, videos["short"])
    assert full.status_code == 503 and "already queued" in full.get_json()["error"]
    for sid in waiting[:2]:
        if how == "cleanup":
            assert client.delete(f"/api/v1/video/cleanup/{sid}").status_code == 200
        else:
            assert client.post(f"/api/v1/video/cancel/{sid}").status_code == 200
    queue = client.get("/health").get_json()["queue"]
    assert queue["pending"] + queue["processing"] == 2
    # The freed slots take new uploads right away, while the two long jobs still run.
    for _ in range(2):
        assert upload(client, videos["short"]).status_code == 202
    assert upload(client, videos["short"]).status_code == 503
    for sid in ids:
        client.post(f"/api/v1/video/cancel/{sid}")


# -- item 5: SIGTERM with legacy requests in flight ---------------------------------------------------
def test_sigterm_answers_every_waiting_legacy_client_and_leaves_no_file(start_service, slow_video):
    server = start_service(env={"JOB_WORKERS": "2"})
    answers: list = []
    clients = [threading.Thread(target=_post_legacy, args=(server.base, slow_video, answers)) for _ in range(3)]
    for client in clients:
        client.start()
    _wait_for_queue(server.base, lambda q: q["processing"] == 2 and q["pending"] == 1)
    took = server.terminate(timeout=20)
    for client in clients:
        client.join(10)
    assert server.process.returncode == 0, server.log()
    assert took < 5.0, f"exit took {took:.1f} s"
    assert len(answers) == 3
    for response in answers:
        assert isinstance(response, requests.Response), f"a client got no answer: {response!r}"
        assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
        assert response.json()["success"] is False and "shutting down" in response.json()["error"]
    assert data_dir_entries(server.data_dir) == []
    assert "Traceback" not in server.log()


# -- item 7: the hang-up check past descriptor 1023 -----------------------------------------------------
# Opens descriptors 3..1100 (inheritable), raises the limit, then becomes the server.
_MANY_DESCRIPTORS = """
import os, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), max(hard, 4096)))
while True:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(fd, True)
    if fd >= 1100:
        break
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_legacy_requests_work_when_the_server_holds_over_1024_descriptors(start_service, videos):
    server = start_service(wrapper=[sys.executable, "-c", _MANY_DESCRIPTORS])
    with open(videos["long"], "rb") as handle:  # 90 one-second segments: several hang-up checks
        response = requests.post(server.base + LEGACY, files={"video": handle}, data={"segment_duration": "1"},
                                 timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["total_segments_analyzed"] == 90
    assert data_dir_entries(server.data_dir) == []


# -- item 9: the analysis in a child process ------------------------------------------------------------
def _children(pid: int) -> list:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append((int(name), command))
    return found


def test_a_jobs_decoding_and_model_work_run_outside_the_web_process(start_service, tmp_path):
    """A decode-heavy job (64 frames a second) costs the web process almost nothing: its request threads
    never share an interpreter lock with the job's Python work."""
    video = write_video(str(tmp_path / "busy.mp4"), duration=20, fps=30, size=(640, 360))
    server = start_service(env={"JOB_WORKERS": "1"})
    (worker, _), = _children(server.process.pid)
    analysis = [pid for pid, command in _children(worker) if "resource_tracker" not in command]
    assert len(analysis) == 1, _children(worker)
    worker_before, analysis_before = cpu_seconds(worker), cpu_seconds(analysis[0])
    with open(video, "rb") as handle:
        response = requests.post(server.base + "/api/v1/video/upload", files={"video": handle},
                                 data={"segment_duration": "1", "frames_per_segment": "64"}, timeout=30)
    session_id = response.json()["sessionId"]
    deadline = time.monotonic() + 120
    while get_json(f"{server.base}/api/v1/video/status/{session_id}")[1]["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    worker_cpu = cpu_seconds(worker) - worker_before
    analysis_cpu = cpu_seconds(analysis[0]) - analysis_before
    assert analysis_cpu > 1.0, f"the analysis process did little: {analysis_cpu:.2f} s"
    # Receiving and probing the upload and answering the polls: a small share of the job.
    assert worker_cpu < 0.25 * analysis_cpu, f"web {worker_cpu:.2f} s vs analysis {analysis_cpu:.2f} s"


def test_an_analysis_process_that_dies_fails_its_running_job_clearly_and_queued_jobs_wait_for_the_next(
        make_app, slow_video, videos):
    app = make_app(own_analysis=True, JOB_WORKERS=1)
    client = app.test_client()
    analysis = app.extensions[EXTENSION_KEY].analysis
    running = upload(client, slow_video, segment_duration="1").get_json()["sessionId"]
    queued = [upload(client, videos["short"]).get_json()["sessionId"] for _ in range(2)]
    wait_for_status(client, running, statuses=("processing",))
    assert client.get("/health").get_json()["queue"] == {"pending": 2, "processing": 1}
    killed = analysis.pid
    os.kill(killed, signal.SIGKILL)
    final = wait_for_status(client, running)[-1]
    assert final["status"] == "failed" and "stopped unexpectedly" in final["error"]
    assert "Traceback" not in final["error"]
    # The jobs queued behind it were not lost: they ran once a new child had loaded the model.
    seen = wait_for_status(client, queued[0], statuses=("processing", "completed"))
    assert seen[-1]["status"] == "completed" or seen[-1]["message"] == "Waiting for the model to load"
    for session_id in queued:
        assert wait_for_status(client, session_id, timeout=120)[-1]["status"] == "completed"
    assert analysis.pid != killed and analysis.alive()  # a new child runs them
    again = upload(client, videos["short"]).get_json()["sessionId"]
    assert wait_for_status(client, again)[-1]["status"] == "completed"
    assert client.get("/health").get_json()["status"] == "healthy"
    assert sorted(stored_entries(app)) == sorted([running, *queued, again])


def test_a_child_killed_while_it_loads_the_model_is_started_again(make_app, videos):
    app = make_app(own_analysis=True)
    client = app.test_client()
    analysis = app.extensions[EXTENSION_KEY].analysis
    first = analysis.pid
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while analysis.pid == first or not analysis.alive():
        assert time.monotonic() < deadline, "no new child was started"
        time.sleep(0.005)
    assert not analysis.loaded
    second = analysis.pid
    os.kill(second, signal.SIGKILL)  # the second child, while it loads the model
    analysis.wait_until_loaded(120)  # a third one, after a short back-off
    assert analysis.pid not in (first, second) and analysis.alive()
    health = client.get("/health").get_json()
    assert health["status"] == "healthy" and health["model"]["loaded"] is True
    session_id = upload(client, videos["short"]).get_json()["sessionId"]
    assert wait_for_status(client, session_id)[-1]["status"] == "completed"


def test_a_lone_surrogate_in_a_prompt_is_a_400_naming_the_field(app, client, videos):
    response = upload(client, videos["short"], params='{"user_prompt": "Rate \\ud800 this"}')
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert body["field"] == "user_prompt" and "surrogate" in body["error"]
    assert stored_entries(app) == []


def test_an_analysis_process_that_does_not_answer_makes_uploads_a_clear_503(make_app, videos):
    app = make_app(own_analysis=True)
    client = app.test_client()
    analysis = app.extensions[EXTENSION_KEY].analysis
    os.kill(analysis.pid, signal.SIGSTOP)  # wedged: alive, but answers nothing (the prompt check waits 10 s)
    try:
        response = upload(client, videos["short"])
        assert response.status_code == 503, response.get_data(as_text=True)
        assert int(response.headers["Retry-After"]) > 0 and "not answering" in response.get_json()["error"]
        assert stored_entries(app) == []
    finally:
        os.kill(analysis.pid, signal.SIGCONT)
    session_id = upload(client, videos["short"]).get_json()["sessionId"]
    assert wait_for_status(client, session_id)[-1]["status"] == "completed"


def test_a_child_that_stops_reading_never_blocks_its_callers(make_app, videos):
    """A stopped child fills the pipe: a caller writing into it would wait for good, holding its request thread
    and queue slot. Callers only queue their messages and time out waiting for the answer."""
    from video_analysis.jobs.analysis_process import ModelUnavailable

    app = make_app(own_analysis=True)
    analysis = app.extensions[EXTENSION_KEY].analysis
    os.kill(analysis.pid, signal.SIGSTOP)
    try:
        for _ in range(3):  # 3 x 1 MB: far more than the pipe's buffer
            started = time.monotonic()
            with pytest.raises(ModelUnavailable):
                analysis.call("prompt_problem", "x" * 1_000_000, None, 8, 64, timeout=0.5)
            assert time.monotonic() - started < 5, "the caller waited on the pipe"
    finally:
        os.kill(analysis.pid, signal.SIGCONT)
    client = app.test_client()
    session_id = upload(client, videos["short"]).get_json()["sessionId"]
    assert wait_for_status(client, session_id)[-1]["status"] == "completed"
