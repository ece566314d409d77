"""The model workers as the API sees them: who is there (for /health), and the model's state for admission.

Read from RQ's worker registry in Redis: each `worker.ModelWorker` adds the
model it loaded and the session it is running to its RQ worker entry, and
renews its heartbeat every few seconds. A worker whose heartbeat is older
than SEEN_SECONDS is not counted as there.

`WorkerPool` stands where the embedded mode has its analysis process
(`state()`, `loaded`, `name`, `device`, `prompt_problem`, `close`); it also
runs this API process's reaper (`reaper`).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import List, Optional

import redis
from rq import Queue, Worker
from rq.worker import WorkerStatus

from video_analysis.cluster.connection import ERRORS, QUEUE_NAME
from video_analysis.cluster.reaper import Reaper
from video_analysis.jobs.analysis_process import ModelState
from video_analysis.model.errors import model_display_name

# A worker not heard from for this long is taken as gone (/health is degraded when none is left).
SEEN_SECONDS = 60


def live_workers(connection: redis.Redis, queue: Queue, within_seconds: float) -> List[Worker]:
    """The queue's workers whose last heartbeat is at most `within_seconds` old."""
    now = datetime.now(timezone.utc)
    found = []
    for worker in Worker.all(connection=connection, queue=queue):
        seen = worker.last_heartbeat
        if seen is None:
            continue
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=timezone.utc)
        if (now - seen).total_seconds() <= within_seconds:
            found.append(worker)
    return found


def host_of(worker_name: str) -> str:
    """The machine in a worker's name ("host:pid")."""
    return worker_name.rpartition(":")[0]


def workers_sharing_host(connection: redis.Redis, queue: Queue, me: str, within_seconds: float) -> int:
    """How many workers run models on this worker's machine now, itself included: the others there that are busy,
    or all the others there while jobs wait in the queue (they are about to be)."""
    others = [worker for worker in live_workers(connection, queue, within_seconds)
              if worker.name != me and host_of(worker.name) == host_of(me)]
    if others and queue.count == 0:
        others = [worker for worker in others if worker.get_state() == WorkerStatus.BUSY]
    return 1 + len(others)


class WorkerPool:
    device = "workers"

    def __init__(self, connection: redis.Redis, model: str, owner: str):
        self.redis = connection
        self.name = model_display_name(model)
        self.queue = Queue(QUEUE_NAME, connection=connection)
        self.reaper = Reaper(connection, owner=owner).start()

    def workers(self) -> List[dict]:
        """The workers heard from within SEEN_SECONDS: id ("host:pid"), model, state, job (a session id or None),
        cores (what its model uses, once it has run a job)."""
        found = []
        for worker in live_workers(self.redis, self.queue, SEEN_SECONDS):
            model, session, cores = self.redis.hmget(worker.key, "model", "session", "cores")
            found.append({"id": worker.name, "model": model.decode() if model else None,
                          "state": worker.get_state(), "job": session.decode() if session else None,
                          "cores": int(cores) if cores else None})
        return sorted(found, key=lambda w: w["id"])

    def state(self) -> ModelState:
        """Loaded while at least one worker is there; uploads are taken either way (their jobs wait in the queue)."""
        try:
            loaded = bool(self.workers())
        except ERRORS:
            loaded = False
        return ModelState(loaded, None, None, 0, None)

    @property
    def loaded(self) -> bool:
        return self.state().loaded

    def prompt_problem(self, *args, **kwargs) -> Optional[tuple]:
        return None  # no model here: the worker checks the prompts against its model when the job starts

    def close(self) -> None:
        self.reaper.stop()
