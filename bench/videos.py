"""The benchmark's videos: synthetic_video's picture, written fast, cached in bench/work.

synthetic_video.write_video draws a fresh noisy background for every frame
(~16 ms at 640x360), too slow for minutes of 25 fps video. Here a cycle of
backgrounds is drawn once and reused; the moving white squares ("markers")
are drawn per frame as synthetic_video does. The codec is the same (mp4v,
OpenCV's default group of 12 pictures), so decoding costs what a real
MPEG-4 Part 2 file of that size costs. Files are named after their
parameters and reused by later runs.
"""
from __future__ import annotations

import os
import sys
from typing import Sequence, Tuple

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tools.synthetic_video import Marker, background, draw_square

WORK = os.path.join(ROOT, "bench", "work")
DEFAULT_SIZE = (640, 360)
DEFAULT_FPS = 25.0
_BACKGROUND_CYCLE = 50  # frames drawn once and reused


def markers_for(duration: float) -> Tuple[Marker, ...]:
    """A white square for 4 s in every 30 s, so some segments differ from the rest."""
    return tuple(Marker(start, min(start + 4.0, duration)) for start in np.arange(12.0, duration, 30.0))


def write_fast(path: str, duration: float, fps: float = DEFAULT_FPS, size: Tuple[int, int] = DEFAULT_SIZE,
               markers: Sequence[Marker] = (), seed: int = 0) -> str:
    width, height = size
    rng = np.random.default_rng(seed)
    backgrounds = [background(i, width, height, rng) for i in range(_BACKGROUND_CYCLE)]
    tmp = path + ".part.mp4"
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write mp4 videos on this machine")
    try:
        for index in range(int(round(duration * fps))):
            now = index / fps
            active = [m for m in markers if m.start <= now < m.end]
            frame = backgrounds[index % _BACKGROUND_CYCLE]
            if active:
                frame = frame.copy()
                for marker in active:
                    draw_square(frame, marker.colour, index)
            writer.write(frame)
    finally:
        writer.release()
    os.replace(tmp, path)
    return path


def bench_video(duration: float, fps: float = DEFAULT_FPS, size: Tuple[int, int] = DEFAULT_SIZE) -> str:
    """The cached benchmark video of `duration` seconds (written on first use)."""
    os.makedirs(WORK, exist_ok=True)
    path = os.path.join(WORK, f"bench-{size[0]}x{size[1]}-{fps:g}fps-{duration:g}s.mp4")
    if not os.path.exists(path):
        write_fast(path, duration, fps, size, markers_for(duration))
    return path


if __name__ == "__main__":
    for seconds in sys.argv[1:] or ["60"]:
        print(bench_video(float(seconds)))
