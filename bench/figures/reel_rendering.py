"""Reels: rendering time ÷ reel duration, and the rendering's share of a whole job on the full-size model.

The source is what a phone records: H.264 with an AAC sound track (a tone
changing pitch), 30 fps, 120 s, at 640×360 and at 1280×720 (the bench's
drifting picture with its markers, encoded once and cached in bench/work).
The reel is 60 s: six 10 s highlights spread over the source, rendered by
`video.reel.render_reel` exactly as a job renders them (decode, scale,
H.264 + AAC encode, faststart), `rounds` times each, the median kept.

The share: a job's rendering time over the job's whole time, for a 60 s reel
of a 10-minute video (60 segments of 10 s, the six best in the reel) on the
full-size model. The segments' time is this run's P1 full figure (the job
wall time per segment, 8 frames each, on the same machine, minutes before);
the model sees every frame at its own size, so a 1280×720 segment costs what
a 640×360 one does but for its decoding, which P1 includes. Also given: the
worst case, a 60 s video every segment of which is a highlight.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Dict, List, Tuple

import av

from bench.videos import WORK, bench_video
from tools.synthetic_video import tone, write_with_sound
from video_analysis.video.reel import render_reel

SOURCE_SECONDS = 120
FPS = 30
SIZES: Tuple[Tuple[int, int], ...] = ((640, 360), (1280, 720))
# Six 10 s highlights, one in each 20 s of the source: a 60 s reel.
CUTS: List[Tuple[float, float]] = [(start + 5.0, start + 15.0) for start in range(0, SOURCE_SECONDS, 20)]
# A phone's H.264: a keyframe every second, B-frames.
_SOURCE_X264 = {"preset": "veryfast", "g": str(FPS), "bf": "2"}


def reel_source(size: Tuple[int, int]) -> str:
    """The cached 120 s H.264 + AAC source of `size`."""
    path = os.path.join(WORK, f"reel-source-{size[0]}x{size[1]}-{FPS}fps-{SOURCE_SECONDS}s.mp4")
    if os.path.exists(path):
        return path
    picture = bench_video(SOURCE_SECONDS, fps=FPS, size=size)  # fast to draw; re-encoded below

    def frames():
        with av.open(picture) as container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="bgr24")
    pitches = [(float(second), 330.0 + 55.0 * (second // 10 % 5)) for second in range(0, SOURCE_SECONDS, 10)]
    partial = path + ".part.mp4"
    write_with_sound(partial, FPS, size, frames(), tone(SOURCE_SECONDS, pitches, 48000), 48000, "libx264",
                     _SOURCE_X264)
    os.replace(partial, path)
    return path


def reel_rendering(rounds: int) -> Dict[str, dict]:
    """Per source size: the render times, the reel's duration and size, and their ratio (median)."""
    figures = {}
    for size in SIZES:
        source = reel_source(size)
        seconds, reel = [], None
        with tempfile.TemporaryDirectory(dir=WORK) as scratch:
            for _ in range(rounds):
                started = time.perf_counter()
                reel = render_reel(source, CUTS, os.path.join(scratch, "reel.mp4"))
                seconds.append(time.perf_counter() - started)
        median = statistics.median(seconds)
        figures[f"{size[0]}x{size[1]}"] = {
            "render_seconds": seconds, "reel_seconds": reel.duration, "reel_bytes": reel.size,
            "has_audio": reel.has_audio, "ratio": median / reel.duration,
            "frames_per_second": reel.duration * FPS / median,
        }
    return figures


def share_of_full_job(render_seconds: float, seconds_per_segment: float, segments: int) -> float:
    """The rendering's share of a job of `segments` segments at `seconds_per_segment` each, then the rendering."""
    return render_seconds / (segments * seconds_per_segment + render_seconds)
