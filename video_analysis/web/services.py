"""The long-lived parts of one running service, created by `create_app` and shared by its routes."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from flask import current_app

from video_analysis.jobs.analysis_process import AnalysisProcess
from video_analysis.config import Config
from video_analysis.jobs.queue import JobQueue
from video_analysis.jobs.expiry import SessionSweeper
from video_analysis.jobs.sessions import SessionManager
from video_analysis.jobs.storage import Storage

EXTENSION_KEY = "video_service"


@dataclass
class Services:
    config: Config
    analysis: AnalysisProcess  # the child process holding the model
    sessions: SessionManager
    jobs: JobQueue
    storage: Storage
    sweeper: SessionSweeper
    legacy_requests: threading.BoundedSemaphore
    owns_analysis: bool = True  # False when the process was handed in (tests share one)
    closed: bool = False
    _close_lock: threading.Lock = field(default_factory=threading.Lock)

    def begin_shutdown(self) -> None:
        """Take no new jobs and cancel the running ones, so requests waiting on them are answered now."""
        self.jobs.begin_shutdown()

    def close(self) -> None:
        """Cancel jobs, stop the sweeper and the analysis process; idempotent."""
        with self._close_lock:
            if self.closed:
                return
            self.closed = True
        self.sweeper.stop()
        self.jobs.shutdown()
        if self.owns_analysis:
            self.analysis.close()
        self.sessions.close()


def services() -> Services:
    return current_app.extensions[EXTENSION_KEY]
