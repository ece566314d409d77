"""Finds the jobs of model workers that died and has RQ queue them again (or fail them after MAX_TRIES).

A job's entry in RQ's StartedJobRegistry carries the time its worker's
heartbeat runs out (`worker.HEARTBEAT_TTL_SECONDS` ahead, renewed every few
seconds). RQ's own registry cleanup turns an entry past that time into a
retry, or a failure once its tries are spent, calling `task.worker_lost`
either way; RQ runs it only every ten minutes, so every API process and
every worker runs it every REAP_SECONDS here, one at a time (a short lock).

Right after Redis itself restarted, every live worker's entry may look
expired until its next heartbeat: nothing is reaped until Redis has been up
for longer than a heartbeat's TTL.
"""
from __future__ import annotations

import logging
import threading

import redis
from rq.registry import StartedJobRegistry
from rq.timeouts import TimerDeathPenalty

from video_analysis.cluster.connection import ERRORS, PREFIX, QUEUE_NAME

log = logging.getLogger(__name__)

REAP_SECONDS = 5.0
_LOCK = PREFIX + "reaper"
# Redis must have been up this long (a heartbeat TTL and a beat) before an expired entry counts as a dead worker.
_UPTIME_SECONDS = 20


class Reaper:
    def __init__(self, connection: redis.Redis, owner: str, interval: float = REAP_SECONDS):
        self.redis = connection
        self.owner = owner
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reaper", daemon=True)

    def start(self) -> "Reaper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def reap(self) -> bool:
        """One pass; False when another process holds the turn or Redis restarted too recently."""
        if not self.redis.set(_LOCK, self.owner, nx=True, px=int(self.interval * 1000 * 0.8)):
            return False
        if int(self.redis.info("server").get("uptime_in_seconds", 0)) < _UPTIME_SECONDS:
            return False
        # RQ times the failure callback (`task.worker_lost`) with SIGALRM by default, which only the main thread
        # may set: from this thread every pass raised before it queued anything again. A timer works in any.
        StartedJobRegistry(QUEUE_NAME, connection=self.redis, death_penalty_class=TimerDeathPenalty).cleanup()
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.reap()
            except ERRORS:
                pass  # Redis is away: /health says so; the next pass tries again
            except Exception:  # noqa: BLE001  (the reaper must outlive one bad pass)
                log.exception("Looking for jobs of lost workers failed")
