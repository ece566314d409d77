"""Videos the project makes itself with OpenCV (or PyAV), for tests, demos and benchmarks.

A video is a low-saturation background with optional solid squares
("markers") shown during chosen time intervals. The marker test model
(`python -m tools.make_tiny_model --preset marker`) is trained to see such squares, so
a test can know which moments a correct analysis must find.

Three scenes: "moving" (the default), a slowly drifting gradient; "static",
one fixed picture (a fixed camera on a room) with fresh sensor noise of a
chosen sigma in every frame, written through the same codec, so the
compression flicker is the codec's own; and "busy", the same room with
muted blocks (people, things) crossing it fast, so that any two frames a
few tenths of a second apart differ. The drift of "moving" is slow: frames
half a second apart differ by at most ~16 grey levels, which a change
measure may rightly call the same picture.
A marker has today's size (a side of 0.35 of the height) unless given an
`area` (a fraction of the picture), and moves unless it is `still`.
`tone_video` writes the same pictures with a sound track: a sine tone whose
pitch changes at chosen times, so a test can tell by ear (an FFT) which
moment of the source a piece of sound comes from.
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
SCENES = ("moving", "static", "busy")


@dataclass(frozen=True)
class Marker:
    """A solid square of `colour` visible from `start` to `end` seconds."""

    start: float
    end: float
    colour: str = "white"
    area: Optional[float] = None  # fraction of the picture the square covers; None: a side of 0.35 of the height
    still: bool = False  # True: drawn at the same place in every frame (in the middle of the picture)

    def side(self, width: int, height: int) -> int:
        if self.area is None:
            return int(height * 0.35)
        return max(1, min(width, height, int(round(np.sqrt(self.area * width * height)))))


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


def still_picture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A fixed, room-like picture: a shaded wall and floor with a few muted pieces of furniture.

    Low-saturation and never near white, like the backgrounds the marker model was trained on,
    so a white, red or blue square is the only thing in it that looks like a marker.
    """
    rng = np.random.default_rng([seed, 1])
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    wall = np.array([95, 105, 115], dtype=np.float32) + 30 * (1 - y) - 15 * x
    floor = np.array([60, 75, 90], dtype=np.float32) + 25 * y
    picture = np.where(y < 0.68, wall, floor)
    for _ in range(4):
        w, h = rng.uniform(0.1, 0.3) * width, rng.uniform(0.15, 0.45) * height
        left, top = rng.uniform(0, width - w), rng.uniform(0.1 * height, height - h)
        tone = rng.uniform(45, 150) + rng.uniform(-12, 12, size=3)
        picture[int(top):int(top + h), int(left):int(left + w)] = tone
    return np.clip(picture, 0, 255).astype(np.float32)


def _crossing_blocks(picture: np.ndarray, index: int, seed: int) -> np.ndarray:
    """`picture` with four muted blocks bouncing across it at 2-4 % of its width a frame."""
    height, width = picture.shape[:2]
    rng = np.random.default_rng([seed, 2])
    frame = picture.copy()
    for _ in range(4):
        w, h = int(rng.uniform(0.12, 0.25) * width), int(rng.uniform(0.3, 0.6) * height)
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        vx, vy = rng.choice([-1, 1], size=2) * rng.uniform(0.02, 0.04, size=2) * (width, height)
        left = _bounce(x0 + vx * index, width - w)
        top = _bounce(y0 + vy * index, height - h)
        frame[top:top + h, left:left + w] = rng.uniform(35, 140) + rng.uniform(-12, 12, size=3)
    return frame


def _bounce(position: float, span: int) -> int:
    period = 2 * max(1, span)
    p = position % period
    return int(p if p <= span else period - p)


def draw_square(frame: np.ndarray, colour: str, frame_index: int, side_fraction: float = 0.35,
                side: Optional[int] = None, still: bool = False) -> None:
    """A square of the given colour that moves slowly across the frame (`still`: stays in its middle).

    Its side is `side` pixels when given, else `side_fraction` of the frame's height.
    """
    height, width = frame.shape[:2]
    side = int(height * side_fraction) if side is None else side
    span_x, span_y = max(1, width - side), max(1, height - side)
    if still:
        left, top = (width - side) // 2, (height - side) // 2
    else:
        left = (frame_index * 3) % span_x
        top = (frame_index * 2) % span_y
    frame[top : top + side, left : left + side] = COLOURS[colour]


