"""The model's process keeps large freed blocks for mlx to reuse (model/memory.py), in its threads too.

Each case runs in a fresh interpreter: glibc's arena limit must be set before a second thread allocates.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A 256 MB array multiplied twice on a thread of its own, as the model thread does; the page faults
# of the second multiply are counted (the first may have to grow the heap).
_SCRIPT = """
import json, resource, threading
from video_analysis.model import loading  # noqa: F401  (applies the setting, preloads OpenBLAS)
import mlx.core as mx
from video_analysis.model.memory import reuse_freed_memory
counted = {}
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
    mx.clear_streams()
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(json.dumps({"applied": reuse_freed_memory(), **counted}))
"""
_PAGES = 256 * 1024 * 1024 // os.sysconf("SC_PAGE_SIZE")


def _second_multiply(**environment) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT, **environment}
    done = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_large_result_reuses_freed_memory_instead_of_faulting_in_new_pages():
    reused = _second_multiply()
    assert reused["applied"] and reused["right"]
    assert reused["faults"] < _PAGES // 10, reused


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_switched_off_every_large_result_is_faulted_in_again():
    fresh = _second_multiply(REUSE_FREED_MEMORY="0")
    assert not fresh["applied"] and fresh["right"]
    assert fresh["faults"] >= _PAGES * 9 // 10, fresh
