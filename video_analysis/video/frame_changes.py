"""Whether two frames show the same picture: the change measure behind frame selection.

A frame's *signature* is a small copy of it: its longest edge shrunk to
`GRID_CELLS` cells by averaging (PIL's box filter), three colour channels
kept, so a red square on a grey wall of the same brightness still shows.
Averaging a cell's pixels is what makes sensor noise and compression flicker
vanish (a cell of a 640x360 frame averages ~180 pixels: noise of 6 levels per
pixel becomes ~0.5), while a real object moves whole cells.

Two signatures *differ* when at least `CHANGED_SHARE` of the cells moved by
more than `CELL_LEVEL` in some channel. The rule the issue sets is: a square
covering 2 % of the picture, contrasting with what it covers by at least
`CONTRAST` levels, counts as change. At 48x27 cells such a square is ~5.1
cells wide, so it covers at least 4x4 = 16 cells whole (1.2 % of 1296) and
moves each by its full contrast: three times the 0.4 % threshold wherever it
lands. Noise would need a cell's average to move by 20 levels: never seen.
"""
from __future__ import annotations

from typing import List, Sequence, Union

import numpy as np
from PIL import Image

GRID_CELLS = 48  # cells along the longest edge
CELL_LEVEL = 20  # a cell changed: its average moved by more than this (0-255) in a channel
CHANGED_SHARE = 0.004  # the picture changed: at least this share of its cells changed
CONTRAST = 40  # the weakest contrast (levels) of a 2 % square that must count (tests/test_frame_changes.py)


def signature(frame: Union[Image.Image, np.ndarray]) -> np.ndarray:
    """The frame's small copy: (rows, columns, 3) int16, longest edge GRID_CELLS cells (or the frame's own)."""
    image = frame if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame, dtype=np.uint8))
    image = image.convert("RGB")
    width, height = image.size
    scale = min(1.0, GRID_CELLS / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != image.size:
        image = image.resize(size, Image.BOX)
    return np.asarray(image, dtype=np.int16)


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two signatures show different pictures (different sizes always do)."""
    if a.shape != b.shape:
        return True
    changed = (np.abs(a - b) > CELL_LEVEL).any(axis=2)
    return changed.mean() >= CHANGED_SHARE


def choose_changed(signatures: Sequence[np.ndarray]) -> List[int]:
    """The positions of the frames worth sending: the first, then each that differs from every one chosen so far."""
    chosen: List[int] = []
    for position, candidate in enumerate(signatures):
        if all(differs(candidate, signatures[kept]) for kept in chosen):
            chosen.append(position)
    return chosen


def same_pictures(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> bool:
    """Whether two lists of frames show the same pictures, one for one, in the same order."""
    return len(a) == len(b) and not any(differs(x, y) for x, y in zip(a, b))
