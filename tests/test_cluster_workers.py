"""The model workers of cluster mode (issue 17), as real processes: jobs spread over workers, cancel, SIGKILL, SIGTERM.

Every test has a redis-server, an API service (gunicorn) and `python worker.py` processes of its own
(tests/support/cluster.py), each worker with its own DATA_DIR as if on a machine of its own. A worker is
killed with SIGKILL (a crash, the OOM killer) or stopped with SIGTERM (an operator) mid-job; Redis is read
with its client to see which run of a job kept each answer (`RedisSessionStore.answer_runs`).

A killed worker's job is queued again by the reaper once its heartbeat has expired (up to
HEARTBEAT_TTL_SECONDS after the kill, then a reaper pass) and only once Redis has been up for the reaper's
uptime guard: the kill tests use Redis servers started when this module starts (`early_redis`), and run
their reference (uninterrupted) job on the surviving worker while they wait.
"""
from __future__ import annotations

import json
import os
import threading
import time
from typing import List

import pytest
from rq import Queue, Worker
from rq.registry import FailedJobRegistry

from tests.support.cluster import Cluster, ClusterApi
from tests.support.processes import running
from tests.support.results import comparable
from tools.redis_server import RedisServer
from tools.synthetic_video import Marker, write_video
from video_analysis.cluster.connection import QUEUE_NAME
from video_analysis.cluster.sessions import RedisSessionStore

# A job the tiny model runs in a few seconds: the `thirty` video in 30 one-second segments.
ONE_SECOND = {"segment_duration": "1"}
# max_tokens 1024: the tiny model writes until the limit, about 0.8 s a segment, so 90 segments run for over a
# minute: a job that ends sooner than that was stopped.
OVER_A_MINUTE = {"segment_duration": "1", "max_tokens": "1024"}


def answer_runs(cluster: Cluster, session_id: str) -> List[int]:
    """Which run of the job (1, 2, ...) kept each answer, as Redis has it."""
    with cluster.redis.client() as client:
        return RedisSessionStore(client).answer_runs(session_id)


def session_record(cluster: Cluster, session_id: str) -> dict:
    with cluster.redis.client() as client:
        return json.loads(client.get(f"va:s:{session_id}"))


def holder(cluster: Cluster, body: dict):
    """The WorkerProcess running the session whose status is `body`."""
    found = [worker for worker in cluster.workers if worker.name == body["worker"]]
    assert len(found) == 1, (body, [worker.name for worker in cluster.workers])
    return found[0]


def jobs_done(cluster: Cluster, worker) -> tuple:
    """(succeeded, failed): the RQ jobs `worker` ran, as its entry in RQ's worker registry counts them."""
    with cluster.redis.client() as client:
        entry = Worker.find_by_key(Worker.redis_worker_namespace_prefix + worker.name, connection=client)
        return entry.successful_job_count, entry.failed_job_count


def assert_emptied(directory: str, timeout: float = 10.0) -> None:
    """A worker deletes its scratch copy right after it writes the job's end: wait for that."""
    deadline = time.monotonic() + timeout
    while os.listdir(directory) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.listdir(directory) == []


def add_workers(cluster: Cluster, count: int) -> list:
    """`count` more workers, started together (each loads its model at once), ready when returned."""
    started = [cluster.add_worker(ready=False) for _ in range(count)]
    for worker in started:
        worker.wait_ready(cluster.base)
    return started


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """40 s with two planted markers, for the marker model (as in test_durable_sessions)."""
    root = tmp_path_factory.mktemp("cluster-videos")
    return write_video(str(root / "planted.mp4"), duration=40, fps=5, markers=[Marker(12, 18), Marker(31, 36)])


