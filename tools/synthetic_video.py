"""Videos the project makes itself with OpenCV, for tests, demos and benchmarks.

A video is a moving, low-saturation background with optional solid squares
("markers") shown during chosen time intervals. The marker test model
(`python -m tools.make_tiny_model --preset marker`) is trained to see such squares, so
a test can know which moments a correct analysis must find.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

# BGR, as OpenCV draws.
COLOURS = {"white": (255, 255, 255), "red": (0, 0, 255), "blue": (255, 0, 0)}
_CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".webm": "VP80", ".mov": "mp4v"}


@dataclass(frozen=True)
class Marker:
    """A solid square of `colour` visible from `start` to `end` seconds."""

    start: float
    end: float
    colour: str = "white"


def background(frame_index: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A drifting gradient with a little noise, kept well below half saturation."""
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    phase = frame_index / 15.0
    base = 70 + 40 * np.sin(2 * np.pi * (x + y) + phase)
    frame = np.empty((height, width, 3), dtype=np.float32)
    frame[..., 0] = base
    frame[..., 1] = base + 10 * np.cos(phase)
    frame[..., 2] = base + 5
    frame += rng.normal(0, 6, size=frame.shape).astype(np.float32)
    return np.clip(frame, 0, 255).astype(np.uint8)


def draw_square(frame: np.ndarray, colour: str, frame_index: int, side_fraction: float = 0.35) -> None:
    """A square of the given colour that moves slowly across the frame."""
    height, width = frame.shape[:2]
    side = int(height * side_fraction)
    span_x, span_y = max(1, width - side), max(1, height - side)
    left = (frame_index * 3) % span_x
    top = (frame_index * 2) % span_y
    frame[top : top + side, left : left + side] = COLOURS[colour]


def _frames(duration: float, fps: float, size: Tuple[int, int], markers: Sequence[Marker], seed: int):
    width, height = size
    rng = np.random.default_rng(seed)
    for index in range(int(round(duration * fps))):
        frame = background(index, width, height, rng)
        now = index / fps
        for marker in markers:
            if marker.start <= now < marker.end:
                draw_square(frame, marker.colour, index)
        yield frame


def write_video(
    path: str,
    duration: float = 6.0,
    fps: float = 10.0,
    size: Tuple[int, int] = (160, 120),
    markers: Sequence[Marker] = (),
    seed: int = 0,
    codec: Optional[str] = None,
    codec_options: Optional[Dict[str, str]] = None,
) -> str:
    """Write a video of `duration` seconds to `path`.

    By default OpenCV writes it and the codec follows the extension. With
    `codec` (an FFmpeg encoder name such as "libx264" or "libx265", with its
    `codec_options`), PyAV encodes the same pictures instead: that is how
    tests get the B-frames and open GOPs of phone videos, which OpenCV's
    writer cannot make.
    """
    if codec is not None:
        return _write_with_pyav(path, codec, codec_options or {}, fps, size, _frames(duration, fps, size, markers, seed))
    extension = os.path.splitext(path)[1].lower()
    fourcc = cv2.VideoWriter_fourcc(*_CODECS.get(extension, "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {extension} videos on this machine")
    try:
        for frame in _frames(duration, fps, size, markers, seed):
            writer.write(frame)
    finally:
        writer.release()
    return str(path)


def still_video(path: str, seconds: int, fps: int, marked_at: Sequence[Tuple[float, float]] = ()) -> str:
    """A fixed camera on a still picture with sensor noise; a bright square during each (start, end) of `marked_at`.

    Unlike `write_video`'s drifting background, nothing changes between the squares: frame selection
    "changes" sends one frame of such a stretch and its later segments reuse that answer.
    """
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, 160, dtype=np.float32)[None, :, None]
    picture = np.broadcast_to(80 + 60 * x, (90, 160, 3)).astype(np.float32)
    fourcc = cv2.VideoWriter_fourcc(*_CODECS.get(os.path.splitext(path)[1].lower(), "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (160, 90))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {os.path.splitext(path)[1]} videos on this machine")
    try:
        for index in range(seconds * fps):
            frame = picture.copy()
            if any(start <= index / fps < end for start, end in marked_at):
                frame[30:60, 60:100] = 250
            writer.write(np.clip(frame + rng.normal(0, 5, frame.shape), 0, 255).astype(np.uint8))
    finally:
        writer.release()
    return str(path)


def _write_with_pyav(path, codec, options, fps, size, frames) -> str:
    import av  # only this path needs it

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=options)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        container.mux(stream.encode())  # flush the encoder's delayed frames
    return str(path)


def _parse_marker(text: str) -> Marker:
    start, end, *colour = text.split(":")
    return Marker(float(start), float(end), colour[0] if colour else "white")


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic test video.")
    parser.add_argument("out")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--marker", action="append", default=[], type=_parse_marker,
                        help="START:END[:white|red|blue] seconds with a solid square, repeatable")
    args = parser.parse_args()
    write_video(args.out, args.duration, args.fps, (args.width, args.height), args.marker)
    print(args.out)


if __name__ == "__main__":
    main()
