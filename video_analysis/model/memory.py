"""Keeping the model's large freed buffers in the process, so mlx reuses them instead of faulting in new pages.

Why: mlx's CPU backend allocates every result with malloc and frees it when
the last reference goes. glibc serves a block above its mmap threshold (at
most 32 MiB) with a fresh mmap and unmaps it when freed, and a thread other
than the main one gets its own arena, which mmaps anything above 64 MiB
whatever the threshold. The vision tower's attention scores are 200 MB per
4 frames, so each elementwise pass over them faulted in 49 152 zeroed pages:
a multiply took 92 ms instead of 11, `power` 233 ms instead of 151 (bench/README.md, P8).

With one arena, no mmap below 1 GiB and no trimming, a freed block goes back
to the heap and the next pass over the same shape reuses it. Kept, those
blocks would hold the process at its high-water mark between jobs (the
full-size model: 3.2 GiB after a vision pass, 2.6 without this); the model
thread gives them back to the kernel once it has been idle for a while
(`give_back_freed_memory`, model/runner.py), so the next job's first segment
faults its pages in once. `REUSE_FREED_MEMORY=0` turns it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform
from typing import Optional

from video_analysis.config import Config

# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_ABOVE_BYTES = 1 << 30
_TRIM_ABOVE_BYTES = (1 << 31) - 1  # an int: glibc's largest

_libc: Optional[ctypes.CDLL] = None  # glibc, once reuse_freed_memory took effect


def reuse_freed_memory() -> bool:
    """Tell glibc's malloc to keep and reuse large freed blocks; True when it took effect.

    Call it before the process starts other threads: glibc fixes how many
    arenas it may make when a second thread first allocates. No-op where
    malloc is not glibc's (macOS, musl) and with `REUSE_FREED_MEMORY=0`.
    """
    global _libc
    if _libc is not None:
        return True
    if platform.system() != "Linux" or not Config.from_env().REUSE_FREED_MEMORY:
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if all(mallopt(parameter, value) == 1 for parameter, value in (
            (_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, _MMAP_ABOVE_BYTES), (_M_TRIM_THRESHOLD, _TRIM_ABOVE_BYTES))):
        _libc = libc
    return _libc is not None


def give_back_freed_memory() -> bool:
    """Return the freed blocks `reuse_freed_memory` keeps to the kernel (malloc_trim); True when it did.

    For the model thread when it has nothing to do: glibc trims nothing by
    itself once reuse_freed_memory has run.
    """
    if _libc is None:
        return False
    _libc.malloc_trim(0)
    return True
