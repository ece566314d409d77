"""Issue 17, the API side of cluster mode, on real processes: a redis-server, gunicorn API processes and model
workers of each test's own (the `cluster` fixture, tests/support/cluster.py), each node with its own DATA_DIR.

What is restarted or killed here is the API and Redis (the workers' own deaths are tests/test_cluster_workers.py's):
nothing of a job may be lost, Redis away is a 503 with Retry-After and a sentence (never a 500), and every file
goes on every node after cleanup and expiry. Redis is read directly only for what no route shows: the answers'
runs (which start of a job asked the model about each segment) and what is left of a session after it went.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, Optional

import pytest
import requests

from tests.support.cluster import TOKEN, UPLOAD, Cluster, ClusterApi, assert_unreachable
from tests.support.http import host_port, multipart
from tests.support.results import comparable
from tools.service_process import REPO, WorkerProcess
from tools.synthetic_video import write_video
from video_analysis.cluster.connection import UNREACHABLE
from video_analysis.cluster.sessions import RedisSessionStore
from video_analysis.cluster.worker_token import token_problem
from video_analysis.jobs.session_ids import is_session_id



def wait_for(what: Callable[[], object], message: Callable[[], str], timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        found = what()
        if found:
            return found
        assert time.monotonic() < deadline, message()
        time.sleep(0.05)


def held(files: list) -> list:
    """The sessions whose files are among `files` (paths under a DATA_DIR, as `Cluster.files()` gives them)."""
    return sorted({part for path in files for part in path.split(os.sep) if is_session_id(part)})


def nothing_anywhere(cluster: Cluster) -> Dict[str, list]:
    """Wait until no node's DATA_DIR holds anything (a worker deletes its copy as its job ends); the last look."""
    wait_for(lambda: not any(cluster.files().values()), lambda: f"files left: {cluster.files()}", timeout=30)
    return cluster.files()


def left_in_redis(redis_server, session_id: str) -> list:
    """Every key of the service that names the session or holds it (RQ's own job records aside)."""
    client = redis_server.client()
    left = []
    for raw in client.scan_iter("va:*"):
        key = raw.decode()
        kind = client.type(key).decode()
        if session_id in key or (kind == "zset" and client.zscore(key, session_id) is not None) or (
                kind == "set" and client.sismember(key, session_id)):
            left.append(key)
    return left


def answer_runs(redis_server, session_id: str) -> list:
    return RedisSessionStore(redis_server.client()).answer_runs(session_id)



# -- 1. the API restarted mid-job ------------------------------------------------------------------------------
@pytest.mark.parametrize("kill", [False, True], ids=["stopped", "killed"])
def test_a_restart_of_the_api_mid_job_loses_nothing(cluster, redis_server, videos, kill):
    cluster.start_api()
    worker = cluster.add_worker()
    api = ClusterApi(cluster)
    running = api.start(videos["long"], segment_duration="2")
    waiting = api.start(videos["short"], segment_duration="2")  # one worker: it waits its turn
    api.wait(running, lambda body: body["segmentsDone"] >= 3)
    assert api.status(waiting)["status"] == "pending"
    cluster.restart_api(kill=kill)

    # The new API processes serve both; the waiting job's upload is fetched from them (or the worker waited for
    # them while they restarted).
    assert held(cluster.files()["api"]) == sorted([running, waiting])
    for session_id in (running, waiting):
        ended = api.wait_ended(session_id)
        assert ended["status"] == "completed" and ended["worker"] == worker.name, ended
    assert api.results(running)["total_segments_analyzed"] == 45
    assert api.results(waiting)["total_segments_analyzed"] == 3
    assert answer_runs(redis_server, running) == [1] * 45  # the worker never stopped: nothing was asked twice

    # The uploads stay on the API node until cleanup; the worker's copies went when the jobs ended.
    wait_for(lambda: not cluster.files()[worker.name], lambda: f"the worker kept its copies: {cluster.files()}")
    assert held(cluster.files()["api"]) == sorted([running, waiting])
    for session_id in (running, waiting):
        api.cleanup(session_id)
    assert cluster.files() == {"api": [], worker.name: []}


