"""The model worker of cluster mode (`python worker.py`, `make worker`): loads the model once, runs jobs in-process.

RQ's in-process worker (SimpleWorker: no fork per job, so no model load per
job and no fork after the model is loaded), with what it leaves to us:
- **Heartbeats during a job**: a thread renews the worker's and the job's
  heartbeat every HEARTBEAT_SECONDS, with a TTL of HEARTBEAT_TTL_SECONDS, so
  a worker that dies (SIGKILL, power cut) is noticed within that TTL and its
  job is queued again (`reaper`).
- **Stopping**: SIGTERM (or Ctrl-C) stops taking jobs, stops the running one
  within one token or one frame, hands it back to the queue (it resumes on
  another worker after its last finished segment) and exits 0.
- **Cancel**: a thread listens on the cancel channel and stops the running
  job when its session is cancelled, without stopping the worker.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import threading
import time
from typing import Optional

import redis
from rq import Queue, SimpleWorker

from video_analysis.cancellation import CancelToken
from video_analysis.cluster import task
from video_analysis.cluster.connection import ERRORS, QUEUE_NAME, connect
from video_analysis.cluster.queue import CANCEL_CHANNEL
from video_analysis.cluster.reaper import Reaper
from video_analysis.cluster.sessions import RedisSessionStore
from video_analysis.cluster.worker_token import token_problem
from video_analysis.config import Config
from video_analysis.jobs.analysis_process import result_of
from video_analysis.jobs.job_runner import Job, JobRunner
from video_analysis.jobs.session_ids import is_session_id
from video_analysis.jobs.sessions import SessionNotFound

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5
# A worker silent for this long is taken as dead, and its job as abandoned.
HEARTBEAT_TTL_SECONDS = 15
# While Redis cannot be reached, a job waits this long between tries to save its progress.
_PAUSE_SECONDS = 2.0
_PAUSED = ("Paused: the model worker cannot reach Redis to save the analysis's progress. It goes on by itself, from "
           "its last saved segment, once Redis answers again.")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class InProcessAnalysis:
    """The engine of this process behind the analysis process's `run` (`jobs.job_runner` calls it)."""

    loaded = True  # the worker loads the model before it takes a job

    def __init__(self, engine):
        self.engine = engine

    def run(self, job_id, kind, video_path, options, progress=None, cancel=None, answered=None, started=None,
            through_retries=False) -> dict:
        from video_analysis.jobs.analysis_child import run_engine  # the engine and mlx: only in a worker

        if started is not None:
            started()
        return result_of(run_engine(self.engine, kind, video_path, options, progress, answered,
                                    cancel or CancelToken()))


class _WorkerRunner(JobRunner):
    def __init__(self, worker: "ModelWorker", analysis):
        super().__init__(analysis, worker.store, pause_seconds=_PAUSE_SECONDS, paused_message=_PAUSED)
        self.worker = worker

    def started_fields(self) -> dict:
        return {"worker": self.worker.name}


