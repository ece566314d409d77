"""The model's process keeps large freed blocks for mlx to reuse (model/memory.py), in its threads too.

Each case runs in a fresh interpreter: glibc's arena limit must be set before a second thread allocates.
"""
import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# In the analysis process's order of imports (numpy, OpenCV and PyAV start threads of their own before the model
# is loaded), a 256 MB array multiplied twice on a thread of its own, as the model thread does; the page faults
# of the second multiply are counted (the first may have to grow the heap), and glibc's arenas.
_SCRIPT = """
import ctypes, io, json, os, resource, sys, tempfile, threading
import video_analysis.jobs.analysis_child  # noqa: F401  (imports the engine, then model/loading.py)
import mlx.core as mx
from video_analysis.model.memory import give_back_freed_memory, reuse_freed_memory
counted = {}
def resident_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS"))
def work():
    x = mx.random.normal((64, 1024, 1024))
    mx.eval(x)
    mx.eval(x * 2.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = x * 3.0
    mx.eval(y)
    counted["faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    counted["right"] = bool(mx.all(y == x * 3.0).item())
    del x, y
    counted["kept_mib"] = resident_mib()
    counted["given_back"] = give_back_freed_memory()
    counted["after_mib"] = resident_mib()
    mx.clear_streams()
thread = threading.Thread(target=work)
thread.start()
thread.join()
with tempfile.TemporaryFile() as stats:  # malloc_stats() writes to stderr: count its "Arena N:" lines
    saved = os.dup(2)
    os.dup2(stats.fileno(), 2)
    ctypes.CDLL("libc.so.6").malloc_stats()
    os.dup2(saved, 2)
    stats.seek(0)
    arenas = sum(line.startswith(b"Arena ") for line in stats.read().splitlines())
print(json.dumps({"applied": reuse_freed_memory(), "arenas": arenas, **counted}))
"""


def _page_bytes() -> int:
    # With transparent huge pages always on, a fresh mapping faults in 2 MiB at a time.
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as setting:
            if "[always]" in setting.read():
                return 2 * 1024 * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE")


_PAGES = 256 * 1024 * 1024 // _page_bytes()


def _second_multiply(**environment) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT, **environment}
    done = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_large_result_reuses_freed_memory_instead_of_faulting_in_new_pages():
    reused = _second_multiply(REUSE_FREED_MEMORY="1")
    assert reused["applied"] and reused["right"]
    assert reused["faults"] < _PAGES // 10, reused
    assert reused["arenas"] == 1, reused  # the model's thread allocates in the one arena that keeps blocks
    # The three 256 MB blocks the thread freed stay with the process until given back, then go.
    assert reused["given_back"] and reused["kept_mib"] - reused["after_mib"] >= 500, reused


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_switched_off_every_large_result_is_faulted_in_again():
    fresh = _second_multiply(REUSE_FREED_MEMORY="0")
    assert not fresh["applied"] and fresh["right"] and not fresh["given_back"]
    assert fresh["faults"] >= _PAGES * 9 // 10, fresh


def test_the_model_thread_gives_freed_memory_back_once_idle_and_answers_the_same_after(tiny_model_dir):
    from PIL import Image

    from video_analysis.model import memory
    from video_analysis.model.runner import ModelRunner

    frames = [Image.new("RGB", (64, 64), (200, 30, 30)) for _ in range(4)]
    runner = ModelRunner(tiny_model_dir, idle_seconds=0.3)
    try:
        runner.wait_until_loaded(120)
        first = runner.generate(frames, "Describe the frames.", max_tokens=8)
        deadline = time.monotonic() + 10
        while runner.memory_given_back < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.memory_given_back >= 1 or not memory.reuse_freed_memory()
        assert runner.generate(frames, "Describe the frames.", max_tokens=8) == first
    finally:
        runner.close()
