"""Whether a process of this machine is still there (a worker's scratch, an upload's hold on an Idempotency-Key)."""
from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True while `pid` exists (also when it is another user's, which we may not signal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
