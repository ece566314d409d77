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

from video_analysis.cluster.connection import ERRORS, QUEUE_NAME
from video_analysis.cluster.reaper import Reaper
from video_analysis.jobs.analysis_process import ModelState
from video_analysis.model.errors import model_display_name

# A worker not heard from for this long is taken as gone (/health is degraded when none is left).
SEEN_SECONDS = 60


class WorkerPool:
    device = "workers"

    def __init__(self, connection: redis.Redis, model: str, owner: str):
        self.redis = connection
        self.name = model_display_name(model)
        self.queue = Queue(QUEUE_NAME, connection=connection)
        self.reaper = Reaper(connection, owner=owner).start()

    def workers(self) -> List[dict]:
        """The workers heard from within SEEN_SECONDS: id ("host:pid"), model, state, job (a session id or None)."""
        now = datetime.now(timezone.utc)
        found = []
        for worker in Worker.all(connection=self.redis, queue=self.queue):
            seen = worker.last_heartbeat
            if seen is None:
                continue
            if seen.tzinfo is None:
                seen = seen.replace(tzinfo=timezone.utc)
            if (now - seen).total_seconds() > SEEN_SECONDS:
                continue
            model, session = self.redis.hmget(worker.key, "model", "session")
            found.append({"id": worker.name, "model": model.decode() if model else None,
                          "state": worker.get_state(), "job": session.decode() if session else None})
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
