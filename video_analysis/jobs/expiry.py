"""The sweeper: a background thread that forgets ended sessions after their TTL, files included."""
from __future__ import annotations

import logging
import threading

from video_analysis.jobs.sessions import SessionManager
from video_analysis.jobs.storage import Storage

log = logging.getLogger(__name__)


class SessionSweeper:
    def __init__(self, sessions: SessionManager, storage: Storage, interval_seconds: float):
        self.sessions = sessions
        self.storage = storage
        self.interval = interval_seconds
        self._said = None  # the state database problem last logged
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="session-sweeper", daemon=True)

    def start(self) -> "SessionSweeper":
        self._thread.start()
        return self

    def sweep(self) -> int:
        """Expire what is due now; returns how many sessions went. Says once if the state database went away."""
        problem = self.sessions.file_problem()
        if problem and problem != self._said:
            log.error(problem)
        self._said = problem
        expired = self.sessions.expire()
        for state in expired:  # cluster mode: a session whose keys Redis expired first is known by its id only
            self.storage.remove(state.directory or self.storage.session_dir(state.session_id))
        if expired:
            log.info("Expired %d session(s)", len(expired))
        return len(expired)

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001  (the sweeper must outlive one bad pass)
                log.exception("Session sweep failed")
