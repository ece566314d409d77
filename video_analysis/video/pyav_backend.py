"""The PyAV backend: frames decoded from the keyframe right before each one, never over 8K.

`PYAV_FRAMES=0` turns it off (the reader then uses OpenCV for every file).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from video_analysis.cancellation import CancelToken
from video_analysis.config import Config
from video_analysis.video.backend import BackendGaveUp, FrameBackend
from video_analysis.video.capped_decoding import DECODER_ERRORS, FrameTooLarge
from video_analysis.video.errors import frame_too_large
from video_analysis.video.keyframe_decoder import KeyframeDecoder
from video_analysis.video.probe import VideoInfo


def pyav_frames_enabled() -> bool:
    return Config.from_env().PYAV_FRAMES


class PyAVBackend(FrameBackend):
    """Frames through `KeyframeDecoder`; gives up on a file whose packets do not match the probe's count."""

    name = "pyav"

    def __init__(self, path: str, info: VideoInfo, cancel: CancelToken):
        """Scans the file's packets (checking `cancel`); BackendGaveUp when they cannot number its frames."""
        try:
            self._decoder = KeyframeDecoder(path, info.frame_count, cancel)
        except DECODER_ERRORS as error:
            raise BackendGaveUp(str(error)) from None

    @property
    def frames_decoded(self) -> int:
        """Frames decoded so far, sampled or not (bench.experiment_sampling compares it with OpenCV)."""
        return self._decoder.frames_decoded

    def keyframes(self) -> Optional[Sequence[int]]:
        return self._decoder.keyframe_indices()

    def rgb_frame(self, index: int, max_edge: Optional[int]) -> np.ndarray:
        try:
            return self._decoder.frame(index, max_edge)
        except FrameTooLarge as error:
            raise frame_too_large(error.index) from None  # never a reason to try OpenCV, which has no cap
        except DECODER_ERRORS as error:
            raise BackendGaveUp(str(error)) from None

    def close(self) -> None:
        self._decoder.close()
