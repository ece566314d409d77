"""The session store's entry point: `SessionManager`, `ProcessingStatus` and `SessionState`.

The store itself is `video_analysis.jobs.sessions`.
"""
from video_analysis.jobs.sessions import ProcessingStatus, SessionManager, SessionState

__all__ = ["SessionManager", "ProcessingStatus", "SessionState"]
