"""Pure inference: the model's own time for a video's segments, nothing else.

The denominator of the service-overhead figure (P1). Frames are sampled
exactly as the service samples them (video_analysis.video: probe, plan_segments,
FrameReader.read_segment, resized to the model's image size), all of
them *before* timing starts; then only `ModelRunner.generate` is timed, one
call per segment, with the service's default prompts. A warm-up generation
(untimed, by default on the first segment's frames; `warmup_frames` and
`warmup_tokens` make it smaller) comes first, as a running service is warm too.

Two ways to use it:

    # one pass, JSON on stdout
    python -m bench.pure_inference --model DIR --video FILE [--max-tokens 32] ...

    # a long-lived worker (the benchmark's way): the model is loaded once, then
    # every line on stdin is a JSON request {"video": ..., "segment_duration": ...}
    # and every answer is one JSON line on stdout.
    python -m bench.pure_inference --model DIR --serve

Set USE_OPENBLAS=0 to run on mlx's bundled BLAS (model_runner honours it).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from video_analysis.model.openblas import preload_openblas

OPENBLAS = preload_openblas()  # before mlx; None when USE_OPENBLAS=0

from video_analysis.model.runner import ModelRunner
from video_analysis.engine.prompts import HIGHLIGHTS_SYSTEM, HIGHLIGHTS_USER
from video_analysis.video import FrameReader, plan_segments, probe_video


def sample_all(runner: ModelRunner, video: str, segment_duration: float, frames_per_segment: int,
               max_segments: int | None = None, max_frames: int | None = None):
    """Every segment's frames, read the way the service reads them; returns (segments, frames, seconds)."""
    started = time.perf_counter()
    info = probe_video(video)
    segments = plan_segments(info.duration_seconds, segment_duration, info)
    if max_segments:
        segments = segments[:max_segments]
    frames = []
    with FrameReader(video, info, max_edge=runner.image_size) as reader:
        for segment in segments:
            images = reader.read_segment(segment, frames_per_segment)
            frames.append(images[:max_frames] if max_frames else images)
    return segments, frames, time.perf_counter() - started


def run(runner: ModelRunner, request: dict) -> dict:
    video = request["video"]
    segment_duration = float(request.get("segment_duration", 10))
    frames_per_segment = int(request.get("frames_per_segment", 8))
    max_tokens = int(request.get("max_tokens", 32))
    warmup = bool(request.get("warmup", True))
    segments, frames, sample_seconds = sample_all(
        runner, video, segment_duration, frames_per_segment,
        request.get("max_segments"), request.get("max_frames"),
    )
    options = dict(system_prompt=request.get("system_prompt") or HIGHLIGHTS_SYSTEM, max_tokens=max_tokens)
    user_prompt = request.get("user_prompt") or HIGHLIGHTS_USER
    warmup_seconds = None
    if warmup:
        # The first generate of a process compiles mlx kernels (shapeless, so a small call warms
        # the later, larger ones too); a running server has paid this long ago.
        started = time.perf_counter()
        runner.generate(frames[0][: int(request.get("warmup_frames", len(frames[0])))], user_prompt,
                        system_prompt=options["system_prompt"],
                        max_tokens=int(request.get("warmup_tokens", max_tokens)))
        warmup_seconds = time.perf_counter() - started
    results = []
    for segment, images in zip(segments, frames):
        started = time.perf_counter()
        text = runner.generate(images, user_prompt, **options)
        results.append({
            "segment": segment.index, "frames": len(images),
            "generate_seconds": time.perf_counter() - started, "text": text,
        })
    return {
        "video": video,
        "segments": results,
        "sum_generate_seconds": sum(r["generate_seconds"] for r in results),
        "sample_seconds": sample_seconds,
        "warmup_seconds": warmup_seconds,
        "load_seconds": runner.load_seconds,
        "openblas": OPENBLAS,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--serve", action="store_true", help="answer JSON requests from stdin, one per line")
    parser.add_argument("--video")
    parser.add_argument("--segment-duration", type=float, default=10)
    parser.add_argument("--frames-per-segment", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-segments", type=int)
    parser.add_argument("--max-frames", type=int, help="keep only the first N sampled frames of each segment")
    parser.add_argument("--no-warmup", action="store_true")
    args = parser.parse_args(argv)

    runner = ModelRunner(args.model)
    runner.wait_until_loaded(600)
    try:
        if not args.serve:
            if not args.video:
                parser.error("--video is required without --serve")
            print(json.dumps(run(runner, {
                "video": args.video, "segment_duration": args.segment_duration,
                "frames_per_segment": args.frames_per_segment, "max_tokens": args.max_tokens,
                "max_segments": args.max_segments, "max_frames": args.max_frames,
                "warmup": not args.no_warmup,
            })), flush=True)
            return 0
        print(json.dumps({"ready": True, "load_seconds": runner.load_seconds, "openblas": OPENBLAS}), flush=True)
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                answer = run(runner, json.loads(line))
            except Exception as error:  # noqa: BLE001  (reported to the caller)
                answer = {"error": f"{type(error).__name__}: {error}"}
            print(json.dumps(answer), flush=True)
        return 0
    finally:
        runner.close()


if __name__ == "__main__":
    sys.exit(main())
