"""Nothing lost on restart (issue 16): the real service, killed with SIGKILL at chosen moments, started again.

Every test runs gunicorn in a subprocess (tools/service_process.py) on one DATA_DIR, kills its whole
process group (the web process and the analysis child: a crash, the OOM killer, a power cut to the
processes) and starts it again on the same DATA_DIR. The state database is read with sqlite3 as it is on
disk: its `answers.run` column says which start of a job asked the model about each segment.
"""
import os
import socket
import sqlite3
import time
import uuid

import pytest
import requests

from tests.support.api import data_dir_entries
from tests.support.http import host_port, multipart, request_head
from tests.support.results import comparable
from tests.support.state_db import answer_runs as runs_on_disk, integrity as integrity_on_disk
from tools.synthetic_video import Marker, write_video
from video_analysis.config import STATE_DB_NAME



class Client:
    """The async API of one running service, through real HTTP."""

    def __init__(self, service):
        self.base = service.base

    def upload(self, video, headers=None, **fields) -> dict:
        with open(video, "rb") as handle:
            response = requests.post(f"{self.base}/api/v1/video/upload", files={"video": handle}, data=fields,
                                     headers=headers, timeout=30)
        assert response.status_code == 202, response.text
        return response.json()

    def status(self, session_id) -> dict:
        return requests.get(f"{self.base}/api/v1/video/status/{session_id}", timeout=10).json()

    def results(self, session_id, partial=False) -> requests.Response:
        query = "?partial=true" if partial else ""
        return requests.get(f"{self.base}/api/v1/video/results/{session_id}{query}", timeout=10)

    def wait(self, session_id, until, timeout=120.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = self.status(session_id)
            if until(body):
                return body
            assert time.monotonic() < deadline, body
            time.sleep(0.02)

    def wait_ended(self, session_id, timeout=120.0) -> dict:
        return self.wait(session_id, lambda body: body["status"] in ("completed", "failed", "cancelled"), timeout)


def answer_runs(data_dir: str, session_id: str) -> list:
    return runs_on_disk(os.path.join(data_dir, STATE_DB_NAME), session_id)


def integrity(data_dir: str) -> str:
    return integrity_on_disk(os.path.join(data_dir, STATE_DB_NAME))



@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("durable")
    return write_video(str(root / "planted.mp4"), duration=40, fps=5, markers=[Marker(12, 18), Marker(31, 36)])


# -- a job killed mid-way ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["tiny", "marker"])
def test_a_job_killed_mid_way_resumes_after_its_last_answer_and_ends_as_an_uninterrupted_run(
        start_service, tiny_model_dir, marker_model_dir, videos, planted, model):
    model_dir, video, fields, kill_at = {
        "tiny": (tiny_model_dir, videos["long"], {"segment_duration": "1"}, 20),
        "marker": (marker_model_dir, planted, {"segment_duration": "2", "min_significance": "6"}, 6),
    }[model]
    first = start_service(model_dir=model_dir, env={"JOB_WORKERS": "1"})
    data_dir = first.data_dir
    api = Client(first)
    killed = api.upload(video, **fields)["sessionId"]
    api.wait(killed, lambda body: body["segmentsDone"] >= kill_at)
    first.kill()
    done_at_kill = len(answer_runs(data_dir, killed))
    assert done_at_kill >= kill_at
    assert integrity(data_dir) == "ok"

    again = start_service(model_dir=model_dir, data_dir=data_dir, env={"JOB_WORKERS": "1"})
    api = Client(again)
    # What was finished before the kill is there at once, as partial results.
    partial = api.results(killed, partial=True).json()
    assert partial["partial"] is True and partial["data"]["total_segments_analyzed"] >= done_at_kill
    reference = api.upload(video, **fields)["sessionId"]  # the same video, never interrupted
    resumed = api.wait_ended(killed)
    assert resumed["status"] == "completed", resumed
    assert api.wait_ended(reference)["status"] == "completed"

    total = resumed["segmentsTotal"]
    runs = answer_runs(data_dir, killed)
    # The segments finished before the kill were not sent to the model again: the first start answered them.
    assert runs == [1] * done_at_kill + [2] * (total - done_at_kill)
    assert answer_runs(data_dir, reference) == [1] * total
    after = api.results(killed).json()["data"]
    assert comparable(after) == comparable(api.results(reference).json()["data"])
    assert after["total_segments_analyzed"] == total


def killed_mid_job(start_service, video: str, at: int):
    """A service killed once a job of 1 s segments has finished `at` of them: (its DATA_DIR, the session id,
    the answers kept on disk)."""
    first = start_service(env={"JOB_WORKERS": "1"})
    api = Client(first)
    session_id = api.upload(video, segment_duration="1")["sessionId"]
    api.wait(session_id, lambda body: body["segmentsDone"] >= at)
    first.kill()
    return first.data_dir, session_id, len(answer_runs(first.data_dir, session_id))


def test_a_resumed_job_says_so(start_service, videos):
    data_dir, session_id, done = killed_mid_job(start_service, videos["long"], 10)
    again = start_service(data_dir=data_dir, env={"JOB_WORKERS": "1"}, ready=False)
    api = Client(again)
    messages = set()
    deadline = time.monotonic() + 120
    while True:
        try:
            body = api.status(session_id)
        except requests.ConnectionError:
            time.sleep(0.02)  # not listening yet
            continue
        messages.add(body["message"])
        if body["status"] == "completed" or time.monotonic() > deadline:
            break
        assert body["status"] == "processing" and body["segmentsDone"] >= done, body
    assert body["status"] == "completed", body
    resumed = f"resumed after a restart at segment {done + 1}"
    assert any(resumed in message.lower() for message in messages), messages


# -- pending jobs, ended sessions -----------------------------------------------------------------------------
def test_pending_jobs_run_again_in_their_order_and_ended_sessions_come_back_unchanged(start_service, videos):
    first = start_service(env={"JOB_WORKERS": "1"})
    api = Client(first)
    ended = api.upload(videos["short"])["sessionId"]
    api.wait_ended(ended)
    ended_status = api.status(ended)
    ended_results = api.results(ended).json()
    running = api.upload(videos["long"], segment_duration="1")["sessionId"]
    waiting = [api.upload(videos["short"], segment_duration=str(seconds))["sessionId"] for seconds in (2, 3, 1)]
    api.wait(running, lambda body: body["segmentsDone"] >= 2)
    assert all(api.status(sid)["status"] == "pending" for sid in waiting)
    first.kill()

    again = start_service(data_dir=first.data_dir, env={"JOB_WORKERS": "1"})
    api = Client(again)
    assert api.status(ended) == ended_status  # finishedAt and all: nothing changed
    assert api.results(ended).json() == ended_results
    for session_id in (running, *waiting):
        assert api.wait_ended(session_id)["status"] == "completed"
    started = [api.status(sid)["startedAt"] for sid in (running, *waiting)]
    assert started[1:] == sorted(started[1:]), "the pending jobs did not start in their original order"
    assert api.status(running)["finishedAt"] < started[1]  # one worker: the running job went on first
    assert integrity(again.data_dir) == "ok"


def test_a_session_killed_right_after_it_completed_keeps_its_results(start_service, videos):
    first = start_service()
    api = Client(first)
    session_id = api.upload(videos["short"])["sessionId"]
    api.wait_ended(session_id, timeout=60)
    first.kill()  # at once: no request in between
    api = Client(start_service(data_dir=first.data_dir))
    assert api.status(session_id)["status"] == "completed"
    assert api.results(session_id).status_code == 200


def test_the_ttl_counts_from_the_original_finish_not_from_the_restart(start_service, videos):
    ttl = 12
    env = {"SESSION_TTL_SECONDS": str(ttl), "SWEEP_INTERVAL_SECONDS": "0.2"}
    first = start_service(env=env)
    api = Client(first)
    session_id = api.upload(videos["short"])["sessionId"]
    api.wait_ended(session_id, timeout=60)
    finished = time.time()
    first.kill()
    time.sleep(4)  # a restart ttl seconds from now would keep it until at least finished + 4 + ttl
    again = start_service(data_dir=first.data_dir, env=env)
    api = Client(again)
    deadline = finished + ttl + 2.5
    while requests.get(f"{again.base}/api/v1/video/status/{session_id}", timeout=10).status_code != 404:
        assert time.time() < deadline, "the session outlived its TTL counted from its finish"
        time.sleep(0.1)
    assert data_dir_entries(again.data_dir) == []  # its upload went with it


# -- uploads: cut off by a kill, retried across one -------------------------------------------------------
def test_an_upload_cut_off_by_a_kill_leaves_no_file_and_no_session(start_service, tmp_path):
    first = start_service()
    body = multipart([(b"video", b"cut.mp4", os.urandom(3 * 1024 * 1024))])
    connection = socket.create_connection(host_port(first.base), timeout=10)
    try:
        connection.sendall(request_head("/api/v1/video/upload", len(body)) + body[: 2 * 1024 * 1024])
        deadline = time.monotonic() + 10
        while not any(os.listdir(os.path.join(first.data_dir, name)) for name in data_dir_entries(first.data_dir)):
            assert time.monotonic() < deadline, first.log()
            time.sleep(0.02)
        first.kill()
    finally:
        connection.close()
    assert len(data_dir_entries(first.data_dir)) == 1  # the half-written upload, before the restart
    again = start_service(data_dir=first.data_dir)
    assert data_dir_entries(again.data_dir) == []
    assert requests.get(f"{again.base}/health", timeout=5).json()["queue"] == {"pending": 0, "processing": 0}
    assert integrity(again.data_dir) == "ok"
    with sqlite3.connect(os.path.join(again.data_dir, STATE_DB_NAME)) as db:
        assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0


def test_a_legacy_request_killed_mid_job_is_not_resumed_and_its_files_go(start_service, videos):
    first = start_service()
    with open(videos["long"], "rb") as handle:
        body = multipart([(b"video", b"long.mp4", handle.read()), (b"segment_duration", None, b"1")])
    connection = socket.create_connection(host_port(first.base), timeout=10)
    try:
        connection.sendall(request_head("/analyze/highlights", len(body)) + body)
        deadline = time.monotonic() + 30
        while requests.get(f"{first.base}/health", timeout=5).json()["queue"]["processing"] == 0:
            assert time.monotonic() < deadline, first.log()
            time.sleep(0.02)
        assert len(data_dir_entries(first.data_dir)) == 1
        first.kill()
    finally:
        connection.close()
    again = start_service(data_dir=first.data_dir)
    assert data_dir_entries(again.data_dir) == []
    assert requests.get(f"{again.base}/health", timeout=5).json()["queue"] == {"pending": 0, "processing": 0}


def test_an_idempotency_key_retried_across_a_restart_gets_the_same_session(start_service, videos):
    key = str(uuid.uuid4())
    first = start_service()
    created = Client(first).upload(videos["short"], headers={"Idempotency-Key": key}, segment_duration="2")
    first.kill()
    again = start_service(data_dir=first.data_dir)
    api = Client(again)
    retried = api.upload(videos["short"], headers={"Idempotency-Key": key}, segment_duration="2")
    assert retried["sessionId"] == created["sessionId"]
    assert data_dir_entries(again.data_dir) == [created["sessionId"]]
    assert api.wait_ended(created["sessionId"])["status"] == "completed"
    response = requests.post(f"{again.base}/api/v1/video/upload", files={"video": open(videos["long"], "rb")},
                             data={"segment_duration": "2"}, headers={"Idempotency-Key": key}, timeout=30)
    assert response.status_code == 422


def test_cleanup_after_a_restart_deletes_every_file(start_service, videos):
    first = start_service(env={"JOB_WORKERS": "1"})
    api = Client(first)
    sessions = [api.upload(videos["short"])["sessionId"], api.upload(videos["long"], segment_duration="1")["sessionId"]]
    api.wait(sessions[1], lambda body: body["segmentsDone"] >= 1)
    first.kill()
    again = start_service(data_dir=first.data_dir)
    assert data_dir_entries(again.data_dir) == sorted(sessions)
    for session_id in sessions:
        response = requests.delete(f"{again.base}/api/v1/video/cleanup/{session_id}", timeout=10)
        assert response.status_code == 200, response.text
    assert data_dir_entries(again.data_dir) == []
    with sqlite3.connect(os.path.join(again.data_dir, STATE_DB_NAME)) as db:
        assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 0


# -- what a restart cannot do -------------------------------------------------------------------------------
def test_a_state_db_gunicorn_cannot_use_stops_it_with_the_sentence(start_service, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n" * 200)
    service = start_service(env={"STATE_DB": str(notes)}, ready=False)
    service.process.wait(30)  # it stops: no worker started over and over
    assert service.process.returncode != 0
    assert "cannot be used" in service.log() and "Move it aside" in service.log()
    assert notes.read_text() == "not a database\n" * 200


def test_jobs_queued_again_after_a_restart_wait_through_the_models_retries(start_service, videos):
    """A restart whose model cannot be fetched yet (the Hub unreachable) leaves the restored jobs waiting, not
    failed: they were accepted while the model worked, and keep their finished segments for a later start."""
    data_dir, session_id, done = killed_mid_job(start_service, videos["long"], 5)
    offline = start_service(model_dir="test-org/not-in-the-cache", data_dir=data_dir, ready=False,
                            env={"HF_HUB_OFFLINE": "1", "MODEL_RETRY_SECONDS": "1", "JOB_WORKERS": "1"})
    offline.wait_ready()  # degraded: the first try failed
    deadline = time.monotonic() + 30
    while requests.get(f"{offline.base}/health", timeout=5).json()["model"].get("failedAttempts", 0) < 2:
        assert time.monotonic() < deadline, offline.log()  # a second try, failing too
        time.sleep(0.1)
    waiting = Client(offline).status(session_id)
    assert waiting["status"] == "processing" and waiting["error"] is None, waiting
    assert waiting["message"] == "Waiting for the model to load"
    offline.kill()

    api = Client(start_service(data_dir=data_dir, env={"JOB_WORKERS": "1"}))
    assert api.wait_ended(session_id)["status"] == "completed"
    assert answer_runs(data_dir, session_id)[:done] == [1] * done