def _frames(duration: float, fps: float, size: Tuple[int, int], markers: Sequence[Marker], seed: int,
            scene: str = "moving", noise: float = 3.0):
    width, height = size
    rng = np.random.default_rng(seed)
    picture = None if scene == "moving" else still_picture(width, height, seed)
    for index in range(int(round(duration * fps))):
        if picture is None:
            frame = background(index, width, height, rng)
        else:
            scenery = _crossing_blocks(picture, index, seed) if scene == "busy" else picture
            grain = rng.standard_normal(picture.shape, dtype=np.float32) * noise if noise else 0
            frame = np.clip(scenery + grain, 0, 255).astype(np.uint8)
        now = index / fps
        for marker in markers:
            if marker.start <= now < marker.end:
                if marker.area is None and not marker.still:
                    draw_square(frame, marker.colour, index)  # today's square, drawn exactly as before
                else:
                    draw_square(frame, marker.colour, index, side=marker.side(width, height), still=marker.still)
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
    scene: str = "moving",
    noise: float = 3.0,
) -> str:
    """Write a video of `duration` seconds to `path`.

    `scene` is "moving" (the drifting background), "static" (`still_picture`
    with fresh Gaussian noise of sigma `noise`, in grey levels, in every
    frame) or "busy" (the same with blocks crossing it); `noise` applies to
    "static" and "busy" only.

    By default OpenCV writes it and the codec follows the extension. With
    `codec` (an FFmpeg encoder name such as "libx264" or "libx265", with its
    `codec_options`), PyAV encodes the same pictures instead: that is how
    tests get the B-frames and open GOPs of phone videos, which OpenCV's
    writer cannot make.
    """
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {', '.join(SCENES)}, not {scene!r}")
    frames = _frames(duration, fps, size, markers, seed, scene, noise)
    if codec is not None:
        return _write_with_pyav(path, codec, codec_options or {}, fps, size, frames)
    return write_frames(path, fps, size, frames)


def write_frames(path: str, fps: float, size: Tuple[int, int], frames) -> str:
    """BGR frames to `path` with OpenCV's writer, the codec chosen by the file's extension (mp4v by default)."""
    extension = os.path.splitext(path)[1].lower()
    fourcc = cv2.VideoWriter_fourcc(*_CODECS.get(extension, "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {extension} videos on this machine")
    try:
        for frame in frames:
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

    def frames():
        for index in range(seconds * fps):
            frame = picture.copy()
            if any(start <= index / fps < end for start, end in marked_at):
                frame[30:60, 60:100] = 250
            yield np.clip(frame + rng.normal(0, 5, frame.shape), 0, 255).astype(np.uint8)
    return write_frames(path, fps, (160, 90), frames())


def tone_video(
    path: str,
    seconds: float,
    fps: float,
    size: Tuple[int, int],
    pitches: Sequence[Tuple[float, float]] = ((0.0, 440.0),),
    markers: Sequence[Marker] = (),
    sample_rate: int = 48000,
    codec: str = "libx264",
    codec_options: Optional[Dict[str, str]] = None,
    seed: int = 0,
) -> str:
    """`write_video`'s moving scene, encoded by PyAV with an AAC sound track (mono): a sine tone whose
    pitch is `hz` from each `(start, hz)` of `pitches` (sorted) until the next.

    The phase runs on across a change, so the only thing that changes there is the pitch.
    """
    frames = _frames(seconds, fps, size, markers, seed)
    return _write_with_pyav(path, codec, codec_options or {}, fps, size, frames,
                            sound=(tone(seconds, pitches, sample_rate), sample_rate))


def tone(seconds: float, pitches: Sequence[Tuple[float, float]], sample_rate: int) -> np.ndarray:
    """Samples (float32, amplitude 0.5) of the tone `tone_video` writes."""
    times = np.arange(int(round(seconds * sample_rate))) / sample_rate
    starts = np.array([start for start, _ in pitches])
    hz = np.array([hz for _, hz in pitches], dtype=np.float64)
    frequency = hz[np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(hz) - 1)]
    phase = 2 * np.pi * np.cumsum(frequency) / sample_rate
    return (0.5 * np.sin(phase)).astype(np.float32)


