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
- **Sharing a machine**: workers on one machine split its cores evenly
  among those running jobs (`MODEL_CORES` fixes a worker's number instead).
  A worker works out its share when a job starts and at each heartbeat, and
  again whenever another worker on its machine starts or ends a job (they
  say so on CORES_CHANNEL); see `workers_sharing_host`.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from typing import Optional

import redis
from rq import Queue, SimpleWorker, worker_registration

from video_analysis.cancellation import CancelToken
from video_analysis.cluster import task
from video_analysis.cluster.connection import ERRORS, PREFIX, QUEUE_NAME, connect
from video_analysis.cluster.processes import alive
from video_analysis.cluster.queue import CANCEL_CHANNEL
from video_analysis.cluster.reaper import Reaper
from video_analysis.cluster.sessions import RedisSessionStore
from video_analysis.cluster.video_fetch import NodeUnreachable, VideoGone, send_outputs
from video_analysis.cluster.worker_token import token_problem
from video_analysis.cluster.workers import host_of, workers_sharing_host
from video_analysis.config import Config
from video_analysis.engine.outputs import DEFAULT_MAX_REEL_SECONDS, without_outputs
from video_analysis.jobs.analysis_process import result_of
from video_analysis.jobs.job_runner import REEL_FILE, Job, JobRunner, sent_outputs
from video_analysis.jobs.sessions import SessionNotFound
from video_analysis.model.cores import fair_share
from video_analysis.model.cpu_priority import call_as_compute, yield_cpu_to_other_work

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5
# A worker that starts or ends a job publishes its name ("host:pid") here: the busy workers on that machine work out their
# share of its cores again at once, not at their next heartbeat (a short job may end before that).
CORES_CHANNEL = PREFIX + "cores"
# RQ waits up to 5 s in a blocking pop for the next job (worker_ttl 20 - 15) and wants a socket timeout longer than
# that; it raises the pool's setting, but only for connections made after it, so it is set before the first one.
SOCKET_TIMEOUT_SECONDS = 30
# A worker silent for this long is taken as dead, and its job as abandoned.
HEARTBEAT_TTL_SECONDS = 15
# SIGTERM: how long the running job has to stop by itself (a token, a frame) before the worker hands it back
# anyway and exits; a full-size model's vision step on a CPU cannot be interrupted and takes longer.
STOP_GRACE_SECONDS = 6.0
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
            through_retries=False, rendering=None) -> dict:
        from video_analysis.jobs.analysis_child import run_engine  # the engine and mlx: only in a worker

        if started is not None:
            started()
        cancel = cancel or CancelToken()
        # on a thread of the idle CPU class: this one (RQ's, and SIGTERM's) stays in the normal one
        return result_of(call_as_compute(run_engine, self.engine, kind, video_path, options, progress, answered,
                                         cancel, rendering, on_interrupt=cancel.cancel,
                                         grace_seconds=STOP_GRACE_SECONDS))


class _ThisRun:
    """The session store as the running job's run writes to it. Once the run has started, a write made after another
    run of the same session started raises Superseded, and the runner stops writing: this worker was taken for dead
    (paused, or cut off from Redis, for longer than its heartbeat's TTL) and another worker resumed the job; its
    late answers would fail the session that run is about to complete."""

    def __init__(self, store: RedisSessionStore):
        self.store = store
        self.session_id: Optional[str] = None
        self.run: Optional[int] = None  # the session's `runs` once this run has started

    def __getattr__(self, name):
        return getattr(self.store, name)

    def begin(self, session_id: str) -> None:
        self.session_id, self.run = session_id, None

    def superseded(self, state) -> bool:
        return state.session_id == self.session_id and self.run is not None and state.runs != self.run

    def _expected(self, session_id: str, changes: dict) -> Optional[int]:
        if session_id != self.session_id:
            return None
        return changes["runs"] - 1 if "runs" in changes else self.run  # the start itself: no run started meanwhile

    def update(self, session_id: str, saved: bool = True, **changes):
        state = self.store.update(session_id, saved, run=self._expected(session_id, changes), **changes)
        if session_id == self.session_id and "runs" in changes:
            self.run = state.runs
        return state

    def record_answer(self, session_id: str, position: int, answer: str, **changes):
        return self.store.record_answer(session_id, position, answer, run=self._expected(session_id, changes),
                                        **changes)


