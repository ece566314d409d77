"""The session store: a dict behind a lock, in this one process, written through to SQLite (state_db.py).

Rules kept here so no caller can break them: progress never decreases, a
terminal status never changes, and reads return copies (mutating one does
not touch the store). Every change is committed to the database before it
is in the dict, so nothing a client has seen is lost to a restart: the
store is read back from the database at start (`SessionManager(database=)`).

Two locks: writers take `_write_lock` for the whole change (its database
commit included, a few milliseconds with fsync), readers only `_lock`, held
for the dict lookups: a status poll never waits for the disk.
"""
from __future__ import annotations

import copy
import enum
import logging
import os
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple

from video_analysis.jobs.session_ids import new_session_id
from video_analysis.jobs.state_db import IN_MEMORY, StateDatabase, unusable

log = logging.getLogger(__name__)


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
    legacy: bool = False  # a synchronous /analyze request; not reachable by id, never written to disk
    video_path: Optional[str] = None  # the upload the job reads
    video_info: Optional[dict] = None  # intake's probe of it (VideoInfo.as_dict): a resume need not probe again
    runs: int = 0  # how many times its job has started: 2 and more after a restart resumed it
    resumed_at: Optional[int] = None  # the segment (1-based) the current run resumed at, after a restart
    idempotency_key: Optional[str] = None  # the upload's Idempotency-Key, and what it was sent with
    fingerprint: Optional[str] = None
    upload_message: Optional[str] = None  # the 202's message: an upload sent again gets the first answer again
    worker: Optional[str] = None  # cluster mode: "host:pid" of the model worker running (or that ran) the job
    node: Optional[str] = None  # cluster mode: the API node keeping the upload (its API_URL), where workers fetch it
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    started_at: Optional[float] = None
    finished_at: Optional[float] = None

    def status_body(self, cluster: bool = False) -> dict:
        """The contract's status object; in cluster mode with `worker` ("host:pid", null while pending)."""
        body = {
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
        if cluster:
            body["worker"] = self.worker
        return body

    def to_record(self) -> dict:
        record = asdict(self)
        record["status"] = self.status.value
        return record

    @classmethod
    def from_record(cls, record: dict) -> "SessionState":
        known = {f.name for f in fields(cls)}
        values = {name: value for name, value in record.items() if name in known}
        values["status"] = ProcessingStatus(values["status"])
        return cls(**values)


def changed_state(state: SessionState, changes: dict) -> SessionState:
    """`state` with `changes` applied by the store's rules: progress only moves forward; entering a terminal status
    stamps `finished_at` and the final step word (completed: 100 %)."""
    changes = dict(changes)
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
    return replace(state, **changes)


class SessionNotFound(KeyError):
    pass


class KeyInUse(Exception):
    """An upload with this Idempotency-Key is still being received."""


class StateNotSaved(OSError):
    """The database refused the write (disk full, not writable): the change was not made."""


class StoreUnavailable(StateNotSaved):
    """The session store cannot be reached (cluster mode: Redis is down); nothing was read or changed.

    The message is a sentence for a person; the web layer answers it with 503 and Retry-After.
    """


class SessionManager:
    """Thread-safe store of `SessionState`s keyed by a random UUID4 string, written through to `database`.

    `database`: a StateDatabase (its sessions are loaded now), a path to one, or None to keep nothing on disk.
    """

    def __init__(self, ttl_seconds: float = 86400, database: "StateDatabase | str | None" = None):
        self.ttl_seconds = ttl_seconds
        self.database = StateDatabase(database or IN_MEMORY) if not isinstance(database, StateDatabase) else database
        self._sessions: Dict[str, SessionState] = {}
        self._answers: Dict[str, List[str]] = {}  # each unfinished or ended session's answers, segment by segment
        self._by_key: Dict[str, str] = {}  # Idempotency-Key -> session id
        self._receiving: set = set()  # keys of uploads still being received
        self._lock = threading.Lock()  # the dicts
        self._write_lock = threading.RLock()  # one change at a time, database commit included
        try:
            for session_id, stored in self.database.load():
                state = SessionState.from_record(stored.state)
                self._sessions[session_id] = state
                self._answers[session_id] = stored.answers
                if state.idempotency_key:
                    self._by_key[state.idempotency_key] = session_id
        except (sqlite3.DatabaseError, ValueError, KeyError, TypeError) as error:  # damaged, or edited by hand
            self.database.close()
            raise unusable(self.database.path, error) from None

    @staticmethod
    def new_id() -> str:
        return new_session_id()

    def close(self) -> None:
        with self._write_lock:
            self.database.close()

    @property
    def durable(self) -> bool:
        """True when sessions outlive the process (an upload must then be on the disk before its session)."""
        return self.database.durable

    def file_problem(self) -> Optional[str]:
        """A sentence when the state database's file went away under the service, else None."""
        return self.database.file_problem()

    # -- reading ------------------------------------------------------------------------------------------
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

    def answers(self, session_id: str) -> List[str]:
        """The model's answers for the session's finished segments, in order (a copy)."""
        with self._lock:
            if session_id not in self._sessions:
                raise SessionNotFound(session_id)
            return list(self._answers.get(session_id, ()))

    def list(self) -> List[SessionState]:
        with self._lock:
            return [copy.deepcopy(s) for s in self._sessions.values()]

    def unfinished(self) -> List[SessionState]:
        """Sessions whose job has not ended (after a restart: the jobs to run again), running ones first,
        then in the order they were created."""
        with self._lock:
            waiting = [copy.deepcopy(s) for s in self._sessions.values() if not s.status.terminal and not s.legacy]
        return sorted(waiting, key=lambda s: (s.status != ProcessingStatus.PROCESSING, s.created_at))

    def counts(self) -> Dict[str, int]:
        """How many sessions are in each status (cheap: no copies)."""
        with self._lock:
            totals = {status.value: 0 for status in ProcessingStatus}
            for state in self._sessions.values():
                totals[state.status.value] += 1
            return totals

    # -- Idempotency-Key --------------------------------------------------------------------------------
    def claim_key(self, key: str) -> Optional[SessionState]:
        """The session created with `key`, if any (a copy); else the key is held for an upload now being
        received (KeyInUse if one already is) until `create` uses it or `release_key` gives it back."""
        with self._lock:
            session_id = self._by_key.get(key)
            if session_id is not None:
                return copy.deepcopy(replace(self._sessions[session_id], result=None))
            if key in self._receiving:
                raise KeyInUse(key)
            self._receiving.add(key)
            return None

    def release_key(self, key: Optional[str]) -> None:
        with self._lock:
            self._receiving.discard(key)

    # -- writing --------------------------------------------------------------------------------------------
    def create(self, session_id: str, analysis_type: str, video_name: str, directory: str,
               params: Optional[dict] = None, legacy: bool = False, **details: Any) -> SessionState:
        """A new pending session; `details` are more SessionState fields (video_path, video_info,
        idempotency_key, fingerprint)."""
        state = SessionState(session_id, analysis_type, video_name, directory, dict(params or {}), legacy=legacy,
                             **details)
        with self._write_lock:
            with self._lock:
                if session_id in self._sessions:
                    raise ValueError("session id already in use")
            self._save(state)
            with self._lock:
                self._sessions[session_id] = state
                self._answers[session_id] = []
                if state.idempotency_key:
                    self._receiving.discard(state.idempotency_key)
                    self._by_key[state.idempotency_key] = session_id
            return copy.deepcopy(state)

    def update(self, session_id: str, saved: bool = True, **changes) -> SessionState:
        """Apply `changes` unless the session has ended; returns a copy of the result.

        Progress only moves forward; entering a terminal status stamps
        `finished_at` and the final step word, and from then on nothing changes.
        StateNotSaved (and no change) when the database refuses the write.
        `saved=False` changes the memory only: for telling a client that a job stopped because
        the database refused its writes (after a restart the job resumes from what was saved).
        """
        return self._change(session_id, changes, save=saved)

    def record_answer(self, session_id: str, position: int, answer: str, **changes) -> SessionState:
        """Keep the model's answer for segment `position` (0-based, the next one) with `changes`, in one write."""
        return self._change(session_id, changes, (position, answer))

    def _change(self, session_id: str, changes: dict, answer: Optional[Tuple[int, str]] = None,
                save: bool = True) -> SessionState:
        with self._write_lock:
            with self._lock:
                state = self._sessions.get(session_id)
                if state is None:
                    raise SessionNotFound(session_id)
                done = len(self._answers.get(session_id, ()))
            if state.status.terminal:
                return copy.deepcopy(state)
            if answer is not None and answer[0] != done:
                raise ValueError(f"segment {answer[0] + 1} answered before segment {done + 1}")
            updated = changed_state(state, changes)
            if updated == state and answer is None:
                return copy.deepcopy(state)  # nothing a client could see changed: no write, same updatedAt
            updated = replace(updated, updated_at=time.time())
            if save:
                self._save(updated, None if answer is None else (answer[0], answer[1], updated.runs))
            with self._lock:
                self._sessions[session_id] = updated
                if answer is not None:
                    self._answers.setdefault(session_id, []).append(answer[1])
            return copy.deepcopy(updated)

    def _save(self, state: SessionState, answer: Optional[Tuple[int, str, int]] = None) -> None:
        if state.legacy:
            return  # its client is gone after a restart: nothing to keep
        try:
            self.database.save(state.session_id, state.created_at, state.to_record(), answer)
        except sqlite3.Error as error:
            log.error("Could not save session %s to the state database: %s", state.session_id, error)
            raise StateNotSaved(f"the state database refused the write: {error}") from None

    def move_files(self, directory_of: Callable[[str], str]) -> int:
        """Point every session whose directory is not `directory_of(its id)` there (DATA_DIR was moved);
        returns how many moved. Saved like any change."""
        moved = 0
        with self._write_lock:
            for state in self.list():
                directory = directory_of(state.session_id)
                if state.directory == directory:
                    continue
                video_path = os.path.join(directory, os.path.basename(state.video_path)) if state.video_path else None
                updated = replace(state, directory=directory, video_path=video_path)
                self._save(updated)
                with self._lock:
                    self._sessions[state.session_id] = updated
                moved += 1
        return moved

    def delete(self, session_id: str) -> SessionState:
        with self._write_lock:
            with self._lock:
                state = self._sessions.get(session_id)
            if state is None:
                raise SessionNotFound(session_id)
            self._forget([state])
            return state

    def expire(self, now: Optional[float] = None) -> List[SessionState]:
        """Remove and return the sessions that ended more than `ttl_seconds` ago."""
        now = time.time() if now is None else now
        with self._write_lock:
            with self._lock:
                expired = [s for s in self._sessions.values()
                           if s.finished_at is not None and now - s.finished_at >= self.ttl_seconds]
            self._forget(expired)
            return expired

    def _forget(self, states: List[SessionState]) -> None:
        """Off the disk first: a session forgotten in memory but still on disk would come back at restart."""
        try:
            self.database.delete([s.session_id for s in states if not s.legacy])
        except sqlite3.Error as error:
            log.error("Could not delete sessions from the state database: %s", error)
            raise StateNotSaved(f"the state database refused the write: {error}") from None
        with self._lock:
            for state in states:
                self._sessions.pop(state.session_id, None)
                self._answers.pop(state.session_id, None)
                if state.idempotency_key:
                    self._by_key.pop(state.idempotency_key, None)
