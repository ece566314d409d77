"""P1 tiny before/after: engine time vs how frames are read, in one process, interleaved.

    python -m bench.experiment_sampling VIDEO [--variants opencv-plain,opencv,pyav-threads,pyav-exact,pyav]
        [--rounds 3]

Variants (the product is `pyav`):
  opencv-plain  OpenCV (PYAV_FRAMES=0), reading forward up to 48 frames, seeking beyond
  opencv        OpenCV, seeking or reading forward by the file's keyframe positions
  pyav-threads  PyAV with FFmpeg's default decoder threads, slice middles
  pyav-exact    PyAV with one decoder thread, slice middles
  pyav          PyAV with one decoder thread, keyframes near slice middles preferred
Per round and variant: pure generation of pre-sampled frames, a whole
highlights analysis through VideoHighlightGenerator (sampling overlapped with
the model) and sampling alone (with the number of frames decoded); tiny
checkpoint, 10 s segments, 8 frames, 32 tokens. Prints medians and job/pure.
(A 1 ms GIL switch interval, tried with OpenCV, changed nothing.)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from bench.system import checkpoint
from video_analysis.model.runner import ModelRunner
from video_analysis.engine.prompts import HIGHLIGHTS_SYSTEM, HIGHLIGHTS_USER
from video_analysis.engine.analyzer import VideoHighlightGenerator
import video_analysis.video as video_frames
from video_analysis.video import capped_decoding
from video_analysis.video.opencv_backend import KeyframeScan

SETTINGS = dict(segment_duration=10, frames_per_segment=8, max_tokens=32)


def _set_variant(name: str, scan_keyframes, slice_middles) -> None:
    os.environ["PYAV_FRAMES"] = "0" if name.startswith("opencv") else "1"
    KeyframeScan.last_at_or_before = (
        (lambda self, index: None) if name == "opencv-plain" else scan_keyframes)
    capped_decoding.DECODER_THREADS = 0 if name == "pyav-threads" else _PRODUCT_THREADS
    video_frames.FrameReader.segment_frame_indices = (
        slice_middles if name in ("pyav-threads", "pyav-exact") else _PRODUCT_CHOICE)


_PRODUCT_CHOICE = video_frames.FrameReader.segment_frame_indices
_PRODUCT_THREADS = capped_decoding.DECODER_THREADS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--variants", default="opencv-plain,opencv,pyav-threads,pyav-exact,pyav")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    variants = args.variants.split(",")

    runner = ModelRunner(checkpoint("tiny"))
    runner.wait_until_loaded(120)
    engine = VideoHighlightGenerator(runner)
    info = video_frames.probe_video(args.video)
    segments = video_frames.plan_segments(info.duration_seconds, SETTINGS["segment_duration"])
    decoded = {}

    def sample():
        with video_frames.FrameReader(args.video, info, max_edge=runner.image_size) as reader:
            frames = [reader.read_segment(s, SETTINGS["frames_per_segment"]) for s in segments]
            decoded["frames"] = reader.backend.frames_decoded if reader.backend.name == "pyav" else None
            return frames

    def slice_middles(reader, segment, count):
        return video_frames.sample_frame_indices(segment, count, info)

    scan_keyframes = KeyframeScan.last_at_or_before

    def timed(function) -> float:
        started = time.perf_counter()
        function()
        return time.perf_counter() - started

    frames_by_variant = {}
    for name in variants:
        _set_variant(name, scan_keyframes, slice_middles)
        frames_by_variant[name] = sample()

    def pure(name):
        for images in frames_by_variant[name]:
            runner.generate(images, HIGHLIGHTS_USER, system_prompt=HIGHLIGHTS_SYSTEM,
                            max_tokens=SETTINGS["max_tokens"])

    engine.generate_highlights(args.video, **SETTINGS)  # warm
    times = {name: {"job": [], "pure": [], "sample": [], "decoded": None} for name in variants}
    try:
        for _ in range(args.rounds):
            for name in variants:
                _set_variant(name, scan_keyframes, slice_middles)
                times[name]["pure"].append(timed(lambda: pure(name)))
                times[name]["job"].append(timed(lambda: engine.generate_highlights(args.video, **SETTINGS)))
                times[name]["sample"].append(timed(sample))
                times[name]["decoded"] = decoded["frames"]
    finally:
        runner.close()
    for name, row in times.items():
        job, pure_s, sample_s = (statistics.median(row[key]) for key in ("job", "pure", "sample"))
        decoded_text = f"{row['decoded']} frames decoded" if row["decoded"] is not None else "OpenCV"
        print(f"{name:13s} job {job:.3f} s  pure {pure_s:.3f} s  sampling alone {sample_s:.3f} s ({decoded_text})  "
              f"job/pure {job / pure_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
