"""Looking at real processes from a test (Linux /proc)."""
from __future__ import annotations

import os
from typing import Optional


def running(pid: int) -> bool:
    """Whether `pid` is alive: a zombie (exited, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_seconds(pid: int, thread: Optional[int] = None) -> float:
    """User + system CPU time so far of process `pid` (every thread's, ended ones too), or of its `thread` only."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    with open(path) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
