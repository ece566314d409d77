"""The CPU cores a model may use: this process's, or its share of them when model workers share a machine.

Kept free of mlx, so a model worker can work out its share before (and apart from) the model.
"""
from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def fair_share(sharing: int) -> int:
    """This process's share of its usable cores when `sharing` processes (itself included) run models on them:
    an even split, rounded down, at least one."""
    return max(1, usable_cores() // max(1, sharing))
