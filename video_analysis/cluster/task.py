"""The RQ job of cluster mode: analyse one session on this model worker, and what happens when a worker is lost.

`analyse(session_id)` runs in the model worker's own process (RQ's
in-process worker, `worker.ModelWorker`), with the model it loaded once. It
reads the session from Redis, fetches the upload from the API node that
keeps it, and runs the job through `jobs.job_runner` as the embedded mode
does: progress, each answer and the result go to Redis. A session that ran
before (on a worker that stopped or died) goes on after its last answer.

`worker_lost` is RQ's failure callback: when a worker's heartbeat has
expired mid-job (`reaper`), the job is queued again while tries are left,
and the session says so; after MAX_TRIES the session fails with a sentence.
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import Optional

from rq import get_current_job

from video_analysis.cluster.queue import MAX_TRIES, enqueue
from video_analysis.cluster.sessions import RedisSessionStore
from video_analysis.cluster.video_fetch import NodeUnreachable, VideoGone, fetch_video
from video_analysis.cluster.worker_token import token_problem
from video_analysis.jobs.job_runner import Job
from video_analysis.jobs.messages import INTERNAL, VIDEO
from video_analysis.jobs.sessions import ProcessingStatus, SessionNotFound
from video_analysis.cancellation import Cancelled
from video_analysis.video import VideoInfo

log = logging.getLogger(__name__)

# The model worker running in this process (set by worker.ModelWorker before it takes jobs).
current_worker = None


def analyse(session_id: str) -> Optional[str]:
    """Run the session's job here; returns how it ended (RQ keeps it as the job's result, for operators)."""
    worker = current_worker
    if worker is None:
        raise RuntimeError("analyse runs in a model worker (python worker.py), which loads the model first")
    store: RedisSessionStore = worker.store
    try:
        state = store.get(session_id, with_result=False)
    except SessionNotFound:
        return "gone"  # cleaned up while it waited
    if state.status.terminal:
        return state.status.value  # cancelled while it waited
    problem = token_problem(worker.connection, worker.token)
    if problem:  # every fetch would be refused: the job goes back for a worker that has the right token
        worker.stop_for(problem)
        return hand_back(worker, session_id, get_current_job())
    worker.share_cores()  # RQ counts this worker busy now: the others on its machine hear it and count it too
    worker.announce_cores()
    worker.runner.sessions.begin(session_id)
    scratch = os.path.join(worker.scratch, session_id)
    job = Job(session_id, "", VideoInfo(**state.video_info) if state.video_info else None,
              resumed_because=f"on worker {worker.name}")
    worker.current = job
    try:
        try:
            job.video_path = fetch_video(state.node, session_id, worker.token, scratch, job.cancel)
        except (VideoGone, NodeUnreachable) as error:
            kind = VIDEO if isinstance(error, VideoGone) else INTERNAL
            worker.runner.finish(session_id, ProcessingStatus.FAILED, "The analysis failed", str(error), kind)
            return "failed"
        except Cancelled:
            pass  # cancelled, or the worker stops: the runner below sees the token and does the rest
        if job.video_path:
            worker.runner.run(job)
        if worker.handing_back:
            return hand_back(worker, session_id, get_current_job())
        return "ended"
    finally:
        worker.current = None
        shutil.rmtree(scratch, ignore_errors=True)


def hand_back(worker, session_id: str, rq_job) -> str:
    """The worker is stopping (SIGTERM) mid-job: queue the job again at the front, with the tries it had left.
    Once per job, whoever calls first (the task as the job stops, or the worker when it did not stop in time)."""
    if not worker.handed_back.acquire(blocking=False):
        return "handed back"
    store = worker.store
    try:
        state = store.get(session_id, with_result=False)
    except SessionNotFound:
        return "gone"
    if state.status.terminal:
        return state.status.value
    tries_left = MAX_TRIES if rq_job is None else (rq_job.retries_left or 0) + 1
    enqueue(worker.queue, session_id, tries_left=tries_left, at_front=True)
    done = len(store.answers(session_id))
    store.update(session_id, message=f"Waiting for a worker: the worker running it ({worker.name}) stopped; it goes "
                                     f"on after segment {done}" if done else
                                     f"Waiting for a worker: the worker running it ({worker.name}) stopped")
    log.info("Handed session %s back to the queue after %d segment(s)", session_id, done)
    return "handed back"


def worker_lost(job, connection, exc_type, exc_value, traceback) -> None:
    """RQ's failure callback: the worker running `job` died (or the job raised). Queued again while tries are
    left (RQ does that after this returns); the session says which try comes, or fails after the last."""
    session_id = job.args[0]
    store = RedisSessionStore(connection)
    try:
        state = store.get(session_id, with_result=False)
    except SessionNotFound:
        return
    lost = f"the worker running it ({state.worker})" if state.worker else "the worker running it"
    if job.retries_left:
        tried = MAX_TRIES - job.retries_left
        store.update(session_id, message=f"Waiting for a worker: {lost} stopped answering, so it runs again and "
                                         f"goes on after its last finished segment (try {tried + 1} of {MAX_TRIES})")
        return
    store.update(session_id, status=ProcessingStatus.FAILED, message="The analysis failed", error_kind=INTERNAL,
                 error=f"The analysis stopped {MAX_TRIES} times because the model worker running it died (it may "
                       "need more memory than the workers have), so it is not tried again. Try a shorter video, or "
                       "ask an operator to look at the workers' logs.")