def _write_with_pyav(path, codec, options, fps, size, frames, sound=None) -> str:
    """Frames (BGR) through `codec`; with `sound` (mono float samples, sample rate), an AAC track too,
    muxed as the frames go so the file is interleaved as a camera's is."""
    import av  # only this path needs it

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=options)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        audio, written = None, 0
        if sound is not None:
            samples, rate = sound
            audio = container.add_stream("aac", rate=rate, layout="mono")
        for index, frame in enumerate(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
            if audio is not None:
                until = min(len(samples), int(round((index + 1) / fps * rate)))
                written = _mux_sound(container, audio, samples, written, until, rate)
        container.mux(stream.encode())  # flush the encoder's delayed frames
        if audio is not None:
            _mux_sound(container, audio, samples, written, len(samples), rate)
            container.mux(audio.encode())
    return str(path)


def _mux_sound(container, stream, samples: np.ndarray, start: int, stop: int, rate: int) -> int:
    import av

    if stop > start:
        frame = av.AudioFrame.from_ndarray(samples[None, start:stop], format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        container.mux(stream.encode(frame))
    return max(start, stop)


def rotate_mp4(path: str, degrees: int) -> str:
    """Set the first track's display matrix (tkhd) of the MP4 `path` in place, as phones do for portrait
    videos; the first track is the video in every file written here."""
    import math
    import struct

    data = bytearray(open(path, "rb").read())
    at = data.find(b"tkhd")
    matrix_at = at + 4 + (52 if data[at + 4] == 1 else 40)
    cos, sin = round(math.cos(math.radians(degrees))), round(math.sin(math.radians(degrees)))

    def fixed(value):
        return struct.pack(">i", value * 0x10000)

    data[matrix_at:matrix_at + 36] = (fixed(cos) + fixed(sin) + bytes(4) + fixed(-sin) + fixed(cos) + bytes(4)
                                      + bytes(8) + struct.pack(">i", 0x40000000))
    open(path, "wb").write(bytes(data))
    return path


def _parse_marker(text: str) -> Marker:
    start, end, *rest = text.split(":")
    colour = rest[0] if rest and rest[0] else "white"
    area = float(rest[1]) if len(rest) > 1 and rest[1] else None
    still = len(rest) > 2 and rest[2] == "still"
    return Marker(float(start), float(end), colour, area, still)


def _parse_pitch(text: str) -> Tuple[float, float]:
    start, hz = text.split(":")
    return float(start), float(hz)


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic test video.")
    parser.add_argument("out")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--marker", action="append", default=[], type=_parse_marker,
                        help="START:END[:white|red|blue[:AREA[:still]]] seconds with a solid square covering AREA "
                             "of the picture (e.g. 0.02), still or moving; repeatable")
    parser.add_argument("--scene", choices=SCENES, default="moving",
                        help="moving: a drifting background; static: one fixed picture with sensor noise; "
                             "busy: the same picture with blocks crossing it fast")
    parser.add_argument("--noise", type=float, default=3.0, help="static and busy scenes: noise sigma in grey levels")
    parser.add_argument("--pitch", action="append", default=[], type=_parse_pitch,
                        help="START:HZ: a sound track (H.264 + AAC, moving scene) whose tone is HZ from START "
                             "seconds on; repeatable")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.pitch:
        tone_video(args.out, args.duration, args.fps, (args.width, args.height), sorted(args.pitch), args.marker,
                   seed=args.seed)
    else:
        write_video(args.out, args.duration, args.fps, (args.width, args.height), args.marker, seed=args.seed,
                    scene=args.scene, noise=args.noise)
    print(args.out)


if __name__ == "__main__":
    main()
