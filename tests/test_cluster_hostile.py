"""Cluster mode (issue 17) attacked from outside: a hostile client, an unlucky operator, Redis going away.

Real processes only: a redis-server of the test's own, the API under gunicorn (two processes, as `make run` starts
them in cluster mode) and `python worker.py` workers, each with its own DATA_DIR (tests/support/cluster.py). Redis
is read with its own client to see what the API processes count (queue slots, room under MAX_STORAGE_MB).
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time

import pytest
import requests

from tests.support.cluster import TERMINAL, TOKEN, Cluster
from tests.support.http import host_port, multipart, request_head
from tests.support.processes import running
from tools.redis_server import RedisServer
from tools.service_process import WorkerProcess

MAX_QUEUED_JOBS = 2
SLOTS = "va:slots"


def used_key(cluster: Cluster) -> str:
    return f"va:storage:{cluster.base}:used"


def upload(cluster: Cluster, video: str, **fields) -> requests.Response:
    with open(video, "rb") as handle:
        return requests.post(f"{cluster.base}/api/v1/video/upload", files={"video": handle}, data=fields, timeout=30)


def uploaded(cluster: Cluster, video: str, **fields) -> str:
    response = upload(cluster, video, **fields)
    assert response.status_code == 202, response.text
    return response.json()["sessionId"]


def status(cluster: Cluster, session_id: str) -> dict:
    return requests.get(f"{cluster.base}/api/v1/video/status/{session_id}", timeout=10).json()


def cleanup(cluster: Cluster, session_id: str) -> None:
    response = requests.delete(f"{cluster.base}/api/v1/video/cleanup/{session_id}", timeout=10)
    assert response.status_code == 200, response.text


def ended(cluster: Cluster, session_id: str):
    """The session's status once it has ended, else None."""
    body = status(cluster, session_id)
    return body if body["status"] in TERMINAL else None


def wait_for(what: str, condition, timeout: float = 30.0, log=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}\n{log()}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def api_only(tiny_model_dir, tmp_path_factory):
    """One API service (gunicorn, 2 processes) on a Redis of its own, and no worker: every job stays pending, so
    uploads keep their queue slots. MAX_QUEUED_JOBS=2, MAX_STORAGE_MB=2. Each test leaves no session behind."""
    root = tmp_path_factory.mktemp("hostile")
    server = RedisServer(root / "redis").start()
    cluster = Cluster(str(root / "cluster"), tiny_model_dir, server)
    try:
        cluster.start_api(MAX_QUEUED_JOBS=str(MAX_QUEUED_JOBS), MAX_STORAGE_MB="2")
        yield cluster
    finally:
        cluster.stop()
        server.stop()


def unhandled(cluster: Cluster) -> list:
    """The API's log lines of errors answered with a 500."""
    with open(cluster.api.log_path, encoding="utf-8", errors="replace") as handle:
        return [line for line in handle if "Unhandled error" in line]


# -- the workers' internal route --------------------------------------------------------------------------------
def _get(base: str, path: str, headers: list, method: str = "GET"):
    """A request with `headers` as given (the same name twice included): (status, headers, body)."""
    connection = http.client.HTTPConnection(*host_port(base), timeout=10)
    try:
        connection.putrequest(method, path)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_the_internal_route_answers_anything_but_a_workers_get_as_an_address_that_does_not_exist(api_only, videos):
    session_id = uploaded(api_only, videos["short"])
    path = f"/internal/v1/videos/{session_id}"
    nothing = _get(api_only.base, "/no/such/address", [])
    assert nothing[0] == 404
    try:
        with open(videos["short"], "rb") as handle:
            assert _get(api_only.base, path, [("Authorization", f"Bearer {TOKEN}")])[::2] == (200, handle.read())
        refused = {
            "no header": [],
            "lowercase scheme": [("Authorization", f"bearer {TOKEN}")],
            "two spaces": [("Authorization", f"Bearer  {TOKEN}")],
            "a prefix of the token": [("Authorization", f"Bearer {TOKEN[:-1]}")],
            "the token and more": [("Authorization", f"Bearer {TOKEN}0")],
            "the bare token": [("Authorization", TOKEN)],
            "basic": [("Authorization", "Basic " + TOKEN)],
            "a wrong one, then the right one": [("Authorization", "Bearer wrong"),
                                                ("Authorization", f"Bearer {TOKEN}")],
            "the right one, then a wrong one": [("Authorization", f"Bearer {TOKEN}"),
                                                ("Authorization", "Bearer wrong")],
        }
        for what, headers in refused.items():
            assert _get(api_only.base, path, headers)[::2] == (404, nothing[2]), what
        for bad_path in (f"{path}/", f"{path}%2fupload-0.bin", f"/internal/v1/videos/{session_id.upper()}",
                         f"/internal/v1/videos/..%2f{session_id}", "/internal/v1/videos/..%2f..%2fetc%2fpasswd",
                         "/internal/v1/../../etc/passwd"):
            assert _get(api_only.base, bad_path, [("Authorization", f"Bearer {TOKEN}")])[::2] == (404, nothing[2]), \
                bad_path
        # Routing answers another method before the token is looked at: a 405 (with Allow: GET) would say the
        # route is here, to anyone.
        for method in ("POST", "PUT", "PATCH", "DELETE", "PROPFIND"):
            for headers in ([], [("Authorization", f"Bearer {TOKEN}")]):
                code, answer_headers, body = _get(api_only.base, path, headers, method)
                assert (code, body) == (404, nothing[2]), (method, headers, code, body)
                assert "Allow" not in answer_headers, (method, answer_headers)
    finally:
        cleanup(api_only, session_id)


