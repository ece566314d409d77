"""The frame-reader interface: frames of one open video by number, from one of two backends.

`PyAVBackend` (keyframe seeking, capped decoding) serves most files;
`OpenCVBackend` serves the rest. The reader starts with the first and falls
back to the second when it gives up (`BackendGaveUp`). Both give the same
pixels, upright (tested on MPEG-4, MJPEG, VP8, H.264, HEVC and rotated files).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Optional, Sequence

import numpy as np


class BackendGaveUp(Exception):
    """This backend cannot serve the file, or a frame of it, where the other backend may."""


class FrameBackend(ABC):
    name: ClassVar[str]  # "pyav" or "opencv": which one served a read (tests and benchmarks ask)

    def keyframes(self) -> Optional[Sequence[int]]:
        """The keyframes' frame numbers, sorted, when this backend knows them (sampling then prefers them)."""
        return None

    @abstractmethod
    def rgb_frame(self, index: int, max_edge: Optional[int]) -> np.ndarray:
        """Frame `index` (from 0) upright, RGB, its longest edge at most `max_edge`.

        Raises VideoError for a frame no backend can give (over 8K, past the
        decodable end), BackendGaveUp when the other backend may still do it.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the file; idempotent."""
