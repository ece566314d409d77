"""Videos of several shots with hard cuts at known frames, for the cut detector's tests and benchmark.

Each shot has its own picture (a gradient, stripes, a checkerboard, rings or
blobs, in its own orientation and tint) and its own motion (a shape that
moves, a picture that drifts), with sensor noise on every frame. Shots come
in pairs of equal mean brightness, so a detector that only watches the mean
misses half the cuts. `write_static_video` writes the opposite: one
fade-free static shot with sensor noise, where no cut must be found.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from tools.synthetic_video import write_frames

PATTERNS = ("gradient", "stripes", "checker", "rings", "blobs")
MOTIONS = ("square", "disc", "bar", "drift", "still")


@dataclass(frozen=True)
class Shot:
    """`frames` frames of one picture and one motion; the cut into the next shot is at its end."""

    frames: int
    pattern: str
    motion: str
    angle: float  # radians: the pattern's orientation
    tint: Tuple[float, float, float]  # BGR gains around 1
    brightness: float  # the picture's mean level, 0-255
    seed: int


def random_shots(count: int, fps: float, seed: int = 0, shortest: float = 1.2, longest: float = 3.0) -> List[Shot]:
    """`count` shots of `shortest`-`longest` seconds; shots 2k and 2k+1 share a mean brightness.

    Two shots in a row never share a pattern: two pictures of one pattern at
    one brightness may be the same picture (rings turned, say), not a cut.
    """
    rng = np.random.default_rng(seed)
    shots: List[Shot] = []
    pattern = int(rng.integers(0, len(PATTERNS)))
    for i in range(count):
        if i % 2 == 0:
            brightness = float(rng.uniform(70, 150))
        if i:
            pattern = (pattern + 1 + int(rng.integers(0, len(PATTERNS) - 1))) % len(PATTERNS)
        shots.append(Shot(
            frames=int(round(rng.uniform(shortest, longest) * fps)),
            pattern=PATTERNS[pattern],
            motion=MOTIONS[int(rng.integers(0, len(MOTIONS)))],
            angle=float(rng.uniform(0, np.pi)),
            tint=tuple(float(g) for g in rng.uniform(0.75, 1.25, 3)),
            brightness=brightness,
            seed=int(rng.integers(0, 2**31)),
        ))
    return shots


def cut_frames(shots: Sequence[Shot]) -> List[int]:
    """The first frame of every shot but the first: where the cuts are."""
    starts, at = [], 0
    for shot in shots[:-1]:
        at += shot.frames
        starts.append(at)
    return starts


def _picture(shot: Shot, width: int, height: int, shift: float) -> np.ndarray:
    """The shot's picture (float32 BGR), its pattern moved `shift` pixels along its orientation."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    along = (x - width / 2) * np.cos(shot.angle) + (y - height / 2) * np.sin(shot.angle) + shift
    across = -(x - width / 2) * np.sin(shot.angle) + (y - height / 2) * np.cos(shot.angle)
    scale = min(width, height)
    if shot.pattern == "gradient":
        grey = along / max(width, height)
    elif shot.pattern == "stripes":
        grey = np.sin(along / scale * 2 * np.pi * 3)
    elif shot.pattern == "checker":
        cell = scale / 4
        grey = np.where((np.floor(along / cell) + np.floor(across / cell)) % 2 == 0, 1.0, -1.0)
    elif shot.pattern == "rings":
        # Centred off the middle, on the side the angle points to: each shot's rings are its own.
        grey = np.cos(np.hypot(along + scale / 3, across) / scale * 2 * np.pi * 2.5)
    else:  # blobs: smooth random shapes, fixed for the shot
        rng = np.random.default_rng(shot.seed)
        small = rng.normal(0, 1, (6, 8)).astype(np.float32)
        grey = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        grey = np.roll(grey, int(shift), axis=1)
    grey = grey - grey.mean()
    grey = grey / (np.abs(grey).max() + 1e-6) * 60  # +-60 levels around the shot's brightness
    picture = np.stack([shot.brightness + grey * gain for gain in shot.tint], axis=-1)
    return picture - picture.mean() + shot.brightness


def _draw_motion(frame: np.ndarray, shot: Shot, step: int) -> None:
    height, width = frame.shape[:2]
    side = height // 4
    level = 255.0 if shot.brightness < 110 else 20.0  # a shape that contrasts with the picture
    if shot.motion == "square":
        left, top = (step * 2) % max(1, width - side), (step * 1) % max(1, height - side)
        frame[top:top + side, left:left + side] = level
    elif shot.motion == "disc":
        centre = (int(width / 2 + width / 3 * np.cos(step / 12)), int(height / 2 + height / 4 * np.sin(step / 12)))
        cv2.circle(frame, centre, side // 2, (level, level, level), -1)
    elif shot.motion == "bar":
        left = (step * 3) % max(1, width - side // 3)
        frame[:, left:left + side // 3] = level


def shot_frames(shots: Sequence[Shot], size: Tuple[int, int], noise: float = 4.0, seed: int = 0):
    """Every frame of the shots in turn, uint8 BGR, with Gaussian sensor noise of `noise` levels."""
    width, height = size
    rng = np.random.default_rng(seed)
    for shot in shots:
        still = _picture(shot, width, height, 0.0)
        for step in range(shot.frames):
            frame = _picture(shot, width, height, step * 0.7) if shot.motion == "drift" else still.copy()
            _draw_motion(frame, shot, step)
            frame += rng.normal(0, noise, frame.shape).astype(np.float32)
            yield np.clip(frame, 0, 255).astype(np.uint8)


def static_frames(frames: int, size: Tuple[int, int], noise: float = 6.0, seed: int = 0):
    """One still picture (no fade, no motion) with fresh sensor noise on every frame."""
    shot = Shot(frames, "rings", "still", 0.4, (1.1, 0.95, 0.9), 110.0, seed)
    return shot_frames([shot], size, noise, seed)


def write_shot_video(path: str, shots: Sequence[Shot], fps: float = 15.0, size: Tuple[int, int] = (160, 120),
                     noise: float = 4.0, seed: int = 0) -> List[int]:
    """Write the shots back to back with hard cuts (OpenCV's writer: mp4v, a keyframe every 12 frames).

    Returns the cut frames (the first frame of each shot after the first).
    """
    write_frames(path, fps, size, shot_frames(shots, size, noise, seed))
    return cut_frames(shots)


def write_static_video(path: str, duration: float = 10.0, fps: float = 15.0, size: Tuple[int, int] = (160, 120),
                       noise: float = 6.0, seed: int = 0) -> str:
    """A single static shot with sensor noise: no cut in it."""
    return write_frames(path, fps, size, static_frames(int(round(duration * fps)), size, noise, seed))


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a video of shots with hard cuts; prints the cut frames.")
    parser.add_argument("out")
    parser.add_argument("--shots", type=int, default=12)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cuts = write_shot_video(args.out, random_shots(args.shots, args.fps, args.seed), args.fps,
                            (args.width, args.height), seed=args.seed)
    print(args.out, "cuts at frames", cuts)


if __name__ == "__main__":
    main()
