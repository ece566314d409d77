"""The OpenCV backend: for files the PyAV backend does not serve, and only once a capped decode allowed it.

No frame larger than 8K may be decoded, and OpenCV's decoder cannot be
capped; so this backend opens a file only after PyAV decoded every frame of
it with the cap (`decodable_frames`): a frame over it is a VideoError naming
it, and a file whose frames stop decoding early is refused there too.
"""
from __future__ import annotations

import bisect
from typing import List, Optional

import cv2
import numpy as np

from video_analysis.cancellation import CancelToken
from video_analysis.video.backend import FrameBackend
from video_analysis.video.capped_decoding import DECODER_ERRORS, FrameTooLarge, decodable_frames, shrunk_size
from video_analysis.video.errors import NOT_A_VIDEO, VideoError, frame_too_large, undecodable
from video_analysis.video.probe import VideoInfo

# Without the file's keyframe positions: read forward frame by frame when the
# target is this close, seek otherwise.
_SEQUENTIAL_READ_WINDOW = 48
# OpenCV's seek (cap_ffmpeg_impl.hpp) jumps to the last keyframe at or before
# `target - 16` and decodes forward from there.
_OPENCV_SEEK_BACKOFF = 16


class KeyframeScan:
    """Where a video's keyframes are, read from its packets without decoding them.

    Scanned lazily, only as far as the frames asked about, through OpenCV's
    raw-stream mode (~8 µs a packet). Packet numbers stand in for frame
    numbers: equal without B-frames, a few frames apart with them, which is
    close enough to estimate what a seek costs.
    """

    def __init__(self, path: str):
        self._capture: Optional[cv2.VideoCapture] = cv2.VideoCapture(
            str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_FORMAT, -1])
        if not self._capture.isOpened():
            self.close()
        self._scanned = 0  # packets looked at
        self._keyframes: List[int] = []

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def last_at_or_before(self, index: int) -> Optional[int]:
        """The last keyframe at or before `index`; None when the scan cannot tell."""
        while self._capture is not None and self._scanned <= index:
            if not self._capture.grab():
                self.close()
                break
            if self._capture.get(cv2.CAP_PROP_LRF_HAS_KEY_FRAME):
                self._keyframes.append(self._scanned)
            self._scanned += 1
        if self._scanned <= index:
            return None  # the packets ended early: a damaged file, use the plain rule
        position = bisect.bisect_right(self._keyframes, index) - 1
        return self._keyframes[position] if position >= 0 else None


class OpenCVBackend(FrameBackend):
    """Frames by number through OpenCV, decoding the fewest frames it can for each.

    Reading forward from the last frame read, or seeking (OpenCV decodes from
    the last keyframe at least 16 frames before the target), whichever decodes
    fewer, judged from the file's keyframe positions. Both give the same frame.
    """

    name = "opencv"

    def __init__(self, path: str, info: VideoInfo, cancel: CancelToken):
        """Decodes every frame with PyAV's cap first (checking `cancel`); VideoError when one is over 8K
        or the frames stop decoding before the probe's count."""
        try:
            decodable = decodable_frames(path, cancel)
        except FrameTooLarge as error:
            raise frame_too_large(error.index) from None
        except DECODER_ERRORS:
            decodable = 0
        if decodable < info.frame_count:
            raise undecodable(decodable, info.fps, info.frame_count)
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            self._capture.release()
            raise VideoError(NOT_A_VIDEO)
        self.keyframe_scan = KeyframeScan(path)
        self._info = info
        self._position = -1  # index of the frame last read

    def close(self) -> None:
        self.keyframe_scan.close()
        self._capture.release()

    def reads_forward(self, index: int) -> bool:
        """Whether frame `index` is cheaper to reach by reading forward than by seeking."""
        gap = index - self._position
        if gap <= 0:
            return False
        seek_start = self.keyframe_scan.last_at_or_before(max(0, index - _OPENCV_SEEK_BACKOFF))
        if seek_start is None:
            return gap <= _SEQUENTIAL_READ_WINDOW
        return gap <= index - seek_start + 1

    def rgb_frame(self, index: int, max_edge: Optional[int]) -> np.ndarray:
        frame = self._bgr_frame(index)
        size = shrunk_size(frame.shape[1], frame.shape[0], max_edge)
        if size is not None:
            # Shrinking before the colour conversion converts fewer pixels; INTER_AREA keeps thin details visible.
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def _bgr_frame(self, index: int) -> np.ndarray:
        if self.reads_forward(index):
            for _ in range(index - self._position - 1):
                if not self._capture.grab():
                    raise undecodable(index, self._info.fps, self._info.frame_count)
            ok, frame = self._capture.read()
        else:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, frame = self._capture.read()
        if not ok or frame is None:
            raise undecodable(index, self._info.fps, self._info.frame_count)
        self._position = index
        return frame
