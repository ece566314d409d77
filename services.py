"""The long-lived parts of one running service, created by `create_app` and shared by its routes."""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from config import Config
from jobs import JobQueue
from session_expiry import SessionSweeper
from session_manager import SessionManager
from storage import Storage
from video_highlight_generator import VideoHighlightGenerator

EXTENSION_KEY = "video_service"


@dataclass
class Services:
    config: Config
    engine: VideoHighlightGenerator
    sessions: SessionManager
    jobs: JobQueue
    storage: Storage
    sweeper: SessionSweeper
    closed: bool = False

    def close(self) -> None:
        """Cancel running jobs, stop the sweeper and the model thread; idempotent."""
        if self.closed:
            return
        self.closed = True
        self.sweeper.stop()
        self.jobs.shutdown(wait=True)
        self.engine.close()


def services() -> Services:
    return current_app.extensions[EXTENSION_KEY]