# -- 2. Redis restarted mid-job ---------------------------------------------------------------------------------
def test_a_redis_killed_and_restarted_mid_job_loses_nothing(cluster, redis_server, videos):
    cluster.start_api()
    worker = cluster.add_worker()
    api = ClusterApi(cluster)
    interrupted = api.start(videos["long"], segment_duration="2")
    api.wait(interrupted, lambda body: body["segmentsDone"] >= 5)
    redis_server.kill()  # as a crash would: only what the AOF holds comes back
    wait_for(lambda: requests.get(f"{api.base}/api/v1/video/status/{interrupted}", timeout=10).status_code == 503,
             lambda: "the API never noticed Redis was gone")
    time.sleep(1.0)  # the worker's next writes fail meanwhile: it pauses
    redis_server.restart()

    ended = api.wait_ended(interrupted, outage=True)
    assert ended["status"] == "completed" and ended["worker"] == worker.name, ended
    assert worker.process.poll() is None  # paused and went on, never died
    runs = answer_runs(redis_server, interrupted)
    paused_after = runs.count(1)
    # Every segment answered once: those saved before the outage by the first run, the rest after it.
    assert runs == [1] * paused_after + [2] * (45 - paused_after), runs
    assert 5 <= paused_after < 45

    reference = api.start(videos["long"], segment_duration="2")  # the same video, never interrupted
    assert api.wait_ended(reference)["status"] == "completed"
    assert answer_runs(redis_server, reference) == [1] * 45
    assert comparable(api.results(interrupted)) == comparable(api.results(reference))


