"""Random moving backgrounds for the training frames: low-saturation, never near-white in solid areas.

So a reddish or bright background is never a square. The product's own
``synthetic_video.background`` is one of the kinds.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from tools.synthetic_video import background

def _soft_colour(rng: np.random.Generator, vmin: float = 10.0, vmax: float = 200.0, smax: float = 0.5) -> np.ndarray:
    """A random BGR colour with HSV saturation <= smax and value in [vmin, vmax]."""
    hue = rng.uniform(0.0, 6.0)
    sat = rng.uniform(0.0, smax)
    val = rng.uniform(vmin, vmax)
    c = val * sat
    x = c * (1 - abs(hue % 2 - 1))
    m = val - c
    sector = int(hue) % 6
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][sector]
    return np.array([b + m, g + m, r + m], dtype=np.float32)


def _grid(w: int, h: int):
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    return x, y


class Scene:
    """One random background that can be rendered at successive times t (moving)."""

    KINDS = ("product", "flat", "gradient", "noise", "blobs", "shapes", "stripes", "checker", "mix")
    WEIGHTS = (2.0, 0.7, 1.5, 1.0, 1.5, 1.5, 1.0, 0.7, 1.0)

    def __init__(self, rng: np.random.Generator, width: int, height: int, kind: Optional[str] = None):
        self.w, self.h = width, height
        self.seed = int(rng.integers(2**31))
        p = np.asarray(self.WEIGHTS) / sum(self.WEIGHTS)
        self.kind = kind or str(rng.choice(self.KINDS, p=p))
        self.noise = float(rng.choice([0.0, 3.0, 6.0, 10.0, 16.0], p=[0.15, 0.25, 0.3, 0.2, 0.1]))
        self.parts = [self._params(rng, self.kind)]
        if self.kind == "mix":
            a, b = rng.choice(["gradient", "blobs", "shapes", "stripes", "product"], size=2, replace=False)
            self.parts = [self._params(rng, str(a)), self._params(rng, str(b))]
            self.alpha = float(rng.uniform(0.3, 0.7))

    def _params(self, rng, kind):
        q = {"kind": kind, "c1": _soft_colour(rng), "c2": _soft_colour(rng)}
        q["angle"] = rng.uniform(0, 2 * np.pi)
        q["speed"] = rng.uniform(-0.08, 0.08)
        if kind == "product":
            q["frame0"] = int(rng.integers(0, 1000))
            q["step"] = int(rng.integers(1, 15))
        elif kind == "stripes" or kind == "checker":
            q["freq"] = rng.uniform(1.5, 12.0)
            q["freq2"] = rng.uniform(1.5, 12.0)
        elif kind == "blobs":
            q["cells"] = (int(rng.integers(2, 7)), int(rng.integers(2, 7)))
            q["colours"] = np.stack([_soft_colour(rng) for _ in range(q["cells"][0] * q["cells"][1] + 6)])
        elif kind == "shapes":
            n = int(rng.integers(1, 7))
            q["shapes"] = [
                (
                    str(rng.choice(["circle", "rect", "line", "ellipse"])),
                    rng.uniform(0, 1, size=2),  # centre
                    rng.uniform(0.05, 0.45),  # size (fraction of height)
                    _soft_colour(rng),
                    rng.uniform(-0.05, 0.05, size=2),  # velocity per frame
                    rng.uniform(0.4, 2.5),  # aspect
                )
                for _ in range(n)
            ]
            q["base"] = "gradient" if rng.random() < 0.5 else "flat"
        return q

    def _render_part(self, q, t: float, rng: np.random.Generator) -> np.ndarray:
        w, h = self.w, self.h
        kind = q["kind"]
        if kind == "product":
            frame = background(q["frame0"] + int(t * q["step"]), w, h, rng).astype(np.float32)
            return frame
        x, y = _grid(w, h)
        c1, c2 = q["c1"], q["c2"]
        if kind == "flat":
            return np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
        if kind == "gradient" or (kind == "shapes" and q["base"] == "gradient"):
            d = np.cos(q["angle"]) * x + np.sin(q["angle"]) * y * h / w
            d = (d - d.min() + q["speed"] * t * 3) % 2.0
            d = np.abs(d - 1.0)[..., None]
            frame = c1 * (1 - d) + c2 * d
        elif kind == "shapes":
            frame = np.broadcast_to(c1, (h, w, 3)).astype(np.float32).copy()
        elif kind in ("stripes", "checker"):
            u = np.cos(q["angle"]) * x * w / h + np.sin(q["angle"]) * y
            v = -np.sin(q["angle"]) * x * w / h + np.cos(q["angle"]) * y
            s = 0.5 + 0.5 * np.sin(2 * np.pi * (q["freq"] * u + q["speed"] * t * 4))
            if kind == "checker":
                s2 = 0.5 + 0.5 * np.sin(2 * np.pi * (q["freq2"] * v))
                s = np.abs(s - s2)
            frame = c1 * (1 - s[..., None]) + c2 * s[..., None]
        elif kind == "blobs":
            gx, gy = q["cells"]
            small = q["colours"][: gx * gy].reshape(gy, gx, 3)
            big = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
            shift = int(q["speed"] * t * w * 2) % w
            frame = np.roll(big, shift, axis=1)
            frame = np.clip(frame, 0.0, 210.0)
        elif kind == "noise":
            # grainy texture, re-drawn every frame: luminance noise plus a little colour noise
            amp = q["speed"] * 400 + 40  # 8..72
            cell = 1 + int(abs(q["angle"]) * 2) % 4
            gh, gw = -(-h // cell), -(-w // cell)
            lum = rng.normal(0.0, abs(amp) * 0.5, size=(gh, gw, 1)).astype(np.float32)
            col = rng.normal(0.0, 6.0, size=(gh, gw, 3)).astype(np.float32)
            grain = np.repeat(np.repeat(lum + col, cell, axis=0), cell, axis=1)[:h, :w]
            frame = c1 * 0.6 + 40 + grain
        else:
            raise ValueError(kind)
        frame = np.ascontiguousarray(frame, dtype=np.float32)
        if kind == "shapes":
            for shape, centre, size, colour, vel, aspect in q["shapes"]:
                cx = int(((centre[0] + vel[0] * t) % 1.0) * w)
                cy = int(((centre[1] + vel[1] * t) % 1.0) * h)
                r = max(2, int(size * h / 2))
                col = tuple(float(c) for c in colour)
                if shape == "circle":
                    cv2.circle(frame, (cx, cy), r, col, -1)
                elif shape == "ellipse":
                    cv2.ellipse(frame, (cx, cy), (r, max(1, int(r / aspect))), float(q["angle"] * 57), 0, 360, col, -1)
                elif shape == "rect":
                    cv2.rectangle(frame, (cx - r, cy - int(r / aspect)), (cx + r, cy + int(r / aspect)), col, -1)
                else:
                    cv2.line(frame, (cx - r, cy - int(r / aspect)), (cx + r, cy + int(r * aspect)), col, max(1, r // 4))
        return frame

    def render(self, t: float, rng: np.random.Generator) -> np.ndarray:
        """BGR float32 frame (not yet clipped) at time t."""
        frame = self._render_part(self.parts[0], t, rng)
        if len(self.parts) == 2:
            frame = self.alpha * frame + (1 - self.alpha) * self._render_part(self.parts[1], t, rng)
        if self.noise:
            frame = frame + rng.normal(0.0, self.noise, size=frame.shape).astype(np.float32)
        return frame
