"""One training frame or clip: a scene, solid squares of a colour, the damage of video coding, the product's resize."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import cv2
import numpy as np

from tools.marker_training.scenes import Scene

# Frame colour labels.
NONE, WHITE, RED, BLUE = 0, 1, 2, 3
COLOUR_NAMES = {NONE: "none", WHITE: "white", RED: "red", BLUE: "blue"}
_PURE_BGR = {WHITE: (255.0, 255.0, 255.0), RED: (0.0, 0.0, 255.0), BLUE: (255.0, 0.0, 0.0)}

# Source frame sizes (width, height) and how often each is drawn: mostly the
# 4:3 and 16:9 frames the product sends, some portrait / square / wide ones.
SOURCE_SIZES: Tuple[Tuple[int, int, float], ...] = (
    (160, 120, 5.0), (96, 72, 1.0), (128, 96, 1.0), (320, 240, 1.0),
    (192, 108, 2.0), (160, 90, 2.0), (256, 144, 1.5), (320, 180, 1.0),
    (90, 160, 0.5), (108, 192, 0.5), (120, 120, 0.5), (200, 100, 0.5),
)
MIN_SIDE, MAX_SIDE = 0.25, 0.6  # square side as a fraction of frame height
# Training squares start a little below the promised quarter of the frame
# height so that squares right at the threshold are seen with margin.
TRAIN_SIDE = (0.2, 0.6)


@dataclass
class Square:
    colour: int
    side: int
    x: float
    y: float
    vx: float
    vy: float

    @classmethod
    def random(cls, rng: np.random.Generator, colour: int, w: int, h: int,
               lo: float = MIN_SIDE, hi: float = MAX_SIDE) -> "Square":
        side = int(math.ceil(h * rng.uniform(lo, hi)))
        side = max(2, min(side, w, h))
        return cls(colour, side, rng.uniform(0, w - side), rng.uniform(0, h - side),
                   rng.uniform(-0.08, 0.08) * w, rng.uniform(-0.08, 0.08) * h)

    def draw(self, frame: np.ndarray, t: float) -> None:
        h, w = frame.shape[:2]
        left = _bounce(self.x + self.vx * t, w - self.side)
        top = _bounce(self.y + self.vy * t, h - self.side)
        frame[top: top + self.side, left: left + self.side] = _PURE_BGR[self.colour]


def _bounce(pos: float, span: int) -> int:
    if span <= 0:
        return 0
    period = 2 * span
    p = pos % period
    return int(round(p if p <= span else period - p))


def degrade(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Clip to uint8 and add the damage video coding does (JPEG round trip, blur)."""
    out = np.clip(frame, 0, 255).astype(np.uint8)
    if rng.random() < 0.15:
        out = cv2.GaussianBlur(out, (3, 3), float(rng.uniform(0.3, 1.0)))
    if rng.random() < 0.5:
        quality = int(rng.integers(35, 96))
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out


def to_model_frame(bgr: np.ndarray, image_size: int):
    """What the product's frame reader (video_analysis.video) hands the model.

    RGB PIL, longest edge shrunk to image_size.
    """
    from PIL import Image

    height, width = bgr.shape[:2]
    scale = image_size / max(height, width)
    if scale < 1:
        bgr = cv2.resize(bgr, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    return Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def random_size(rng: np.random.Generator) -> Tuple[int, int]:
    weights = np.array([s[2] for s in SOURCE_SIZES])
    w, h, _ = SOURCE_SIZES[int(rng.choice(len(SOURCE_SIZES), p=weights / weights.sum()))]
    return w, h


def render_frame(rng: np.random.Generator, colour: int, image_size: int, size=None):
    """One independent frame (random scene, random time) with an optional square."""
    w, h = size or random_size(rng)
    scene = Scene(rng, w, h)
    t = float(rng.uniform(0, 50))
    frame = scene.render(t, rng)
    if colour != NONE:
        Square.random(rng, colour, w, h, *TRAIN_SIDE).draw(frame, 0.0)
    return to_model_frame(degrade(frame, rng), image_size)


def render_clip(rng: np.random.Generator, colours: Sequence[int], image_size: int, size=None,
                side_range: Tuple[float, float] = (MIN_SIDE, 0.5)) -> list:
    """Frames of one moving scene; frame i shows a square of colours[i] (NONE: no square).

    Like frames sampled from one video segment: one background moving over
    time and one square moving across the frames that show it.
    """
    w, h = size or random_size(rng)
    scene = Scene(rng, w, h)
    t0 = float(rng.uniform(0, 50))
    squares = {c: Square.random(rng, c, w, h, *side_range) for c in set(colours) if c != NONE}
    dt = float(rng.uniform(0.3, 3.0))
    frames = []
    for i, colour in enumerate(colours):
        frame = scene.render(t0 + i * dt, rng)
        if colour != NONE:
            squares[colour].draw(frame, i * dt)
        frames.append(to_model_frame(degrade(frame, rng), image_size))
    return frames