# -- 3. Redis stopped: 503 everywhere, then back by itself ----------------------------------------------------------
def test_while_redis_is_stopped_every_route_answers_503_and_all_comes_back_by_itself(cluster, redis_server, videos):
    cluster.start_api()
    worker = cluster.add_worker()
    api = ClusterApi(cluster)
    # Redis goes away just as a job ends, while RQ still books its end (the worker is held there with SIGSTOP,
    # as soon as Redis tells that the session ended): the worker must ride that out, not quit.
    client = redis_server.client()
    client.config_set("notify-keyspace-events", "Kz")
    ends = client.pubsub(ignore_subscribe_messages=True)
    ends.subscribe(f"__keyspace@0__:va:ended:{cluster.base}")
    done = api.start(videos["short"])
    wait_for(lambda: ends.get_message(timeout=1.0), lambda: "the job never ended", timeout=120)
    os.kill(worker.process.pid, signal.SIGSTOP)
    try:
        ends.close()
        redis_server.stop()
    finally:
        os.kill(worker.process.pid, signal.SIGCONT)
    # It reaches its wait for the next job (RQ's loop then says it tries Redis again in 1 s; its command
    # listener, in 2 s), or quits.
    wait_for(lambda: worker.process.poll() is not None or "retrying in 1 seconds" in worker.log(),
             lambda: f"the worker neither waits for Redis nor quit:\n{worker.log()}")
    assert worker.process.poll() is None, f"the worker quit when Redis went away:\n{worker.log()}"

    base = api.base
    assert_unreachable(api.upload(videos["short"]))
    assert_unreachable(api.upload(videos["short"], route="/analyze/highlights"), legacy=True)
    assert_unreachable(requests.get(f"{base}/api/v1/video/status/{done}", timeout=10))
    assert_unreachable(requests.get(f"{base}/api/v1/video/results/{done}", timeout=10))
    assert_unreachable(requests.get(f"{base}/api/v1/video/results/{done}?partial=true", timeout=10))
    assert_unreachable(requests.post(f"{base}/api/v1/video/cancel/{done}", timeout=10))
    assert_unreachable(requests.delete(f"{base}/api/v1/video/cleanup/{done}", timeout=10))
    health = requests.get(f"{base}/health", timeout=10)
    assert health.status_code == 200
    assert health.json()["status"] == "degraded" and health.json()["reason"] == UNREACHABLE
    assert held(cluster.files()["api"]) == [done]  # the refused cleanup deleted nothing

    redis_server.restart()
    # Nobody restarts the API or the worker: both reconnect by themselves.
    wait_for(lambda: cluster.health()["status"] == "healthy", lambda: f"still {cluster.health()}")
    assert [w["id"] for w in cluster.health()["workers"]] == [worker.name]
    assert api.status(done)["status"] == "completed"
    assert api.results(done)["total_segments_analyzed"] > 0
    again = api.start(videos["short"])
    assert api.wait_ended(again)["status"] == "completed"
    cancelled = api.start(videos["long"], segment_duration="1")
    response = requests.post(f"{base}/api/v1/video/cancel/{cancelled}", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "cancelled", response.text
    for session_id in (done, again, cancelled):
        api.cleanup(session_id)
    assert nothing_anywhere(cluster) == {"api": [], worker.name: []}


# -- 4. the workers' internal route, and a worker with the wrong token -----------------------------------------------
def get(url: str, token: Optional[str] = None, authorization: Optional[str] = None) -> requests.Response:
    headers = {"Authorization": authorization or f"Bearer {token}"} if (token or authorization) else {}
    return requests.get(url, headers=headers, timeout=10)


def assert_same_404(response, unknown) -> None:
    assert response.status_code == 404, response.status_code
    assert response.content == unknown.content
    assert response.headers["Content-Type"] == unknown.headers["Content-Type"]


def test_the_internal_route_serves_uploads_only_with_the_token_and_a_wrong_token_stops_a_worker(
        cluster, redis_server, videos, tmp_path):
    cluster.start_api()  # no worker: the job waits, its upload stays
    api = ClusterApi(cluster)
    session_id = api.start(videos["short"])
    url = f"{api.base}/internal/v1/videos/{session_id}"
    unknown = get(f"{api.base}/no/such/address")
    assert unknown.status_code == 404

    for refused in (get(url), get(url, token="not-the-token-0123456789"), get(url, token=TOKEN + "x"),
                    get(url, token=TOKEN[:-1]), get(url, authorization=TOKEN),
                    get(url, authorization=f"Basic {TOKEN}"),
                    get(f"{api.base}/internal/v1/videos/{'0' * 8}-0000-4000-8000-{'0' * 12}", token=TOKEN),
                    get(f"{api.base}/internal/v1/nothing", token=TOKEN)):
        assert_same_404(refused, unknown)
    served = get(url, token=TOKEN)
    assert served.status_code == 200
    with open(videos["short"], "rb") as handle:
        assert served.content == handle.read()

    wrong = "a-wrong-worker-token-987654321"
    stopped = WorkerProcess(cluster.model_dir, str(tmp_path / "wrong-worker"), redis_server.url, wrong)
    try:
        assert stopped.process.wait(60) != 0
        assert token_problem(redis_server.client(), wrong) in stopped.log()
    finally:
        stopped.stop()
    assert cluster.health()["workers"] == []


def test_the_internal_route_is_a_404_in_embedded_mode_even_with_a_token(start_service, videos):
    service = start_service(env={"REDIS_URL": None, "WORKER_TOKEN": TOKEN})
    with open(videos["short"], "rb") as handle:
        response = requests.post(service.base + UPLOAD, files={"video": handle}, timeout=60)
    assert response.status_code == 202, response.text
    session_id = response.json()["sessionId"]
    unknown = get(f"{service.base}/no/such/address")
    assert_same_404(get(f"{service.base}/internal/v1/videos/{session_id}", token=TOKEN), unknown)
    assert_same_404(get(f"{service.base}/internal/v1/videos/{session_id}"), unknown)


# -- 5. every file gone: cleanup, expiry, legacy requests --------------------------------------------------------------
def test_cleanup_deletes_every_file_on_every_node_and_a_legacy_request_leaves_none(cluster, redis_server, videos):
    cluster.start_api()
    workers = [cluster.add_worker(), cluster.add_worker()]
    api = ClusterApi(cluster)
    finished = api.start(videos["short"])
    assert api.wait_ended(finished)["status"] == "completed"
    running = [api.start(videos["long"], segment_duration="1") for _ in workers]
    # Both run at once, one on each worker, each with its copy of the upload in that worker's scratch.
    busy = [api.wait(sid, lambda body: body["segmentsDone"] >= 1)["worker"] for sid in running]
    assert sorted(busy) == sorted(w.name for w in workers)
    copies = cluster.files()
    assert sorted(held(copies[w.name]) for w in workers) == sorted([sid] for sid in running), copies
    assert held(copies["api"]) == sorted([finished, *running])

    for session_id in (finished, *running):
        api.cleanup(session_id)
    assert nothing_anywhere(cluster) == {"api": [], **{w.name: [] for w in workers}}
    for session_id in (finished, *running):
        assert left_in_redis(redis_server, session_id) == []
    # The workers stopped those jobs and are free again: neither was killed.
    wait_for(lambda: all(w["job"] is None for w in cluster.health()["workers"]), lambda: str(cluster.health()))
    assert all(w.process.poll() is None for w in workers)

    with open(videos["short"], "rb") as handle:
        response = requests.post(api.base + "/analyze/highlights", files={"video": handle},
                                 data={"segment_duration": "2"}, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True and response.json()["data"]["total_segments_analyzed"] == 3
    assert nothing_anywhere(cluster) == {"api": [], **{w.name: [] for w in workers}}
    assert redis_server.client().zcard("va:sessions") == 0


def test_a_completed_session_expires_with_its_files_on_every_node(cluster, redis_server, videos):
    ttl = 3
    cluster.start_api(SESSION_TTL_SECONDS=str(ttl), SWEEP_INTERVAL_SECONDS="0.2")
    worker = cluster.add_worker()
    api = ClusterApi(cluster)
    session_id = api.start(videos["long"], segment_duration="3")
    api.wait(session_id, lambda body: body["segmentsDone"] >= 1)
    assert held(cluster.files()["api"]) == [session_id]  # kept while it runs
    assert api.wait_ended(session_id)["status"] == "completed"
    wait_for(lambda: requests.get(f"{api.base}/api/v1/video/status/{session_id}", timeout=10).status_code == 404,
             lambda: "the session outlived its TTL")
    assert nothing_anywhere(cluster) == {"api": [], worker.name: []}
    assert left_in_redis(redis_server, session_id) == []


def test_a_session_ended_by_a_worker_expires_in_redis_after_the_apis_ttl_even_while_the_api_is_down(
        cluster, redis_server, videos):
    """The worker ends the session; its keys must expire after SESSION_TTL_SECONDS, the API's setting, by Redis
    itself (an API node that never comes back has no sweeper); the node deletes the file once it is back."""
    ttl = 5
    cluster.start_api(SESSION_TTL_SECONDS=str(ttl), SWEEP_INTERVAL_SECONDS="0.2")
    worker = cluster.add_worker()
    api = ClusterApi(cluster)
    session_id = api.start(videos["short"])
    assert api.wait_ended(session_id)["status"] == "completed"
    client = redis_server.client()
    keys = [f"va:s:{session_id}", f"va:a:{session_id}"]
    assert 0 < client.ttl(keys[0]) <= ttl, client.ttl(keys[0])
    cluster.api.stop()
    wait_for(lambda: client.exists(*keys) == 0, lambda: f"{keys} still there, ttl {client.ttl(keys[0])} s")
    assert held(cluster.files()["api"]) == [session_id]  # its node was away: nobody deleted the file yet

    cluster.restart_api()
    assert nothing_anywhere(cluster) == {"api": [], worker.name: []}
    wait_for(lambda: not left_in_redis(redis_server, session_id),  # its node's sweeper forgets the rest
             lambda: f"left in Redis: {left_in_redis(redis_server, session_id)}")
    assert requests.get(f"{api.base}/api/v1/video/status/{session_id}", timeout=10).status_code == 404


# -- 6. test_async_api.py, unchanged, against a cluster ---------------------------------------------------------------
def test_the_async_api_checks_pass_against_a_cluster(cluster, tmp_path):
    cluster.start_api()
    worker = cluster.add_worker()
    checked = subprocess.run([sys.executable, "test_async_api.py", "--base-url", cluster.base, "--timeout", "120"],
                             cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
                             timeout=600)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert " 0 failed" in checked.stdout
    assert nothing_anywhere(cluster) == {"api": [], worker.name: []}  # every check cleans up after itself


# -- 7. gunicorn runs WEB_PROCESSES processes, which share the storage bound ------------------------------------------
def _children(pid: int) -> list:
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            children.extend(int(child) for child in handle.read().split())
    return children


def _socket_owner(connection: http.client.HTTPConnection, server_port: int, pids: list) -> Optional[int]:
    """Which of `pids` holds the server's end of `connection` (Linux /proc: the TCP row, then the descriptors)."""
    client_port = connection.sock.getsockname()[1]
    wanted = (f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}")
    with open("/proc/net/tcp") as handle:
        inodes = [row.split()[9] for row in handle.readlines()[1:] if tuple(row.split()[1:3]) == wanted]
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if inodes and os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inodes[0]}]":
                    return pid
            except FileNotFoundError:
                continue
    return None