# -- Redis refusing writes ----------------------------------------------------------------------------------------
def test_a_redis_that_refuses_writes_gets_503_with_a_sentence_never_a_500(api_only, videos):
    """Redis at its maxmemory (noeviction, as operations.md asks), a read-only replica after a failover, or a disk
    it cannot write its AOF to: it answers every write with an error, and the service must say so."""
    session_id = uploaded(api_only, videos["short"])
    with api_only.redis.client() as client:
        client.config_set("maxmemory", 1)
        try:
            with open(videos["short"], "rb") as handle:
                answers = {
                    "upload": upload(api_only, videos["short"]),
                    "upload with a key": requests.post(f"{api_only.base}/api/v1/video/upload",
                                                       files={"video": handle}, timeout=30,
                                                       headers={"Idempotency-Key": "refused"}),
                    "cancel": requests.post(f"{api_only.base}/api/v1/video/cancel/{session_id}", timeout=10),
                    "cleanup": requests.delete(f"{api_only.base}/api/v1/video/cleanup/{session_id}", timeout=10),
                }
        finally:
            client.config_set("maxmemory", 0)
    for what, response in answers.items():
        assert response.status_code == 503, (what, response.text)
        assert response.headers["Retry-After"] == "5", what
        assert "refuses to store anything" in response.json()["detail"], what
    assert unhandled(api_only) == []
    assert status(api_only, session_id)["status"] == "pending"  # nothing was changed
    cleanup(api_only, session_id)
    assert wait_for("the refused uploads' files to go", lambda: api_only.files()["api"] == [])


