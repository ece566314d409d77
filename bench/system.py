"""The machine side of the benchmarks: log lines, free ports, a process's memory, the cached checkpoints."""
from __future__ import annotations

import os
import socket
import statistics
import sys
import threading
import time
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, ".cache", "models")
PY = sys.executable


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def checkpoint(preset: str) -> str:
    """The `preset` checkpoint (seed 0), built once into .cache/models."""
    from tools.make_tiny_model import cached_checkpoint

    say(f"checkpoint {preset} (built once into .cache/models)")
    return str(cached_checkpoint(MODELS, preset, 0))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, every thread's (ended ones too); 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM (Linux: write 5 to clear_refs); False when not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples a process's VmRSS in a thread until stopped."""

    def __init__(self, pid: int, every: float = 0.01):
        self.pid, self.every = pid, every
        self.samples: List[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_kib(self.pid))
            self._stop.wait(self.every)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def median_rss_mib(pid: int, seconds: float, every: float = 0.05) -> float:
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(rss_kib(pid))
        time.sleep(every)
    return statistics.median(samples) / 1024