def served_by(base: str, pid: int, pids: list) -> http.client.HTTPConnection:
    """A kept-alive connection that gunicorn's process `pid` accepted (new ones are tried until one is)."""
    host, port = host_port(base)
    for _ in range(100):
        connection = http.client.HTTPConnection(host, port, timeout=30)
        connection.request("GET", "/health")
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 200
        if _socket_owner(connection, port, pids) == pid:
            return connection
        connection.close()
    raise AssertionError(f"no connection of 100 went to process {pid}")


def post_upload(connection: http.client.HTTPConnection, body: bytes) -> http.client.HTTPResponse:
    connection.request("POST", UPLOAD, body, {"Content-Type": "multipart/form-data; boundary=hostile-boundary"})
    return connection.getresponse()


def post_head_only(connection: http.client.HTTPConnection, length: int) -> http.client.HTTPResponse:
    """An upload's head declaring `length` bytes, and no body: a server that waited for it would never answer."""
    connection.putrequest("POST", UPLOAD)
    connection.putheader("Content-Type", "multipart/form-data; boundary=hostile-boundary")
    connection.putheader("Content-Length", str(length))
    connection.putheader("Connection", "close")
    connection.endheaders()
    connection.sock.settimeout(10)
    try:
        return connection.getresponse()
    except TimeoutError:
        raise AssertionError("the process took the upload and waits for its body: it did not count the upload "
                             "the other process keeps") from None


