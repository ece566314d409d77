"""The reference to beat: the usual per-segment SmolVLM2 highlight script, re-implemented small.

What the widely copied SmolVLM2 highlight scripts do, step by step, for every
segment of the video:

1. cut the segment to a temporary file:
   ``ffmpeg -ss START -t DURATION -i VIDEO -c copy segment.mp4``
2. start a fresh process that loads the model again and answers about it:
   ``python -m mlx_vlm generate --model M --video segment.mp4
   --video-max-frames N --system S --prompt P --max-tokens T --temperature 0``
   (the scripts called ``python -m mlx_vlm.smolvlm_video_generate``, which
   mlx-vlm 0.7 no longer has; ``generate --video`` is its successor.)
3. read the answer from the process's stdout,
4. ``time.sleep(1)`` before the next segment.

With our self-built SmolVLM checkpoints, mlx-vlm's SmolVLMProcessor has no
native video path, so the CLI samples the segment itself (OpenCV, ``--fps``
2 capped by ``--video-max-frames``) and sends the frames as ordered images:
for a 10 s segment and N = 8 that is 8 frames, as many as the service sends.
The CLI prints one notice line ("... sending 8 of 8 sampled frames ...")
before the answer; it is skipped when parsing.

BLAS: the plain CLI on Linux runs on mlx's bundled reference BLAS (about 30x
slower matrix multiply than OpenBLAS here). By default the reference gets
OpenBLAS too, through ``LD_PRELOAD`` (measured to give the same GFLOP/s as the
service's ``ctypes`` preload), so that comparing it with the service measures
the pipeline, not the BLAS; ``--blas bundled`` runs it as the plain CLI does.

    python -m bench.reference_pipeline VIDEO --model DIR [--segment-duration 10]
        [--frames 8] [--max-tokens 32] [--blas openblas|bundled] [--sleep 1]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

from video_analysis.engine.answers import parse_significance  # noqa: E402  (no mlx import)
from video_analysis.engine.prompts import HIGHLIGHTS_SYSTEM, HIGHLIGHTS_USER

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
)
_NOTICE = "has no native video support"


def openblas_library() -> Optional[str]:
    return next((path for path in OPENBLAS_CANDIDATES if os.path.exists(path)), None)


def cli_environment(blas: str) -> dict:
    """The environment of the CLI process: OpenBLAS preloaded, or mlx's bundled BLAS."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if blas == "openblas":
        library = openblas_library()
        if library:
            env["LD_PRELOAD"] = library
    elif blas != "bundled":
        raise ValueError("blas must be 'openblas' or 'bundled'")
    return env


def video_duration(video: str) -> float:
    """The container's duration, as the scripts read it (ffprobe)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", video],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    return float(out)


def segment_starts(duration: float, segment_duration: float) -> List[float]:
    """Start times of the segments; a final partial segment counts (as the service counts it)."""
    count = max(1, math.ceil(duration / segment_duration - 1e-3))
    return [round(i * segment_duration, 3) for i in range(count)]


def parse_answer(stdout: str) -> str:
    """The answer text from the CLI's stdout (its fallback notice line dropped)."""
    lines = [line for line in stdout.splitlines() if _NOTICE not in line]
    return "\n".join(lines).strip()


def run_reference(video: str, model: str, segment_duration: float = 10, frames: int = 8, max_tokens: int = 32,
                  system_prompt: str = HIGHLIGHTS_SYSTEM, user_prompt: str = HIGHLIGHTS_USER,
                  sleep_seconds: float = 1.0, blas: str = "openblas", python: str = sys.executable,
                  max_segments: Optional[int] = None, timeout: float = 3600) -> dict:
    """Run the per-segment pipeline over `video`; returns timings and answers (wall time included)."""
    if not shutil.which("ffmpeg") or not shutil.which("ffprobe"):
        raise RuntimeError("ffmpeg is not installed; run `make bench-setup`")
    env = cli_environment(blas)
    started = time.perf_counter()
    duration = video_duration(video)
    starts = segment_starts(duration, segment_duration)
    if max_segments:
        starts = starts[:max_segments]
    results = []
    workdir = tempfile.mkdtemp(prefix="reference-")
    try:
        for position, start in enumerate(starts):
            if position:
                time.sleep(sleep_seconds)
            length = min(segment_duration, duration - start)
            segment_path = os.path.join(workdir, f"segment_{position:04d}.mp4")
            cut_started = time.perf_counter()
            subprocess.run(
                ["ffmpeg", "-nostdin", "-y", "-v", "error", "-ss", f"{start:.3f}", "-t", f"{length:.3f}",
                 "-i", video, "-c", "copy", segment_path],
                check=True, capture_output=True,
            )
            cut_seconds = time.perf_counter() - cut_started
            command = [
                python, "-m", "mlx_vlm", "generate", "--model", model, "--video", segment_path,
                "--video-max-frames", str(frames), "--system", system_prompt, "--prompt", user_prompt,
                "--max-tokens", str(max_tokens), "--temperature", "0",
            ]
            generate_started = time.perf_counter()
            process = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
            generate_seconds = time.perf_counter() - generate_started
            if process.returncode != 0:
                raise RuntimeError(f"mlx_vlm generate failed on segment {position + 1} "
                                   f"(exit {process.returncode}): {process.stderr.strip()[-2000:]}")
            text = parse_answer(process.stdout)
            notice = next((line for line in process.stdout.splitlines() if _NOTICE in line), None)
            os.remove(segment_path)
            results.append({
                "segment": position + 1, "start_time": start, "end_time": round(start + length, 3),
                "cut_seconds": cut_seconds, "process_seconds": generate_seconds,
                "significance_score": parse_significance(text), "analysis": text, "cli_notice": notice,
            })
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "video": video,
        "wall_seconds": time.perf_counter() - started,
        "segments": results,
        "blas": blas,
        "ld_preload": env.get("LD_PRELOAD"),
        "sleep_seconds": sleep_seconds,
        "settings": {"segment_duration": segment_duration, "frames": frames, "max_tokens": max_tokens},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--model", required=True, help="local checkpoint directory (or a Hugging Face id)")
    parser.add_argument("--segment-duration", type=float, default=10)
    parser.add_argument("--frames", type=int, default=8, help="--video-max-frames for the CLI")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds between segments (the scripts sleep 1)")
    parser.add_argument("--blas", choices=("openblas", "bundled"), default="openblas")
    parser.add_argument("--max-segments", type=int)
    args = parser.parse_args(argv)
    result = run_reference(args.video, args.model, args.segment_duration, args.frames, args.max_tokens,
                           sleep_seconds=args.sleep, blas=args.blas, max_segments=args.max_segments)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