class _WorkerRunner(JobRunner):
    """The job runner of a worker: its name goes into the session, and its writes can be stopped for good
    (`freeze`) before the worker hands a job back that did not stop in time."""

    def __init__(self, worker: "ModelWorker", analysis, max_reel_seconds: float):
        super().__init__(analysis, _ThisRun(worker.store), pause_seconds=_PAUSE_SECONDS, paused_message=_PAUSED,
                         max_reel_seconds=max_reel_seconds)
        self.worker = worker
        self._writes = threading.Lock()
        self.frozen = False

    def started_fields(self) -> dict:
        return {"worker": self.worker.name}

    def deliver(self, job, session, outputs, result: dict) -> dict:
        """The thumbnails and reel go to the API node that keeps the session (this worker's scratch is deleted when
        the job ends); ones that cannot get there are left out of the result, which says why."""
        if outputs is None:
            return result
        names = sent_outputs(outputs, result)
        directory = os.path.dirname(outputs.thumbnails_dir)
        thumbnails = [name for name in names if name != REEL_FILE]
        try:
            send_outputs(session.node, session.session_id, self.worker.token, directory, thumbnails, job.cancel)
        except (NodeUnreachable, VideoGone) as error:
            log.warning("Session %s: its thumbnails could not be sent: %s", session.session_id, error)
            return without_outputs(result, f"The thumbnails and the reel were made but could not be sent to the API "
                                           f"server: {error}")
        if REEL_FILE in names:  # apart: a reel that cannot get there leaves the thumbnails that did
            try:
                send_outputs(session.node, session.session_id, self.worker.token, directory, [REEL_FILE], job.cancel)
            except (NodeUnreachable, VideoGone) as error:
                log.warning("Session %s: its reel could not be sent: %s", session.session_id, error)
                result["reel"] = None
                result["reel_refused"] = f"The reel was made but could not be sent to the API server: {error}"
        return result

    def freeze(self) -> None:
        """From now on the job writes nothing; returns once a write under way has ended."""
        with self._writes:
            self.frozen = True

    def update(self, job, answer=None, **changes):
        with self._writes:
            if not self.frozen:
                return super().update(job, answer, **changes)
        job.cancel.cancel()
        return None

    def finish(self, *args, **kwargs) -> bool:
        with self._writes:
            return True if self.frozen else super().finish(*args, **kwargs)