class ModelWorker(SimpleWorker):
    """An RQ in-process worker holding one loaded model; see the module's text for what it adds."""

    def __init__(self, connection: redis.Redis, engine, model_name: str, scratch: str, token: str):
        self.store = RedisSessionStore(connection)
        self.queue = Queue(QUEUE_NAME, connection=connection)
        super().__init__([self.queue], connection=connection, name=worker_name(), worker_ttl=20,
                         job_monitoring_interval=HEARTBEAT_SECONDS)
        self.model_name = model_name
        self.scratch = scratch
        self.token = token
        self.runner = _WorkerRunner(self, InProcessAnalysis(engine))
        self.current: Optional[Job] = None  # the runner's job while one runs (`task.analyse` sets it)
        self.handing_back = False
        self._cancels = threading.Thread(target=self._listen_for_cancels, name="cancels", daemon=True)
        self._reaper = Reaper(connection, owner=self.name)

    # -- what RQ leaves to an in-process worker ----------------------------------------------------
    def get_heartbeat_ttl(self, job) -> int:
        return HEARTBEAT_TTL_SECONDS

    def register_birth(self, *args, **kwargs):
        super().register_birth(*args, **kwargs)
        self.connection.hset(self.key, mapping={"model": self.model_name})

    def execute_job(self, job, queue):
        stop = threading.Event()
        beats = threading.Thread(target=self._beat, args=(job, stop), name="heartbeat", daemon=True)
        self.connection.hset(self.key, "session", job.args[0] if job.args else "")
        beats.start()
        try:
            super().execute_job(job, queue)
        finally:
            stop.set()
            beats.join()
            try:
                self.connection.hdel(self.key, "session")
            except ERRORS:
                pass

    def _beat(self, job, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                self.maintain_heartbeats(job)
                self._stop_if_ended()
            except ERRORS as error:
                log.warning("Heartbeat failed (Redis unreachable): %s", error)
            except Exception:  # noqa: BLE001  (a failed heartbeat must not end the job)
                log.exception("Heartbeat failed")

    def _stop_if_ended(self) -> None:
        """A cancel published while this worker was not listening (Redis away) is found here, a beat later."""
        job = self.current
        if job is None:
            return
        try:
            ended = self.store.get(job.session_id, with_result=False).status.terminal
        except SessionNotFound:
            ended = True
        if ended:
            job.cancel.cancel()

    def request_stop(self, signum, frame):
        """SIGTERM/SIGINT: hand the running job back (stopped within a token or a frame), then exit."""
        self.handing_back = True
        self.runner.closed = True
        job = self.current
        if job is not None:
            job.cancel.cancel()
        super().request_stop(signum, frame)

    def _listen_for_cancels(self) -> None:
        pubsub = None
        while True:
            try:
                if pubsub is None:
                    pubsub = self.connection.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(CANCEL_CHANNEL)
                # A short wait, not listen(): listen() would hit the connection's socket timeout when idle.
                message = pubsub.get_message(timeout=1.0)
                job = self.current
                if message and job is not None and message["data"].decode() == job.session_id:
                    job.cancel.cancel()
            except Exception as error:  # noqa: BLE001  (Redis away, or worse: listen again in a second)
                if not isinstance(error, ERRORS):
                    log.exception("Listening for cancels failed")
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001
                        pass
                pubsub = None
                time.sleep(1.0)

    def work(self, *args, **kwargs):
        task.current_worker = self
        self._cancels.start()
        self._reaper.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            self._reaper.stop()
            task.current_worker = None


def _empty_scratch(scratch: str) -> None:
    """DATA_DIR holds only videos of jobs running here: what a worker killed mid-job left is deleted at start."""
    os.makedirs(scratch, mode=0o700, exist_ok=True)
    for name in os.listdir(scratch):
        if is_session_id(name):
            shutil.rmtree(os.path.join(scratch, name), ignore_errors=True)


def main(argv=None) -> int:
    config = Config.from_env()
    logging.basicConfig(level=config.LOG_LEVEL.upper(),
                        format="%(asctime)s %(levelname)s worker[%(process)d] %(name)s: %(message)s")
    if not config.REDIS_URL or not config.WORKER_TOKEN:
        raise SystemExit("A model worker needs REDIS_URL (the Redis server the API uses) and WORKER_TOKEN (the same "
                         "secret the API servers have); set both and start it again.")
    connection = connect(config.REDIS_URL)
    try:
        problem = token_problem(connection, config.WORKER_TOKEN)
    except ERRORS as error:
        raise SystemExit(f"The Redis server at REDIS_URL could not be reached ({error}); start it, or fix "
                         "REDIS_URL, and start the worker again.") from None
    if problem:
        raise SystemExit(problem)
    from video_analysis.engine.analyzer import VideoHighlightGenerator  # mlx: loaded here, once
    from video_analysis.model.errors import ModelLoadError

    engine = VideoHighlightGenerator(config.MODEL)
    started = time.perf_counter()
    try:
        engine.runner.wait_until_loaded()
    except ModelLoadError as error:
        engine.close()
        raise SystemExit(f"The model worker could not load MODEL: {error}") from None
    log.info("Model %s loaded in %.1f s; taking jobs", engine.runner.name, time.perf_counter() - started)
    scratch = os.path.abspath(config.DATA_DIR)
    _empty_scratch(scratch)
    worker = ModelWorker(connection, engine, engine.runner.name, scratch, config.WORKER_TOKEN)
    try:
        worker.work(logging_level=config.LOG_LEVEL.upper())
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
