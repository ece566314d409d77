"""The job queue of cluster mode: admission counted in Redis, jobs on an RQ queue, cancel over Redis pub/sub.

The same methods as the embedded `jobs.queue.JobQueue`, so the web layer
does not know which it has. Admission (MAX_QUEUED_JOBS) counts the
unfinished sessions of the whole cluster plus the uploads every API process
is receiving (a sorted set of slots that expire, so a process that died
gives its slots back). A job is one RQ job naming its session: the model
worker reads everything else from the session (`task.analyse`).

A model worker that dies mid-job is noticed by RQ (its heartbeat stops) and
the job is queued again, at most MAX_TRIES times in all (`reaper`).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Dict, Optional, Set

import redis
from rq import Callback, Queue, Retry

from video_analysis.cluster.connection import PREFIX, QUEUE_NAME, eventually, reachable
from video_analysis.cluster.sessions import UNFINISHED, RedisSessionStore
from video_analysis.cluster.worker_token import TOKEN_KEY
from video_analysis.jobs.queue import QueueFull, ShuttingDown, Slot
from video_analysis.jobs.sessions import ProcessingStatus, SessionNotFound, SessionState
from video_analysis.video import VideoInfo

log = logging.getLogger(__name__)

# A job whose worker died is run again; after this many runs that all killed their worker, it fails.
MAX_TRIES = 3
# The channel a cancel is published on (the session id): the worker running that job stops it.
CANCEL_CHANNEL = PREFIX + "cancel"
_SLOTS = PREFIX + "slots"
# How long an upload being received may hold its slot (a process that died mid-upload gives it back then).
_SLOT_SECONDS = 3600
_POLL_SECONDS = 0.2
TASK = "video_analysis.cluster.task.analyse"
WORKER_LOST = "video_analysis.cluster.task.worker_lost"

# Take a slot when unfinished sessions + live slots are under the bound; atomic, so two API processes
# can never both take the last one.
_RESERVE = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('SCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
return 1
"""


class ClusterSlot(Slot):
    __slots__ = ("id",)

    def __init__(self):
        self.id = uuid.uuid4().hex


def enqueue(queue: Queue, session_id: str, tries_left: int = MAX_TRIES, at_front: bool = False):
    """Put the session's job on the RQ queue; a worker that dies running it uses up one of `tries_left`."""
    retry = Retry(max=tries_left - 1) if tries_left > 1 else None
    return queue.enqueue_call(TASK, args=(session_id,), timeout=-1, result_ttl=600, failure_ttl=86400,
                              retry=retry, on_failure=Callback(WORKER_LOST), at_front=at_front,
                              description=f"analyse session {session_id}")


class ClusterJobQueue:
    def __init__(self, connection: redis.Redis, sessions: RedisSessionStore, max_queued: int = 16,
                 token_fingerprint: Optional[str] = None):
        """`token_fingerprint`: the WORKER_TOKEN's (worker_token.py), published again with every job."""
        self.redis = connection
        self.sessions = sessions
        self.max_queued = max_queued
        self.token_fingerprint = token_fingerprint
        self.queue = Queue(QUEUE_NAME, connection=connection)
        self._reserve = connection.register_script(_RESERVE)
        self._waiting: Set[str] = set()  # legacy requests of this process waiting for their jobs
        self._lock = threading.Lock()
        self._closed = False

    # -- admission -------------------------------------------------------------
    @reachable
    def reserve(self) -> Slot:
        if self._closed:
            raise ShuttingDown()
        slot = ClusterSlot()
        now = time.time()
        if not self._reserve(keys=[UNFINISHED, _SLOTS], args=[now, now + _SLOT_SECONDS, self.max_queued, slot.id]):
            raise QueueFull()
        return slot

    def release(self, slot: Slot) -> None:
        # Now, or once Redis is back: left to expire, a slot of an upload that Redis missed the end of would keep a
        # place in MAX_QUEUED_JOBS for _SLOT_SECONDS.
        eventually(lambda: self.redis.zrem(_SLOTS, slot.id), "give back a queue slot")

    @reachable
    def submit(self, slot: Slot, session_id: str, video_path: str, video_info: Optional[VideoInfo] = None) -> None:
        """Queue the session's job (the session exists, pending); its slot is given back, the session counts now."""
        try:
            if self.token_fingerprint:
                # With every job, not only when the node starts: a worker started before any API server (or
                # after Redis lost its data) checks its token against it before it takes the job.
                self.redis.set(TOKEN_KEY, self.token_fingerprint)
            enqueue(self.queue, session_id)
        except redis.RedisError:
            self._forget_quietly(session_id)
            raise
        self.redis.zrem(_SLOTS, slot.id)
        if self.sessions.get(session_id, with_result=False).legacy:
            with self._lock:
                self._waiting.add(session_id)

    def _forget_quietly(self, session_id: str) -> None:
        """A session whose job could not be queued must not stay pending for ever."""
        try:
            self.sessions.delete(session_id)
        except (SessionNotFound, redis.RedisError):
            pass

    def resume_unfinished(self) -> int:
        return 0  # the jobs wait in RQ's queue, in Redis: nothing of theirs was in this process

    @reachable
    def counts(self) -> Dict[str, int]:
        ids = [raw.decode() for raw in self.redis.smembers(UNFINISHED)]
        running = sum(state.status == ProcessingStatus.PROCESSING for state in self.sessions.get_many(ids))
        return {"pending": len(ids) - running, "processing": running}

    @reachable
    def depth(self) -> int:
        """Jobs waiting in RQ's queue for a worker."""
        return self.queue.count

    # -- control ----------------------------------------------------------------
    def cancel(self, session_id: str, message: str = "Cancelled at your request") -> Optional[SessionState]:
        """Cancel the session; the worker running its job (if any) hears it on CANCEL_CHANNEL and stops it."""
        try:
            state = self.sessions.update(session_id, status=ProcessingStatus.CANCELLED, message=message)
        except SessionNotFound:
            return None
        self._publish_cancel(session_id)
        return state

    @reachable
    def _publish_cancel(self, session_id: str) -> None:
        self.redis.publish(CANCEL_CHANNEL, session_id)

    def wait(self, session_id: str, timeout: Optional[float] = None) -> bool:
        """True once the session has ended (or is gone); polls Redis."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                if self.sessions.get(session_id, with_result=False).status.terminal:
                    self._done_waiting(session_id)
                    return True
            except SessionNotFound:
                self._done_waiting(session_id)
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECONDS if deadline is None else min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    def _done_waiting(self, session_id: str) -> None:
        with self._lock:
            self._waiting.discard(session_id)

    def begin_shutdown(self) -> None:
        """Take no new jobs; cancel this process's legacy requests (their clients are answered now). Async jobs
        go on in the workers: they are nothing of this process's."""
        self._closed = True
        with self._lock:
            waiting = list(self._waiting)
        for session_id in waiting:
            try:
                self.cancel(session_id, "Cancelled because the server is shutting down")
            except redis.RedisError:
                pass

    def shutdown(self, timeout: float = 5.0) -> None:
        self.begin_shutdown()