def test_gunicorn_runs_web_processes_that_share_the_storage_bound(cluster, tmp_path):
    video = write_video(str(tmp_path / "big.mp4"), duration=60, fps=10)
    with open(video, "rb") as handle:
        body = multipart([(b"video", b"big.mp4", handle.read())])
    mb = 1024 * 1024
    assert mb // 2 < len(body) < mb  # one fits in MAX_STORAGE_MB=1, two do not
    cluster.start_api(WEB_PROCESSES="2", MAX_STORAGE_MB="1")  # no worker: the job waits, its upload stays
    master = cluster.api.process.pid
    # The API answers as soon as its first process runs; the master forks the others right after.
    wait_for(lambda: len(_children(master)) >= 2, lambda: f"gunicorn's processes: {_children(master)}")
    processes = sorted(_children(master))
    assert len(processes) == 2, processes
    first, second = processes

    received = post_upload(served_by(cluster.base, first, processes), body)
    assert received.status == 202, received.read()
    session_id = json.loads(received.read())["sessionId"]
    # The other process counts that upload: a second one does not fit (refused on its declared length).
    pinned = served_by(cluster.base, second, processes)
    refused = post_head_only(pinned, len(body))
    assert refused.status == 507
    refused.read()
    refused.close()  # the body it declared never comes: closed, the process stops waiting for it

    cleanup = served_by(cluster.base, second, processes)
    cleanup.request("DELETE", f"/api/v1/video/cleanup/{session_id}")
    assert cleanup.getresponse().status == 200
    assert cluster.files()["api"] == []
    # The room is given back for the process that received the upload too.
    again = post_upload(served_by(cluster.base, first, processes), body)
    assert again.status == 202, again.read()
    assert sorted(_children(master)) == processes  # the same two processes served it all


# -- 6. thumbnails and reels (issue 19): made on the worker, served by the API node ------------------------------------
def test_a_workers_thumbnails_and_reel_are_served_by_the_api_node_and_cleaned_up_there(
        marker_model_dir, redis_server, tmp_path):
    from tools.synthetic_video import Marker

    cluster = Cluster(str(tmp_path / "marker-cluster"), marker_model_dir, redis_server)
    try:
        cluster.start_api()
        worker = cluster.add_worker()
        api = ClusterApi(cluster)
        video = write_video(str(tmp_path / "match.mp4"), duration=20, fps=5, size=(320, 180),
                            markers=[Marker(11, 19)])
        session_id = api.start(video, reel="true")
        assert api.wait_ended(session_id)["status"] == "completed"
        data = api.results(session_id)
        assert [(h["start_time"], h["end_time"]) for h in data["highlights"]] == [(10.0, 20.0)]
        thumbnail = requests.get(api.base + data["highlights"][0]["thumbnailUrl"], timeout=10)
        assert thumbnail.status_code == 200 and thumbnail.headers["Content-Type"] == "image/jpeg"
        assert data["reelUrl"] == f"/api/v1/video/reel/{session_id}.mp4" and data["reelDuration"] == 10.0
        reel = requests.get(api.base + data["reelUrl"], timeout=10)
        assert reel.status_code == 200 and len(reel.content) == data["reelSize"]
        first = requests.get(api.base + data["reelUrl"], headers={"Range": "bytes=0-99"}, timeout=10)
        assert first.status_code == 206 and first.content == reel.content[:100]
        # The API node keeps them; the worker's copies went with its scratch when the job ended.
        files = wait_for(lambda: (lambda f: f if not f[worker.name] else None)(cluster.files()),
                         lambda: str(cluster.files()), timeout=30)
        assert {f"{session_id}/reel.mp4", f"{session_id}/thumbnails/0.jpg"} <= set(files["api"]), files
        assert held(files["api"]) == [session_id] and len(files["api"]) == 3, files  # with the upload
        api.cleanup(session_id)
        assert nothing_anywhere(cluster) == {"api": [], worker.name: []}
    finally:
        cluster.stop()
