"""P1 tiny before/after: engine time vs how frames are read, in one process, interleaved.

    python bench/experiment_sampling.py VIDEO [--variants 0.005:48:1,0.005:48:0,0.0005:48:1] [--rounds 3]

A variant is `switch:window:keyframes`: Python's GIL switch interval
(sys.setswitchinterval), video_frames._SEQUENTIAL_READ_WINDOW (without
keyframe positions: read forward to a frame at most this many frames ahead,
seek otherwise) and whether FrameReader uses the file's keyframe positions
to choose between reading forward and seeking (1) or not (0). Per round
and variant: pure generation of the pre-sampled frames, a whole highlights
analysis through VideoHighlightGenerator (sampling overlapped with the model),
and sampling alone; all on the tiny checkpoint, 10 s segments, 8 frames,
32 tokens. Prints medians and job/pure.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.run import checkpoint  # noqa: E402
from model_runner import ModelRunner  # noqa: E402
from prompts import HIGHLIGHTS_SYSTEM, HIGHLIGHTS_USER  # noqa: E402
from video_highlight_generator import VideoHighlightGenerator  # noqa: E402
import video_frames  # noqa: E402

SETTINGS = dict(segment_duration=10, frames_per_segment=8, max_tokens=32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--variants", default="0.005:48:1,0.005:48:0,0.0005:48:1")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    variants = [tuple(v.split(":")) for v in args.variants.split(",")]

    runner = ModelRunner(checkpoint("tiny"))
    runner.wait_until_loaded(120)
    engine = VideoHighlightGenerator(runner)
    info = video_frames.probe_video(args.video)
    segments = video_frames.plan_segments(info.duration_seconds, SETTINGS["segment_duration"])

    def sample():
        with video_frames.FrameReader(args.video, info, max_edge=runner.image_size) as reader:
            return [reader.read(video_frames.sample_frame_indices(s, SETTINGS["frames_per_segment"], info))
                    for s in segments]

    scan_keyframes = video_frames._KeyframeIndex.last_at_or_before
    frames = sample()

    def timed(function) -> float:
        started = time.perf_counter()
        function()
        return time.perf_counter() - started

    def pure():
        for images in frames:
            runner.generate(images, HIGHLIGHTS_USER, system_prompt=HIGHLIGHTS_SYSTEM,
                            max_tokens=SETTINGS["max_tokens"])

    engine.generate_highlights(args.video, **SETTINGS)  # warm
    times = {variant: {"job": [], "pure": [], "sample": []} for variant in variants}
    try:
        for _ in range(args.rounds):
            for variant in variants:
                sys.setswitchinterval(float(variant[0]))
                video_frames._SEQUENTIAL_READ_WINDOW = int(variant[1])
                video_frames._KeyframeIndex.last_at_or_before = (
                    scan_keyframes if variant[2] == "1" else (lambda self, index: None))
                times[variant]["pure"].append(timed(pure))
                times[variant]["job"].append(timed(lambda: engine.generate_highlights(args.video, **SETTINGS)))
                times[variant]["sample"].append(timed(sample))
    finally:
        runner.close()
    for (switch, window, keyframes), row in times.items():
        job, pure_s, sample_s = (statistics.median(row[key]) for key in ("job", "pure", "sample"))
        print(f"switch {switch:>7s} s  window {window:>3s}  keyframes {keyframes}  job {job:.3f} s  pure {pure_s:.3f} s  "
              f"sampling alone {sample_s:.3f} s  job/pure {job / pure_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
