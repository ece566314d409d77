"""BLAS and the vision speed-ups: the same work in two fresh processes, the switch on and off."""
from __future__ import annotations

import json
import os
import subprocess
from typing import Optional

from bench.settings import FRAMES
from bench.system import PY, ROOT, say

_MATMUL = """
import json, os, sys, time
from video_analysis.model.openblas import preload_openblas
_openblas_path = preload_openblas()  # None when USE_OPENBLAS=0
import mlx.core as mx
a = mx.random.normal((1024, 960)); b = mx.random.normal((960, 2560)); mx.eval(a, b)
mx.eval(a @ b)
runs = []
for _ in range(5):
    started = time.perf_counter(); mx.eval(a @ b); runs.append(time.perf_counter() - started)
runs.sort()
print(json.dumps({"seconds": runs[2], "gflops": 2 * 1024 * 960 * 2560 / runs[2] / 1e9, "openblas": _openblas_path}))
"""


def _without_preload(**variables) -> dict:
    env = dict(os.environ, **variables)
    env.pop("LD_PRELOAD", None)
    return env


def blas_matmul() -> dict:
    """A (1024x960)·(960x2560) float32 matmul (one MLP projection's shape) in two subprocesses."""
    out = {}
    for name, flag in (("openblas", "1"), ("bundled", "0")):
        done = subprocess.run([PY, "-c", _MATMUL], check=True, capture_output=True,
                              text=True, env=_without_preload(USE_OPENBLAS=flag), cwd=ROOT)
        out[name] = json.loads(done.stdout)
    return {"speedup": out["bundled"]["seconds"] / out["openblas"]["seconds"],
            "openblas_gflops": out["openblas"]["gflops"], "bundled_gflops": out["bundled"]["gflops"],
            "openblas_library": out["openblas"]["openblas"]}


def segment_ab(model: str, video: str, variable: str, frames: Optional[int], max_tokens: int) -> dict:
    """One segment through pure_inference twice, `variable`=1 then `variable`=0 (fresh processes).

    No warm-up pass (a bundled-BLAS warm-up would double a long run), so
    MLX_DISABLE_COMPILE=1 in both keeps the first call's compile time out.
    """
    out = {}
    for flag in ("1", "0"):
        env = _without_preload(MLX_DISABLE_COMPILE="1", **{variable: flag})
        command = [PY, "-m", "bench.pure_inference", "--model", model, "--video", video,
                   "--max-segments", "1", "--max-tokens", str(max_tokens), "--no-warmup"]
        if frames:
            command += ["--max-frames", str(frames)]
        say(f"  {variable}={flag}: one segment, {frames or FRAMES} frame(s), {max_tokens} tokens")
        done = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=ROOT)
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        out[flag] = {"seconds": answer["sum_generate_seconds"], "openblas": answer["openblas"],
                     "frames": answer["segments"][0]["frames"], "text": answer["segments"][0]["text"]}
    return {
        "speedup": out["0"]["seconds"] / out["1"]["seconds"],
        "on_seconds": out["1"]["seconds"],
        "off_seconds": out["0"]["seconds"],
        "openblas": out["1"]["openblas"],
        "frames": out["1"]["frames"],
        "max_tokens": max_tokens,
        "same_answer": out["1"]["text"] == out["0"]["text"],
    }
