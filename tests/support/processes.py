"""Looking at real processes from a test (Linux /proc)."""
from __future__ import annotations


def running(pid: int) -> bool:
    """Whether `pid` is alive: a zombie (exited, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
