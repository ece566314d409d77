"""Reading the sampled frames of one video, segment after segment.

In-process, by seeking to each frame: no ffmpeg subprocess and no temporary
segment files. Frames come from the PyAV backend, which knows where the
keyframes are (so `read_segment` can prefer them); a file it does not serve,
or a frame it cannot deliver, is read with the OpenCV backend from then on.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

from PIL import Image

from video_analysis.cancellation import CancelToken
from video_analysis.video.backend import BackendGaveUp, FrameBackend
from video_analysis.video.opencv_backend import OpenCVBackend
from video_analysis.video.probe import VideoInfo
from video_analysis.video.pyav_backend import PyAVBackend, pyav_frames_enabled
from video_analysis.video.segments import Segment, sample_frame_indices


class FrameReader:
    """Keeps one video open for all its segments; `cancel` is checked while a backend scans or decodes
    the whole file, and before each frame."""

    def __init__(self, path: str, info: VideoInfo, max_edge: Optional[int] = None,
                 cancel: Optional[CancelToken] = None):
        self._path = path
        self._info = info
        self._max_edge = max_edge
        self._cancel = cancel or CancelToken()
        self.backend: Optional[FrameBackend] = None
        if pyav_frames_enabled():
            try:
                self.backend = PyAVBackend(path, info, self._cancel)
            except BackendGaveUp:
                pass
        if self.backend is None:
            self.backend = OpenCVBackend(path, info, self._cancel)

    def segment_frame_indices(self, segment: Segment, frames_per_segment: int) -> List[int]:
        """The frames `read_segment` reads: slice middles, or keyframes near them when known."""
        return sample_frame_indices(segment, frames_per_segment, self._info, self.backend.keyframes())

    def read_segment(self, segment: Segment, frames_per_segment: int) -> List[Image.Image]:
        return self.read(self.segment_frame_indices(segment, frames_per_segment))

    def read(self, indices: Sequence[int]) -> List[Image.Image]:
        images = []
        for index in indices:
            self._cancel.raise_if_cancelled()
            images.append(Image.fromarray(self._rgb_frame(index)))
        return images

    def _rgb_frame(self, index: int):
        try:
            return self.backend.rgb_frame(index, self._max_edge)
        except BackendGaveUp:
            self.backend.close()
            self.backend = None  # stays None if OpenCV refuses the file too
            self.backend = OpenCVBackend(self._path, self._info, self._cancel)
            return self.backend.rgb_frame(index, self._max_edge)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