# -- Redis going away mid-upload ----------------------------------------------------------------------------------
def test_an_upload_redis_missed_the_end_of_gives_back_its_queue_slot_and_its_room(api_only, videos):
    with api_only.redis.client() as client:
        assert client.zcard(SLOTS) == 0
        used_before = int(client.get(used_key(api_only)) or 0)
    with open(videos["long"], "rb") as handle:
        body = multipart([(b"video", b"long.mp4", handle.read())])
    connection = socket.create_connection(host_port(api_only.base), timeout=30)
    try:
        connection.sendall(request_head("/api/v1/video/upload", len(body), extra=b"Idempotency-Key: cut-off\r\n")
                           + body[: len(body) // 2])
        with api_only.redis.client() as client:  # the request has its slot and its room, and reads the body
            wait_for("the upload to take its slot", lambda: client.zcard(SLOTS) == 1)
        api_only.redis.stop()
        connection.sendall(body[len(body) // 2:])
        answer = http.client.HTTPResponse(connection)
        answer.begin()
        assert answer.status == 503, answer.read()
    finally:
        connection.close()
    api_only.redis.start()
    with api_only.redis.client() as client:
        # Both given back once Redis is there again: neither would be otherwise (the slot for an hour, the room
        # until the node restarts), and MAX_QUEUED_JOBS and MAX_STORAGE_MB would shrink with each such upload.
        wait_for("the slot to be given back", lambda: client.zcard(SLOTS) == 0)
        wait_for("the room to be given back", lambda: int(client.get(used_key(api_only)) or 0) == used_before)
        wait_for("the Idempotency-Key to be let go", lambda: not client.exists("va:recv:cut-off"))
    assert api_only.files()["api"] == []
    # And the key it held: the client's retry, which a 503 asks for, would get 409 for an hour otherwise.
    with open(videos["long"], "rb") as handle:
        retried = requests.post(f"{api_only.base}/api/v1/video/upload", files={"video": ("long.mp4", handle)},
                                headers={"Idempotency-Key": "cut-off"}, timeout=30)
    assert retried.status_code == 202, retried.text
    cleanup(api_only, retried.json()["sessionId"])
    sessions = [uploaded(api_only, videos["short"]) for _ in range(MAX_QUEUED_JOBS)]
    for session_id in sessions:
        cleanup(api_only, session_id)
    assert unhandled(api_only) == []


# -- model workers ----------------------------------------------------------------------------------------------
def test_an_idle_worker_keeps_taking_jobs_after_redis_restarts(cluster, videos):
    """RQ waits for jobs in a 5 s blocking pop; a connection of the worker's with a 5 s socket timeout (the one
    its token check made, before RQ raised the pool's) times out there once a Redis restart has shuffled the
    pool, and RQ then quits: the worker was gone, with status 0, a few seconds after Redis came back."""
    cluster.start_api()
    worker = cluster.add_worker()
    for _ in range(2):
        cluster.redis.restart()
        time.sleep(8)  # a blocking pop cut short by the restart, RQ's 2 s wait, and one 5 s pop
        assert running(worker.process.pid), worker.log()
    session_id = uploaded(cluster, videos["short"])
    final = wait_for("the job to end", lambda: ended(cluster, session_id), timeout=60, log=worker.log)
    assert (final["status"], final["worker"]) == ("completed", worker.name)


def test_a_worker_with_another_token_started_before_the_api_fails_no_job_and_stops_saying_why(cluster, videos,
                                                                                            tmp_path):
    """No API has published its token's fingerprint yet, so the worker's check at start passes; it would then
    fail every job it takes with "the API server no longer has the video" (its fetches get 404), draining the
    queue. It must hand the job back and stop with the sentence instead."""
    stranger = WorkerProcess(cluster.model_dir, str(tmp_path / "stranger"), cluster.redis.url,
                             "another-token-0123456789")
    try:
        with cluster.redis.client() as client:
            wait_for("the worker to take jobs", lambda: client.scard("rq:workers") == 1, timeout=120,
                     log=stranger.log)
        cluster.start_api()
        session_id = uploaded(cluster, videos["short"])
        stranger.process.wait(60)
        assert stranger.process.returncode == 1, stranger.log()
        assert "WORKER_TOKEN differs from the one the API servers use" in stranger.log()
        waiting = status(cluster, session_id)
        assert (waiting["status"], waiting["error"]) == ("pending", None), waiting
        assert waiting["message"].startswith("Waiting for a worker"), waiting
    finally:
        stranger.stop()
    worker = cluster.add_worker()
    final = wait_for("the job to end", lambda: ended(cluster, session_id), timeout=60, log=worker.log)
    assert (final["status"], final["worker"]) == ("completed", worker.name)


def test_workers_are_seen_again_after_redis_lost_everything(cluster, videos):
    """Redis restarted without its AOF (or flushed): every session is gone, and so is RQ's registry of workers.
    The workers go on taking jobs; /health must list them again, not say for ever that none has been seen."""
    cluster.start_api()
    worker = cluster.add_worker()
    with cluster.redis.client() as client:
        client.flushall()
    healthy = wait_for("/health to list the worker again", lambda: (lambda body: body if body["workers"] else None)(
        cluster.health()), log=worker.log)
    assert (healthy["status"], [seen["id"] for seen in healthy["workers"]]) == ("healthy", [worker.name])
    assert healthy["workers"][0]["state"] == "idle"
    session_id = uploaded(cluster, videos["short"])
    final = wait_for("the job to end", lambda: ended(cluster, session_id), timeout=60, log=worker.log)
    assert (final["status"], final["worker"]) == ("completed", worker.name)


def test_a_worker_taken_for_dead_that_wakes_up_leaves_the_job_to_the_worker_that_resumed_it(cluster, videos):
    """A worker paused for longer than its heartbeat's TTL (SIGSTOP, a suspended VM or laptop, a long swap storm, or
    cut off from Redis) is taken for dead: its job is queued again and another worker resumes it. When it wakes, it
    is still in the middle of that job: its late answers must not fail the session the other run is completing."""
    cluster.start_api()
    workers = [cluster.add_worker(ready=False) for _ in range(2)]
    for worker in workers:
        worker.wait_ready(cluster.base)
    session_id = uploaded(cluster, videos["long"], segment_duration="4", max_tokens="1024")
    first = wait_for("two answers", lambda: (lambda body: body if body["segmentsDone"] >= 2 else None)(
        status(cluster, session_id)), timeout=60)
    sleeper = next(worker for worker in workers if worker.name == first["worker"])
    other = next(worker for worker in workers if worker is not sleeper)
    os.kill(sleeper.process.pid, signal.SIGSTOP)
    try:
        wait_for("the other worker to resume the job", lambda: status(cluster, session_id)["worker"] == other.name,
                 timeout=60, log=cluster.api.log)
    finally:
        os.kill(sleeper.process.pid, signal.SIGCONT)

    def sleeper_idle():
        seen = {worker["id"]: worker for worker in cluster.health()["workers"]}
        return sleeper.name in seen and seen[sleeper.name]["state"] == "idle"  # its run of the job has ended

    wait_for("the woken worker to let go of the job", sleeper_idle, log=sleeper.log)
    going_on = status(cluster, session_id)
    assert (going_on["status"], going_on["worker"], going_on["error"]) == ("processing", other.name, None), going_on
    with cluster.redis.client() as client:
        runs = json.loads(client.get(f"va:s:{session_id}"))["runs"]
        answered = [json.loads(row)[1] for row in client.lrange(f"va:a:{session_id}", 0, -1)]
    assert runs == 2 and answered == sorted(answered) and set(answered) <= {1, 2}, (runs, answered)
    assert running(sleeper.process.pid)
    requests.post(f"{cluster.base}/api/v1/video/cancel/{session_id}", timeout=10)
