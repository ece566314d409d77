"""Loading Debian's OpenBLAS before mlx, so mlx's CPU matrix multiply uses it.

mlx's CPU wheel ships a slow reference BLAS (~6 GFLOP/s here); with OpenBLAS
loaded globally first, matrix multiply ran ~30x faster (shared notes, bench/).
Kept free of any mlx import so it can run before the first one: the service
(model/loading.py), the checkpoint builder and the tests all call it.
"""
from __future__ import annotations

import ctypes
import os
import platform
from typing import Optional

from video_analysis.config import Config

_OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
)
_openblas_path: Optional[str] = None
_openblas: Optional[ctypes.CDLL] = None
_threads_at_load = 1  # OpenBLAS's pool as it started (OPENBLAS_NUM_THREADS, else the cores): never exceeded


def preload_openblas() -> Optional[str]:
    """Load OpenBLAS globally so mlx's CPU backend binds to it; no-op elsewhere.

    Must run before the first `import mlx`. Set `USE_OPENBLAS=0` to measure
    mlx's bundled BLAS instead.
    """
    global _openblas_path, _openblas, _threads_at_load
    if _openblas_path or platform.system() != "Linux" or not Config.from_env().USE_OPENBLAS:
        return _openblas_path
    # OpenBLAS's idle threads spin before they sleep; on a 2-core server that
    # spinning starves the request threads (status p99 0.1-2.6 s during a job).
    # The shortest timeout (2^4 cycles) brought p99 to ~11 ms at ~1 % model
    # speed (bench/README.md, P3). Read by OpenBLAS when it loads.
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    for candidate in _OPENBLAS_CANDIDATES:
        if os.path.exists(candidate):
            try:
                _openblas = ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            _openblas_path = candidate
            _threads_at_load = _openblas.openblas_get_num_threads()
            break
    return _openblas_path


def blas_threads() -> Optional[int]:
    """The threads OpenBLAS's matrix multiply uses now; None when OpenBLAS is not loaded."""
    return _openblas.openblas_get_num_threads() if _openblas is not None else None


def set_blas_threads(threads: int) -> Optional[int]:
    """Let OpenBLAS use `threads` threads from now on (at least 1, at most what it started with, so an
    OPENBLAS_NUM_THREADS in the environment stays the limit); returns the number in use, None without OpenBLAS.

    Call it between matrix multiplies (the model thread, between requests): OpenBLAS's pool is the process's.
    """
    if _openblas is None:
        return None
    _openblas.openblas_set_num_threads(max(1, min(int(threads), _threads_at_load)))
    return blas_threads()