class ModelWorker(SimpleWorker):
    """An RQ in-process worker holding one loaded model; see the module's text for what it adds."""

    # RQ waits for Redis between tries to take a job, doubling the wait up to this: a worker notices that Redis
    # is back within seconds, not a minute.
    max_connection_wait_time = float(HEARTBEAT_SECONDS)

    def __init__(self, connection: redis.Redis, engine, model_name: str, scratch: str, token: str,
                 max_reel_seconds: float = DEFAULT_MAX_REEL_SECONDS, model_cores: int = 0):
        self.store = RedisSessionStore(connection)
        self.queue = Queue(QUEUE_NAME, connection=connection)
        super().__init__([self.queue], connection=connection, name=worker_name(), worker_ttl=20,
                         job_monitoring_interval=HEARTBEAT_SECONDS)
        self.model_name = model_name
        self.model = engine.runner
        self.model_cores = model_cores  # MODEL_CORES; 0: a fair share of this machine (`share_cores`)
        self.scratch = scratch
        self.token = token
        self.runner = _WorkerRunner(self, InProcessAnalysis(engine), max_reel_seconds)
        self.current: Optional[Job] = None  # the runner's job while one runs (`task.analyse` sets it)
        self.rq_job = None  # the RQ job running, while one runs
        self.handing_back = False
        self.problem: Optional[str] = None  # why it stopped by itself, for a person (`stop_for`)
        self.handed_back = threading.Lock()  # held by the one hand-back of the running job (task.hand_back)
        self._listener = threading.Thread(target=self._listen, name="cancels-and-cores", daemon=True)
        self._reaper = Reaper(connection, owner=self.name)

    # -- what RQ leaves to an in-process worker ----------------------------------------------------
    def get_heartbeat_ttl(self, job) -> int:
        return HEARTBEAT_TTL_SECONDS

    def register_birth(self, *args, **kwargs):
        super().register_birth(*args, **kwargs)
        self.connection.hset(self.key, mapping={"model": self.model_name})

    # RQ's work loop rides out an absent Redis only while it waits for a job; a Redis error anywhere else (the
    # end of a job it books, the heartbeat and state it writes then, the suspension check) ends the loop, and the
    # worker with it. These writes only tell who is there: a worker goes on without them, and waits for Redis with
    # the next job.
    def heartbeat(self, timeout=None, pipeline=None):
        try:
            super().heartbeat(timeout, pipeline)
            # Written again at each beat: after Redis was away long enough for this worker's key to expire, or lost
            # its data (restarted without AOF, flushed), RQ's heartbeat makes the key again with its own fields only,
            # and the registry the API lists workers from (/health) would never name this worker again.
            connection = pipeline if pipeline is not None else self.connection
            connection.hset(self.key, mapping={"model": self.model_name, "state": self.get_state()})
            worker_registration.register(self, connection)
        except ERRORS as error:
            log.warning("Heartbeat failed (Redis unreachable): %s", error)

    def set_state(self, *args, **kwargs):
        try:
            super().set_state(*args, **kwargs)
        except ERRORS as error:
            log.warning("Could not record the worker's state (Redis unreachable): %s", error)

    def check_for_suspension(self, burst: bool):
        try:
            super().check_for_suspension(burst)
        except ERRORS:
            pass  # Redis is away: the wait for the next job waits for it too

    def run_maintenance_tasks(self):
        try:
            super().run_maintenance_tasks()
        except ERRORS as error:
            log.warning("RQ's maintenance was put off (Redis unreachable): %s", error)

    def execute_job(self, job, queue):
        self.rq_job = job
        stop = threading.Event()
        beats = threading.Thread(target=self._beat, args=(job, stop), name="heartbeat", daemon=True)
        try:
            self.connection.hset(self.key, "session", job.args[0] if job.args else "")
        except ERRORS:
            pass  # only /health's "job"; the job itself waits for Redis (`task`)
        beats.start()
        try:
            super().execute_job(job, queue)
        except ERRORS as error:
            # Redis went away while RQ booked the job's end: the session holds its outcome already (a job left in
            # RQ's started registry is run again by the reaper, and ends at once as its session has).
            log.warning("RQ could not book the end of job %s (Redis unreachable): %s", job.id, error)
        finally:
            stop.set()
            beats.join()
            self.rq_job = None
            self.announce_cores()  # RQ has put it back to idle: the busy ones left here may take its cores
            try:
                self.connection.hdel(self.key, "session")
            except ERRORS:
                pass

    def _beat(self, job, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                self.maintain_heartbeats(job)
                self._stop_if_ended()
                self.share_cores()
            except ERRORS as error:
                log.warning("Heartbeat failed (Redis unreachable): %s", error)
            except Exception:  # noqa: BLE001  (a failed heartbeat must not end the job)
                log.exception("Heartbeat failed")

    def announce_cores(self) -> None:
        """Tell the other workers on this machine that this one started or ended a job."""
        try:
            self.connection.publish(CORES_CHANNEL, self.name)
        except redis.RedisError:
            pass  # they work their share out again at their next heartbeat anyway

    def share_cores(self) -> None:
        """Give the model this worker's share of the machine's cores (from its next request on), and say so in
        the worker's entry (/health). Without Redis the share stays as it was."""
        try:
            wanted = self.model_cores or fair_share(workers_sharing_host(self.connection, self.queue, self.name,
                                                                         HEARTBEAT_TTL_SECONDS))
            cores = self.model.share_cores(wanted)  # what it will use: at most the cores it may run on
            self.connection.hset(self.key, "cores", cores)
        except redis.RedisError as error:  # unreachable, or refusing writes: the share stays as it was
            log.warning("Could not work out this worker's share of the cores (Redis: %s)", error)

    def _stop_if_ended(self) -> None:
        """A cancel published while this worker was not listening (Redis away) is found here, a beat later; so is
        another worker's run of the same job (this one was taken for dead)."""
        job = self.current
        if job is None:
            return
        try:
            state = self.store.get(job.session_id, with_result=False)
            ended = state.status.terminal or self.runner.sessions.superseded(state)
        except SessionNotFound:
            ended = True
        if ended:
            job.cancel.cancel()

    def request_stop(self, signum, frame):
        """SIGTERM/SIGINT: hand the running job back (stopped within a token or a frame), then exit."""
        first = not self.handing_back
        self.handing_back = True
        self.runner.closed = True
        job = self.current
        if job is not None:
            job.cancel.cancel()
            if first:
                threading.Thread(target=self._stop_in_time, args=(job,), name="stop-in-time", daemon=True).start()
        super().request_stop(signum, frame)

    def stop_for(self, problem: str) -> None:
        """Stop taking jobs, as on SIGTERM, for a reason a person must fix: `main` exits 1 with `problem`."""
        log.error(problem)
        self.problem = problem
        self.request_stop(signal.SIGTERM, None)

    def _stop_in_time(self, job: Job) -> None:
        """A job still running STOP_GRACE_SECONDS after SIGTERM (the model is inside a step it cannot leave) is
        handed back from here, its writes stopped first, and the process exits 0 at once."""
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while self.current is job and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.current is not job:
            return  # it stopped by itself: the task handed it back
        self.runner.freeze()
        rq_job = self.rq_job
        try:
            task.hand_back(self, job.session_id, rq_job)
            if rq_job is not None:  # not a job of a worker that died: nothing for the reaper to find
                rq_job.started_job_registry.remove_executions(rq_job)
            self.register_death()
        except Exception:  # noqa: BLE001  (exit all the same: the reaper queues the job again)
            log.exception("Handing job %s back failed; it is queued again once its heartbeat runs out",
                          job.session_id)
        shutil.rmtree(self.scratch, ignore_errors=True)
        logging.shutdown()
        os._exit(0)

    def _listen(self) -> None:
        """Cancels (the running job's session) and other workers' job starts and ends (on this machine)."""
        pubsub = None
        while True:
            try:
                if pubsub is None:
                    pubsub = self.connection.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(CANCEL_CHANNEL, CORES_CHANNEL)
                # A short wait, not listen(): listen() would hit the connection's socket timeout when idle.
                message = pubsub.get_message(timeout=1.0)
                if not message:
                    continue
                job = self.current
                if message["channel"].decode() == CORES_CHANNEL:
                    sender = message["data"].decode()
                    # Another worker of this machine (this one works out its own share itself), heard even between
                    # jobs: this one may be starting one.
                    if sender != self.name and host_of(sender) == host_of(self.name):
                        self.share_cores()
                elif job is not None and message["data"].decode() == job.session_id:
                    job.cancel.cancel()
            except Exception as error:  # noqa: BLE001  (Redis away, or worse: listen again in a second)
                if not isinstance(error, ERRORS):
                    log.exception("Listening for cancels and job starts failed")
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001
                        pass
                pubsub = None
                time.sleep(1.0)

    def work(self, *args, **kwargs):
        task.current_worker = self
        self._listener.start()
        self._reaper.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            self._reaper.stop()
            task.current_worker = None


def scratch_directory(data_dir: str) -> str:
    """This worker's own scratch directory, DATA_DIR/worker-<pid>: workers sharing a DATA_DIR (or a worker whose
    DATA_DIR is, by mistake, an API server's) never touch each other's files. Those of workers that are gone
    (killed mid-job) are deleted now."""
    root = os.path.abspath(data_dir)
    os.makedirs(root, mode=0o700, exist_ok=True)
    for name in os.listdir(root):
        found = re.fullmatch(r"worker-(\d+)", name)
        if found and not alive(int(found.group(1))):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    scratch = os.path.join(root, f"worker-{os.getpid()}")
    os.makedirs(scratch, mode=0o700, exist_ok=True)
    return scratch


def main(argv=None) -> int:
    config = Config.from_env()
    logging.basicConfig(level=config.LOG_LEVEL.upper(),
                        format="%(asctime)s %(levelname)s worker[%(process)d] %(name)s: %(message)s")
    if not config.REDIS_URL or not config.WORKER_TOKEN:
        raise SystemExit("A model worker needs REDIS_URL (the Redis server the API uses) and WORKER_TOKEN (the same "
                         "secret the API servers have); set both and start it again.")
    connection = connect(config.REDIS_URL, socket_timeout=SOCKET_TIMEOUT_SECONDS)
    try:
        problem = token_problem(connection, config.WORKER_TOKEN)
    except ERRORS as error:
        raise SystemExit(f"The Redis server at REDIS_URL could not be reached ({error}); start it, or fix "
                         "REDIS_URL, and start the worker again.") from None
    if problem:
        raise SystemExit(problem)
    from video_analysis.engine.analyzer import VideoHighlightGenerator  # mlx: loaded here, once
    from video_analysis.model.errors import ModelLoadError

    yield_cpu_to_other_work()  # the computing threads give way to an API process, Redis or nginx on this machine

    engine = VideoHighlightGenerator(config.MODEL)
    started = time.perf_counter()
    try:
        engine.runner.wait_until_loaded()
    except ModelLoadError as error:
        engine.close()
        raise SystemExit(f"The model worker could not load MODEL: {error}") from None
    log.info("Model %s loaded in %.1f s; taking jobs", engine.runner.name, time.perf_counter() - started)
    scratch = scratch_directory(config.DATA_DIR)
    worker = ModelWorker(connection, engine, engine.runner.name, scratch, config.WORKER_TOKEN, config.MAX_REEL_SECONDS,
                         config.MODEL_CORES)
    try:
        worker.work(logging_level=config.LOG_LEVEL.upper())
    finally:
        engine.close()
        shutil.rmtree(scratch, ignore_errors=True)
    if worker.problem:
        raise SystemExit(worker.problem)
    if not worker.handing_back:  # RQ's loop ended by itself (its log says why): a supervisor should start it again
        raise SystemExit("The model worker stopped taking jobs although no one asked it to (see its log above); "
                         "start it again.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