@pytest.fixture(scope="module")
def thirty(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster-videos")
    return write_video(str(root / "thirty.mp4"), duration=30, fps=4, size=(96, 72))


@pytest.fixture(scope="module", autouse=True)
def early_redis(tmp_path_factory):
    """Redis servers started when the module starts, for the kill tests: by the time one kills a worker the
    reaper's uptime guard (20 s) has passed, so the job is queued again as soon as the heartbeat expires.
    `early_redis()` hands out one unused server (a new one once none is left); all are stopped at the end."""
    root = tmp_path_factory.mktemp("early-redis")
    servers = [RedisServer(root / f"redis{index}").start() for index in range(3)]
    unused = list(servers)

    def take():
        if not unused:
            servers.append(RedisServer(root / f"redis{len(servers)}").start())
            return servers[-1]
        return unused.pop(0)

    yield take
    for server in servers:
        server.stop()


@pytest.fixture
def new_cluster(early_redis, tiny_model_dir, tmp_path):
    """`new_cluster(model_dir=tiny)`: a cluster on one of the early Redis servers, its API started; all stopped
    after the test."""
    made = []

    def make(model_dir=None) -> Cluster:
        cluster = Cluster(str(tmp_path / f"cluster{len(made)}"), model_dir or tiny_model_dir, early_redis())
        made.append(cluster)
        cluster.start_api()
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


# -- jobs spread over the workers --------------------------------------------------------------------------------
def test_jobs_spread_over_two_workers_and_each_status_names_its_worker(cluster, thirty):
    cluster.start_api()
    workers = add_workers(cluster, 2)
    api = ClusterApi(cluster)
    sessions = [api.start(thirty, **ONE_SECOND) for _ in range(4)]
    ended = api.wait_all_ended(sessions)

    assert [body["status"] for body in ended] == ["completed"] * 4, ended
    assert {body["worker"] for body in ended} == {worker.name for worker in workers}
    assert sum(jobs_done(cluster, worker)[0] for worker in workers) == 4  # each job ran once
    for session_id, final in zip(sessions, ended):
        seen = api.seen[session_id]
        # Nobody runs a pending job; once it runs, its worker is named, and stays the one that ran it.
        assert all(body["worker"] is None for body in seen if body["status"] == "pending"), seen
        assert {body["worker"] for body in seen if body["status"] != "pending"} == {final["worker"]}, seen
    # Two workers, each busy with a job of a few seconds: the last upload waited, and said nobody ran it.
    assert api.seen[sessions[-1]][0]["status"] == "pending" and api.seen[sessions[-1]][0]["worker"] is None
    for worker in workers:
        assert_emptied(worker.scratch)  # every scratch copy deleted once its job ended


# -- sharing a machine's cores ------------------------------------------------------------------------------------
def cores_in_health(cluster: Cluster) -> dict:
    """Each worker's cores as /health shows them, by worker id."""
    return {entry["id"]: entry["cores"] for entry in cluster.health()["workers"]}


def test_workers_on_one_machine_split_its_cores_and_health_says_so(cluster, videos, thirty):
    cores = len(os.sched_getaffinity(0))  # the workers inherit this process's cores
    cluster.start_api()
    first = cluster.add_worker()
    api = ClusterApi(cluster)
    assert api.wait_ended(api.start(thirty, **ONE_SECOND))["status"] == "completed"
    assert cores_in_health(cluster) == {first.name: cores}  # alone on the machine: all of them

    second = cluster.add_worker()
    running = [api.start(videos["long"], **OVER_A_MINUTE) for _ in range(2)]
    for session_id in running:
        api.wait(session_id, lambda body: body["segmentsDone"] >= 1)
    # Both busy: each has half, once each has worked it out (at its job's start, then at each 5 s heartbeat).
    deadline = time.monotonic() + 20
    while cores_in_health(cluster) != {first.name: max(1, cores // 2), second.name: max(1, cores // 2)}:
        assert time.monotonic() < deadline, cores_in_health(cluster)
        time.sleep(0.2)
    # One ends: the other, still busy, has the machine again (told at once; at the latest at its next heartbeat).
    api.cancel(running[0])
    api.wait_ended(running[0])
    still = holder(cluster, api.status(running[1])).name
    deadline = time.monotonic() + 20
    while cores_in_health(cluster)[still] != cores:
        assert time.monotonic() < deadline, cores_in_health(cluster)
        time.sleep(0.2)
    api.cancel(running[1])
    api.wait_ended(running[1])

    second.stop()  # gone: the one left has the machine again from its next job on
    assert api.wait_ended(api.start(thirty, **ONE_SECOND))["status"] == "completed"
    assert cores_in_health(cluster) == {first.name: cores}

    fixed = cluster.add_worker(MODEL_CORES="1")  # the setting wins over the share
    first.stop()
    final = api.wait_ended(api.start(thirty, **ONE_SECOND))
    assert final["status"] == "completed" and final["worker"] == fixed.name
    assert cores_in_health(cluster) == {fixed.name: 1}


# -- cancel -------------------------------------------------------------------------------------------------------
def test_a_cancelled_job_stops_on_its_worker_which_takes_the_next_job(cluster, videos, thirty):
    cluster.start_api()
    worker = cluster.add_worker()
    pid = worker.process.pid
    api = ClusterApi(cluster)
    cancelled = api.start(videos["long"], **OVER_A_MINUTE)
    api.wait(cancelled, lambda body: body["segmentsDone"] >= 1)
    assert os.listdir(worker.scratch) == [cancelled]  # its scratch copy of the upload

    assert api.cancel(cancelled)["status"] == "cancelled"
    following = api.start(thirty, **ONE_SECOND)
    # The one worker is free for the next job only once the cancelled one has stopped (run out, it would take
    # more than a minute longer).
    final = api.wait_ended(following, timeout=45)
    assert final["status"] == "completed" and final["worker"] == worker.name, final
    assert worker.process.poll() is None and running(pid) and worker.name.endswith(f":{pid}")
    assert api.status(cancelled)["status"] == "cancelled"
    assert_emptied(worker.scratch)  # both scratch copies deleted when their jobs ended


# -- SIGTERM ------------------------------------------------------------------------------------------------------
def assert_resumed_after_first_run(runs: List[int], total: int) -> int:
    """`runs` (which run kept each answer) is a first run's answers (2 or more), then the second run's for the
    rest: nothing asked twice. Returns how many the first run kept."""
    first = runs.count(1)
    assert first >= 2 and runs == [1] * first + [2] * (total - first), runs
    return first


def test_sigterm_hands_the_running_job_back_and_another_worker_resumes_it_after_its_last_answer(
        cluster, thirty):
    cluster.start_api()
    first, second = add_workers(cluster, 2)
    api = ClusterApi(cluster)
    handed = api.start(thirty, **ONE_SECOND)
    stopped = holder(cluster, api.wait(handed, lambda body: body["segmentsDone"] >= 2))
    other = second if stopped is first else first
    # Watched from now on: the tiny model may run the other 28 segments in under a second.
    watcher = threading.Thread(target=api.wait_ended, args=(handed,), daemon=True)
    watcher.start()

    seconds = stopped.terminate()
    assert stopped.process.returncode == 0, stopped.log()
    assert seconds < 10, f"the worker took {seconds:.1f} s to exit"
    assert os.listdir(stopped.data_dir) == []  # its scratch copy went with the job it handed back
    reference = api.start(thirty, **ONE_SECOND)  # the same job, never interrupted

    final = api.wait_ended(handed)
    watcher.join(30)
    assert final["status"] == "completed" and final["worker"] == other.name, final
    assert api.wait_ended(reference)["status"] == "completed"
    total = final["segmentsTotal"]
    done = assert_resumed_after_first_run(answer_runs(cluster, handed), total)
    assert answer_runs(cluster, reference) == [1] * total
    assert comparable(api.results(handed)) == comparable(api.results(reference))
    assert any(f"resumed on worker {other.name} at segment {done + 1}" in message.lower()
               for message in api.messages(handed)), api.messages(handed)


# -- SIGKILL ------------------------------------------------------------------------------------------------------
class KilledMidJob:
    """One model's part of the SIGKILL test: two workers; the one running the job is killed once it has kept
    `kill_at` answers; the same video, uploaded after the kill, runs uninterrupted on the other meanwhile."""

    def __init__(self, cluster: Cluster, video: str, fields: dict, kill_at: int = 2):
        self.cluster, self.video, self.fields, self.kill_at = cluster, video, fields, kill_at
        self.api = ClusterApi(cluster)
        self.workers = [cluster.add_worker(ready=False) for _ in range(2)]

    def kill(self) -> None:
        for worker in self.workers:
            worker.wait_ready(self.cluster.base)
        self.killed = self.api.start(self.video, **self.fields)
        victim = holder(self.cluster, self.api.wait(self.killed, lambda body: body["segmentsDone"] >= self.kill_at))
        victim.kill()
        self.survivor = next(worker for worker in self.workers if worker is not victim)
        self.reference = self.api.start(self.video, **self.fields)

    def check(self) -> dict:
        api = self.api
        final = api.wait_ended(self.killed)
        assert final["status"] == "completed" and final["worker"] == self.survivor.name, final
        assert api.wait_ended(self.reference)["status"] == "completed"
        total = final["segmentsTotal"]
        # The answers kept before the kill were not asked again: the second run went on after them.
        self.runs = answer_runs(self.cluster, self.killed)
        assert self.runs.count(1) >= self.kill_at
        assert_resumed_after_first_run(self.runs, total)
        assert answer_runs(self.cluster, self.reference) == [1] * total
        resumed = api.results(self.killed)
        assert comparable(resumed) == comparable(api.results(self.reference))
        assert resumed["total_segments_analyzed"] == total
        return resumed


def test_a_worker_killed_mid_job_is_replaced_and_the_result_is_that_of_an_uninterrupted_run(
        new_cluster, marker_model_dir, thirty, planted):
    # Both models at once, each on a cluster of its own: their waits for the heartbeat to expire overlap.
    tiny = KilledMidJob(new_cluster(), thirty, ONE_SECOND)
    # The marker job is killed after it has answered for the first planted square (segments 7-9 of 2 s).
    marker = KilledMidJob(new_cluster(marker_model_dir), planted, {"segment_duration": "2", "min_significance": "6"},
                          kill_at=8)
    for part in (tiny, marker):
        part.kill()
    tiny.check()
    found = marker.check()
    # The marker model's answers mean something: the squares planted at 12-18 s and 31-36 s, found by both runs.
    scores = [analysis["significance_score"] for analysis in found["all_analyses"]]
    assert scores == [2] * 6 + [9] * 3 + [2] * 6 + [9] * 3 + [2] * 2, scores
    assert [h["start_time"] for h in found["highlights"]] == [12.0, 14.0, 16.0, 30.0, 32.0, 34.0], found["highlights"]
    assert {run for run, score in zip(marker.runs, scores) if score == 9} == {1, 2}, (marker.runs, scores)


def test_a_job_that_keeps_killing_its_workers_fails_after_three_tries(new_cluster, thirty):
    cluster = new_cluster()
    api = ClusterApi(cluster)
    cluster.add_worker()
    session_id = api.start(thirty, **ONE_SECOND)
    for run in (1, 2, 3):
        # Killed once this run has kept an answer: each try got somewhere, and still its worker died.
        api.wait(session_id, lambda body: run in answer_runs(cluster, session_id))
        holder(cluster, api.status(session_id)).kill()  # read after the answer: names this run's worker
        if run < 3:
            # No worker is left, so the status shows what comes next until one starts.
            api.wait(session_id, lambda body: f"(try {run + 1} of 3)" in body["message"], timeout=60)
            assert "Waiting for a worker" in api.status(session_id)["message"]
            cluster.add_worker(ready=False)
    spare = cluster.add_worker()  # would take a fourth try, if there were one

    final = api.wait_ended(session_id, timeout=60)
    assert final["status"] == "failed", final
    assert final["error"].startswith("The analysis stopped 3 times because the model worker running it died"), final
    # Not run a fourth time: three runs kept answers, and RQ holds the job as failed, none queued.
    assert session_record(cluster, session_id)["runs"] == 3
    assert sorted(set(answer_runs(cluster, session_id))) == [1, 2, 3]
    with cluster.redis.client() as client:
        queue = Queue(QUEUE_NAME, connection=client)
        assert queue.count == 0 and len(FailedJobRegistry(queue=queue)) == 1
    assert jobs_done(cluster, spare) == (0, 0)


# -- review: sharing a machine's cores, attacked ------------------------------------------------------------------
def test_health_never_says_a_worker_has_more_cores_than_its_model_may_use(cluster, thirty):
    """MODEL_CORES above the usable cores: the model is capped at them (ModelRunner), and /health must say so."""
    cores = len(os.sched_getaffinity(0))
    cluster.start_api()
    worker = cluster.add_worker(MODEL_CORES=str(cores + 62))
    api = ClusterApi(cluster)
    assert api.wait_ended(api.start(thirty, **ONE_SECOND))["status"] == "completed"
    assert cores_in_health(cluster)[worker.name] == cores, worker.log()


def fake_worker(cluster: Cluster, name: str) -> Worker:
    """Another worker's entry, as RQ's own API writes it: registered, busy, heart beating now."""
    from rq.worker import WorkerStatus

    client = cluster.redis.client()
    fake = Worker([Queue(QUEUE_NAME, connection=client)], connection=client, name=name)
    fake.register_birth()
    fake.set_state(WorkerStatus.BUSY)
    fake.heartbeat()
    return fake


def test_busy_workers_on_other_machines_do_not_take_this_machines_cores(cluster, thirty):
    import socket

    cores = len(os.sched_getaffinity(0))
    cluster.start_api()
    worker = cluster.add_worker()
    api = ClusterApi(cluster)
    here = socket.gethostname()
    for name in ("elsewhere:4242", f"{here}.example.org:4243", f"{here}:x:4244", f"fe80::1:{here}:4245", "4246"):
        fake_worker(cluster, name)
    assert api.wait_ended(api.start(thirty, **ONE_SECOND))["status"] == "completed"
    assert cores_in_health(cluster)[worker.name] == cores
    # The control: one on this machine (its host name, another pid) does count.
    fake_worker(cluster, f"{here}:999999")
    assert api.wait_ended(api.start(thirty, **ONE_SECOND))["status"] == "completed"
    assert cores_in_health(cluster)[worker.name] == max(1, cores // 2)


def test_redis_restarting_under_a_busy_worker_leaves_it_its_job_its_cores_and_its_cancel(cluster, videos):
    cores = len(os.sched_getaffinity(0))
    cluster.start_api()
    worker = cluster.add_worker()
    api = ClusterApi(cluster)
    session_id = api.start(videos["long"], **OVER_A_MINUTE)
    api.wait(session_id, lambda body: body["segmentsDone"] >= 1)
    for _ in range(2):
        cluster.redis.restart()
        time.sleep(6)  # a heartbeat (with its share of the cores) and the listener's second to listen again
    done = api.status(session_id)["segmentsDone"]
    api.wait(session_id, lambda body: body["segmentsDone"] > done, timeout=30)  # still going on
    assert cores_in_health(cluster)[worker.name] == cores
    started = time.monotonic()
    api.cancel(session_id)
    assert api.wait_ended(session_id, timeout=30)["status"] == "cancelled"
    assert time.monotonic() - started < 10
    assert running(worker.process.pid), worker.log()
    with open(worker.log_path, encoding="utf-8", errors="replace") as handle:
        log = handle.read()
    assert "Traceback" not in log, log[-4000:]
    assert log.count("share of the cores") <= 4, log[-4000:]
