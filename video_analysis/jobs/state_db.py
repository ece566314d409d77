"""The session store's copy on disk: one SQLite file (stdlib `sqlite3`), written through, read at start.

The sessions themselves live in memory (sessions.py); this file is what a
restart finds. Each write is one transaction, committed before the change it
records can be seen by a client: WAL journal, `synchronous=FULL` (a commit
is on the disk itself, not only in the kernel's cache, so a power cut loses
nothing committed either), and one connection used by one writer at a time
(`SessionManager` holds its write lock around every call here).

Tables:
    sessions(id, created_at, state)        the session as JSON: its result once ended, its upload's
                                           Idempotency-Key and fingerprint (keys live as long as their session)
    answers(session_id, position, answer, run)
                                           each finished segment's answer; `run` counts the job's starts
                                           (1, then 2 after a resume), so a test can see which run
                                           asked the model about which segment
Rows of a session go when it does (cleanup, expiry). Legacy /analyze
requests are never written: their client is gone after a restart.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

log = logging.getLogger(__name__)

# Not written to disk at all: what the service did before issue 16 (tests, and STATE_DB=:memory:).
IN_MEMORY = ":memory:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS answers (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    answer TEXT NOT NULL,
    run INTEGER NOT NULL,
    PRIMARY KEY (session_id, position)
);
"""


class StateDatabaseError(RuntimeError):
    """The state database cannot be opened or is not ours; the message says what to do."""


def unusable(path: str, error: Exception) -> StateDatabaseError:
    return StateDatabaseError(
        f"The state database {path} cannot be used ({error}). Move it aside to start with no sessions, or restore "
        "it from a backup (guides/operations.md, 'Sessions on disk').")


# Marks the file as this service's state database (any 32-bit number; "VAS1" in ASCII).
APPLICATION_ID = 0x56415331


@dataclass
class StoredSession:
    state: dict
    answers: List[str]


class StateDatabase:
    """The SQLite file; not thread-safe by itself: its one caller serialises the writes.

    The file is marked as this service's (`PRAGMA application_id`): another program's SQLite file
    at STATE_DB is refused, never written to. While open, the file is held with an exclusive
    flock (released by the kernel when the process dies, even by SIGKILL): a second service on
    the same STATE_DB is refused at start, since two writers would run each other's jobs. SQLite's
    own locks are fcntl locks, which flock does not touch: `sqlite3 state.db .backup` still reads it.
    """

    def __init__(self, path: str):
        self.path = path
        self.durable = path != IN_MEMORY
        self._lock_file = None
        self._identity = None  # (device, inode) of the file opened: /health notices it deleted or replaced
        try:
            if self.durable:
                directory = os.path.dirname(os.path.abspath(path))
                os.makedirs(directory, mode=0o700, exist_ok=True)
            # check_same_thread=False: request and job threads all write, one at a time (the caller's lock).
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            if self.durable:
                self._hold(path)
                self._check_it_is_ours()
                os.chmod(path, 0o600)
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    log.warning("STATE_DB %s could not use a write-ahead log (journal mode %s)", path, mode)
                self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        except StateDatabaseError:
            self.close()
            raise
        except (sqlite3.DatabaseError, OSError) as error:
            self.close()
            raise unusable(path, error) from None

    def _hold(self, path: str) -> None:
        self._lock_file = open(path, "rb")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateDatabaseError(
                f"Another service is using the state database {path}. Each service needs a DATA_DIR and a "
                "STATE_DB of its own: stop the other one, or set DATA_DIR (or STATE_DB) to another place.") from None
        stat = os.fstat(self._lock_file.fileno())
        self._identity = (stat.st_dev, stat.st_ino)

    def _check_it_is_ours(self) -> None:
        application = self._db.execute("PRAGMA application_id").fetchone()[0]
        tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if application != APPLICATION_ID and (application or tables):
            raise StateDatabaseError(
                f"STATE_DB {self.path} is a SQLite database of another program, so this service will not write to "
                "it. Set STATE_DB to a file of its own (by default it is DATA_DIR/state.db).")

    def file_problem(self) -> Optional[str]:
        """A sentence when the file this service writes to is no longer at its path (deleted or replaced)."""
        if self._identity is None:
            return None
        try:
            stat = os.stat(self.path)
        except OSError:
            stat = None
        if stat is not None and (stat.st_dev, stat.st_ino) == self._identity:
            return None
        return (f"The state database {self.path} was deleted or replaced while the service runs, so what it records "
                "now is lost at the next restart. Restart the service (sessions recorded since then are lost).")

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        if self._lock_file is not None:
            self._lock_file.close()  # and the flock with it
            self._lock_file = None

    # -- reading at start ------------------------------------------------------------------------
    def load(self) -> Iterator[Tuple[str, StoredSession]]:
        """Every stored session with its answers, oldest first."""
        answers: Dict[str, List[Tuple[int, str, int]]] = {}
        for session_id, position, answer, run in self._db.execute(
                "SELECT session_id, position, answer, run FROM answers ORDER BY session_id, position"):
            answers.setdefault(session_id, []).append((position, answer, run))
        for session_id, state in self._db.execute("SELECT id, state FROM sessions ORDER BY created_at, id"):
            # Only an unbroken run from the first segment counts: a resume starts after its last answer.
            kept: List[Tuple[int, str, int]] = []
            for row in answers.get(session_id, []):
                if row[0] != len(kept):
                    break
                kept.append(row)
            yield session_id, StoredSession(json.loads(state), [answer for _, answer, _ in kept])

    # -- writing ------------------------------------------------------------------------------------
    def save(self, session_id: str, created_at: float, state: dict,
             answer: Optional[Tuple[int, str, int]] = None) -> None:
        """Write the session's state (and one more answer) in one transaction."""
        with self._transaction():
            self._db.execute("INSERT INTO sessions (id, created_at, state) VALUES (?, ?, ?) "
                             "ON CONFLICT(id) DO UPDATE SET state = excluded.state",
                             (session_id, created_at, json.dumps(state, separators=(",", ":"))))
            if answer is not None:
                position, text, run = answer
                self._db.execute("INSERT INTO answers (session_id, position, answer, run) "
                                 "VALUES (?, ?, ?, ?)", (session_id, position, text, run))

    def delete(self, session_ids: List[str]) -> None:
        """Forget sessions, their answers and keys with them."""
        if not session_ids:
            return
        with self._transaction():
            self._db.executemany("DELETE FROM sessions WHERE id = ?", [(sid,) for sid in session_ids])

    def integrity_problems(self) -> List[str]:
        """What `PRAGMA integrity_check` finds; empty when the file is sound."""
        rows = [row[0] for row in self._db.execute("PRAGMA integrity_check")]
        return [] if rows == ["ok"] else rows

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:  # SQLite has rolled back by itself after some errors (a full disk)
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
