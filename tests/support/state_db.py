"""Reading a service's state database as it is on disk (sqlite3, beside the running service)."""
from __future__ import annotations

import sqlite3
from typing import List


def answer_runs(path: str, session_id: str) -> List[int]:
    """Which start of the job answered each segment, in segment order."""
    with sqlite3.connect(path) as db:
        return [run for (run,) in db.execute("SELECT run FROM answers WHERE session_id = ? ORDER BY position",
                                             (session_id,))]


def integrity(path: str) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
