"""The session store: a dict behind a lock, in this one process.

Rules kept here so no caller can break them: progress never decreases, a
terminal status never changes, and reads return copies (mutating one does
not touch the store). Sessions live in memory: a restart forgets them (see
guides/operations.md).
"""
from __future__ import annotations

import copy
import enum
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

from video_analysis.jobs.session_ids import new_session_id


class ProcessingStatus(str, enum.Enum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (ProcessingStatus.COMPLETED, ProcessingStatus.FAILED, ProcessingStatus.CANCELLED)


# The machine word shown as `currentStep` once a session has ended.
_FINAL_STEP = {
    ProcessingStatus.COMPLETED: "done",
    ProcessingStatus.FAILED: "failed",
    ProcessingStatus.CANCELLED: "cancelled",
}


def iso_utc(timestamp: Optional[float]) -> Optional[str]:
    """`2026-11-24T18:00:00.123Z`, or None."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class SessionState:
    session_id: str
    analysis_type: str
    video_name: str
    directory: str  # where this session's files live; never shown to clients
    params: Dict[str, Any] = field(default_factory=dict)
    status: ProcessingStatus = ProcessingStatus.PENDING
    progress: float = 0.0
    current_step: str = "queued"
    message: str = "Waiting for a free worker"
    segments_done: int = 0
    segments_total: Optional[int] = None
    error: Optional[str] = None
    error_kind: Optional[str] = None  # "video", "model" or "internal": how a failure is answered
    result: Optional[dict] = None
    legacy: bool = False  # a synchronous /analyze request; not reachable by id
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    started_at: Optional[float] = None
    finished_at: Optional[float] = None

    def status_body(self) -> dict:
        """The contract's status object."""
        return {
            "sessionId": self.session_id,
            "status": self.status.value,
            "analysisType": self.analysis_type,
            "progress": round(self.progress, 1),
            "currentStep": self.current_step,
            "message": self.message,
            "segmentsDone": self.segments_done,
            "segmentsTotal": self.segments_total,
            "createdAt": iso_utc(self.created_at),
            "updatedAt": iso_utc(self.updated_at),
            "startedAt": iso_utc(self.started_at),
            "finishedAt": iso_utc(self.finished_at),
            "error": self.error,
        }


class SessionNotFound(KeyError):
    pass


class SessionManager:
    """Thread-safe store of `SessionState`s keyed by a random UUID4 string."""

    def __init__(self, ttl_seconds: float = 86400):
        self.ttl_seconds = ttl_seconds
        self._sessions: Dict[str, SessionState] = {}
        self._lock = threading.Lock()

    @staticmethod
    def new_id() -> str:
        return new_session_id()

    def create(self, session_id: str, analysis_type: str, video_name: str, directory: str,
               params: Optional[dict] = None, legacy: bool = False) -> SessionState:
        state = SessionState(session_id, analysis_type, video_name, directory, dict(params or {}), legacy=legacy)
        with self._lock:
            if session_id in self._sessions:
                raise ValueError("session id already in use")
            self._sessions[session_id] = state
            return copy.deepcopy(state)

    def get(self, session_id: str, with_result: bool = True) -> SessionState:
        """A copy of the session; SessionNotFound when unknown.

        `with_result=False` leaves the (possibly large) result out of the
        copy: status polls, cancel and cleanup never need it.
        """
        with self._lock:
            state = self._sessions.get(session_id)
            if state is None:
                raise SessionNotFound(session_id)
            return copy.deepcopy(state if with_result else replace(state, result=None))

    def update(self, session_id: str, **changes) -> SessionState:
        """Apply `changes` unless the session has ended; returns a copy of the result.

        Progress only moves forward; entering a terminal status stamps
        `finished_at` and the final step word, and from then on nothing changes.
        """
        with self._lock:
            state = self._sessions.get(session_id)
            if state is None:
                raise SessionNotFound(session_id)
            if state.status.terminal:
                return copy.deepcopy(state)
            if "progress" in changes:
                changes["progress"] = max(state.progress, min(float(changes["progress"]), 100.0))
            status = changes.get("status")
            now = time.time()
            if status is not None:
                status = ProcessingStatus(status)
                changes["status"] = status
                if status == ProcessingStatus.PROCESSING and state.started_at is None:
                    changes.setdefault("started_at", now)
                if status.terminal:
                    changes["finished_at"] = now
                    changes["current_step"] = _FINAL_STEP[status]
                    if status == ProcessingStatus.COMPLETED:
                        changes["progress"] = 100.0
            if changes.get("progress", state.progress) >= 100.0 and changes.get("status", state.status) != ProcessingStatus.COMPLETED:
                changes["progress"] = min(99.9, changes.get("progress", state.progress))
            updated = replace(state, **changes, updated_at=now)
            self._sessions[session_id] = updated
            return copy.deepcopy(updated)

    def delete(self, session_id: str) -> SessionState:
        with self._lock:
            state = self._sessions.pop(session_id, None)
        if state is None:
            raise SessionNotFound(session_id)
        return state

    def list(self) -> List[SessionState]:
        with self._lock:
            return [copy.deepcopy(s) for s in self._sessions.values()]

    def counts(self) -> Dict[str, int]:
        """How many sessions are in each status (cheap: no copies)."""
        with self._lock:
            totals = {status.value: 0 for status in ProcessingStatus}
            for state in self._sessions.values():
                totals[state.status.value] += 1
            return totals

    def expire(self, now: Optional[float] = None) -> List[SessionState]:
        """Remove and return the sessions that ended more than `ttl_seconds` ago."""
        now = time.time() if now is None else now
        with self._lock:
            expired = [
                sid for sid, s in self._sessions.items()
                if s.finished_at is not None and now - s.finished_at >= self.ttl_seconds
            ]
            return [self._sessions.pop(sid) for sid in expired]
