"""Reading videos: probing, planning segments, sampling frames.

Frames are sampled in-process by seeking to their timestamps, so no ffmpeg
subprocess and no temporary segment files are needed: through PyAV
(`keyframe_decoder`), which decodes the fewest frames, or OpenCV for files
PyAV does not serve. Phone videos often report a frame count or fps that is
wrong; `probe_video` checks what the container claims against what can
actually be decoded. The probe decodes with PyAV only, capped so that no
frame larger than 8K is ever decoded (OpenCV's decoder cannot be capped).
"""
from __future__ import annotations

import bisect
import math
import os
import threading
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from video_analysis.video import keyframe_decoder
from video_analysis.cancellation import raise_if_cancelled
from video_analysis.video.keyframe_decoder import MAX_FRAME_PIXELS, FrameTooLarge, KeyframeDecoder, shrunk_size

# An fps outside this range is a lie from the container, not a real rate.
_PLAUSIBLE_FPS = (1.0, 480.0)
_FALLBACK_FPS = 25.0
# A header may overstate its frame count a little (phone videos often do);
# more than this is a file cut short, which is refused.
_COUNT_SLACK_FRAMES = 2
_COUNT_SLACK_FRACTION = 0.1
# Without the file's keyframe positions: read forward frame by frame when the
# target is this close, seek otherwise.
_SEQUENTIAL_READ_WINDOW = 48
# OpenCV's seek (cap_ffmpeg_impl.hpp) jumps to the last keyframe at or before
# `target - 16` and decodes forward from there.
_OPENCV_SEEK_BACKOFF = 16


class VideoError(Exception):
    """The file is not a video we can analyse; the message is for a person."""


_NOT_A_VIDEO = "The file is not a video that can be decoded; upload an MP4, MOV, WebM or AVI video."


@dataclass(frozen=True)
class VideoInfo:
    filename: str
    duration_seconds: float
    fps: float
    frame_count: int
    width: int
    height: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Segment:
    index: int  # 1-based, as people count segments
    start_time: float
    end_time: float


def _open(path: str) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise VideoError(_NOT_A_VIDEO)
    return capture


def _check_frame_size(width: int, height: int) -> None:
    if width * height > MAX_FRAME_PIXELS:
        raise VideoError(f"The video's frames are {width}x{height} pixels, larger than the 8K (8192x4320) "
                         "this service reads; upload a smaller version of the video.")


def _too_large(error: FrameTooLarge) -> VideoError:
    """The sentence for a frame the capped decoder refused: its size is not known, only that it is over."""
    which = f"Frame {error.index + 1} of the video" if error.index is not None else "A frame of the video"
    return VideoError(f"{which} is larger than the 8K (8192x4320 pixels) this service reads; "
                      "upload a smaller version of the video.")


def _undecodable(index: int, info: "VideoInfo") -> VideoError:
    at = format_clock(index / info.fps)
    return VideoError(f"The video could not be decoded at {at} (frame {index + 1} of {info.frame_count}); "
                      "the file may be truncated or damaged.")


def probe_video(path: str, display_name: Optional[str] = None) -> VideoInfo:
    """Open `path` and return what it really holds, or raise VideoError.

    A still image (which FFmpeg opens as a one-frame video) and a video with
    no decodable frame are refused: there is nothing to watch over time.
    Frames are counted from the file's packets, without decoding them; the
    last one and the first are decoded to check they are real (a file cut
    short is refused when they are far fewer than its header promised). All
    decoding is PyAV's, capped: a frame larger than 8K met on the way is
    refused by the decoder before it takes any memory, and named.
    """
    try:
        decoder = KeyframeDecoder(path, None)
    except keyframe_decoder.DECODER_ERRORS:
        raise VideoError(_NOT_A_VIDEO) from None
    try:
        return _probe(decoder, path, display_name)
    except FrameTooLarge as error:
        raise _too_large(error) from None
    finally:
        decoder.close()


def _claims(stream, duration_us: Optional[int]) -> Tuple[int, int, float, int]:
    """What the container says: width, height, frame rate, frame count (0 when it does not say)."""
    context = stream.codec_context
    fps = float(stream.guessed_rate or 0)
    count = stream.frames or 0
    if not count and fps > 0:
        if duration_us:
            seconds = duration_us / 1e6
        elif stream.duration and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        else:
            seconds = 0.0
        count = int(seconds * fps + 0.5)
    count = count if 0 <= count < 1e9 else 0
    return context.width or 0, context.height or 0, fps, count


def _probe(decoder: KeyframeDecoder, path: str, display_name: Optional[str]) -> VideoInfo:
    width, height, claimed_fps, claimed_count = _claims(decoder.stream, decoder.stream.container.duration)
    # The size the container declares (FFmpeg's stream-info probe has seen no frame over the cap).
    _check_frame_size(width, height)
    try:
        if not decoder.indexed:
            raise keyframe_decoder.DecoderMismatch("no timestamps to number the frames by")
        frame_count = _count_decodable_frames(decoder)
        _check_count(frame_count, claimed_count)
        try:
            first = decoder.decoded_frame(0)
        except keyframe_decoder.DecoderMismatch:
            raise
        except keyframe_decoder.DECODER_ERRORS:
            raise VideoError("The video's first frame cannot be decoded; the file may be damaged.") from None
        measured_fps = _fps_of([decoder.seconds(i) for i in range(min(frame_count, 6))])
    except keyframe_decoder.DecoderMismatch:
        # The timestamps cannot number the frames, or the frames do not come out as they number them
        # (MPEG-TS, say): the packets are the frames, once decoding from the last keyframe works.
        # Otherwise every frame is decoded in turn (slow).
        if decoder.tail_decodes():
            frame_count = decoder.packet_count
        else:
            frame_count = keyframe_decoder.decodable_frames(path)
        _check_count(frame_count, claimed_count)
        first = keyframe_decoder.first_frame(path)
        if first is None:
            raise VideoError("The video's first frame cannot be decoded; the file may be damaged.")
        measured_fps = None
    return _info(path, display_name, first, frame_count, claimed_fps, measured_fps)


def _count_decodable_frames(decoder: KeyframeDecoder) -> int:
    """How many frames decode: all the packets hold, when the last decodes; else up to the last that does."""
    packets = decoder.frame_count
    if packets and decoder.decodes(packets - 1):
        return packets
    if packets and decoder.decodes(0):
        # The last readable frame lies in [0, packets - 1): find it by bisection.
        low, high = 0, packets - 1
        while high - low > 1:
            middle = (low + high) // 2
            if decoder.decodes(middle):
                low = middle
            else:
                high = middle
        return low + 1
    return 0


def _check_count(frame_count: int, claimed_count: int) -> None:
    if frame_count == 0:
        raise VideoError("The video has no frames that can be decoded; the file may be empty or damaged.")
    if frame_count == 1:
        raise VideoError("The file holds a single frame (a still image), not a video; upload a video.")
    if claimed_count - frame_count > max(_COUNT_SLACK_FRAMES, _COUNT_SLACK_FRACTION * claimed_count):
        raise VideoError(
            f"The video is truncated or damaged: its header promises {claimed_count} frames but only "
            f"{frame_count} can be decoded. Upload the complete file."
        )


def _fps_of(seconds: Sequence[float]) -> Optional[float]:
    """Frame rate from the timestamps of the first frames, when they exist and are plausible."""
    steps = [b - a for a, b in zip(seconds, seconds[1:]) if b > a]
    if not steps:
        return None
    fps = 1.0 / float(np.median(steps))
    return fps if _PLAUSIBLE_FPS[0] <= fps <= _PLAUSIBLE_FPS[1] else None


def _info(path: str, display_name: Optional[str], first, frame_count: int, claimed_fps: float,
          measured_fps: Optional[float]) -> VideoInfo:
    # The first frame's size, as it is shown (a portrait phone video's display rotation swaps it).
    width, height = first.width, first.height
    if (first.rotation // 90) % 2:
        width, height = height, width
    _check_frame_size(width, height)
    if _PLAUSIBLE_FPS[0] <= claimed_fps <= _PLAUSIBLE_FPS[1]:
        fps = claimed_fps
    else:
        fps = measured_fps or _FALLBACK_FPS
    return VideoInfo(
        filename=display_name if display_name is not None else os.path.basename(str(path)),
        duration_seconds=round(frame_count / fps, 3),
        fps=round(fps, 3),
        frame_count=frame_count,
        width=width,
        height=height,
    )


def plan_segments(duration: float, segment_duration: float) -> List[Segment]:
    """Cut [0, duration) into segments; the last, partial one counts too."""
    if duration <= 0 or segment_duration <= 0:
        return []
    # A trailing sliver shorter than a millisecond is rounding, not video.
    count = max(1, math.ceil(duration / segment_duration - 1e-3))
    return [
        Segment(
            index=i + 1,
            start_time=float(round(i * segment_duration, 3)),
            end_time=float(round(min((i + 1) * segment_duration, duration), 3)),
        )
        for i in range(count)
    ]


def sample_frame_indices(segment: Segment, frames_per_segment: int, info: VideoInfo,
                         keyframes: Optional[Sequence[int]] = None) -> List[int]:
    """Frame numbers evenly spread over the segment: one per equal slice, at its middle.

    With `keyframes` (the file's keyframe numbers, sorted), a slice whose
    middle half holds a keyframe gives that keyframe instead, the one nearest
    the middle: a keyframe decodes on its own, where the middle frame needs
    every frame since the keyframe before it (6.5 on average with a keyframe
    every 12 frames). Each frame stays within a quarter slice of the middle,
    so the frames remain spread over the whole segment.
    Short segments hold fewer frames than asked for; duplicates are dropped.
    """
    span = segment.end_time - segment.start_time
    reach = span / frames_per_segment * info.fps / 4  # a quarter slice, in frames
    indices: List[int] = []
    for i in range(frames_per_segment):
        timestamp = segment.start_time + (i + 0.5) * span / frames_per_segment
        index = min(info.frame_count - 1, max(0, int(timestamp * info.fps)))
        if keyframes:
            index = _nearest_keyframe_within(keyframes, index, reach)
        if not indices or indices[-1] != index:
            indices.append(index)
    return indices


def _nearest_keyframe_within(keyframes: Sequence[int], index: int, reach: float) -> int:
    position = bisect.bisect_left(keyframes, index)
    nearby = [k for k in keyframes[max(0, position - 1):position + 1] if abs(k - index) <= reach]
    return min(nearby, key=lambda k: (abs(k - index), k)) if nearby else index


def _read_frame_at(capture: cv2.VideoCapture, index: int) -> Tuple[bool, Optional[np.ndarray]]:
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    return capture.read()


def _shrink(frame: np.ndarray, max_edge: Optional[int]) -> np.ndarray:
    """`frame` with its longest edge at most `max_edge`."""
    size = shrunk_size(frame.shape[1], frame.shape[0], max_edge)
    if size is not None:
        # Shrinking here is cheaper than letting the processor do it on a
        # full-size copy; INTER_AREA keeps thin details visible.
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    return frame


def format_clock(seconds: float, with_hours: bool = False) -> str:
    """`MM:SS`, or `H:MM:SS` from one hour on (or when asked)."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours or with_hours else f"{minutes:02d}:{secs:02d}"


def format_range(start: float, end: float) -> str:
    """`MM:SS-MM:SS`; both ends `H:MM:SS` once the range reaches an hour."""
    with_hours = end >= 3600
    return f"{format_clock(start, with_hours)}-{format_clock(end, with_hours)}"


class _KeyframeIndex:
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


class _OpenCVFrames:
    """Frames by number through OpenCV, for files the PyAV decoder does not serve.

    For each frame it decodes the fewest frames it can: reading forward from
    the last frame read, or seeking (OpenCV decodes from the last keyframe at
    least 16 frames before the target), whichever decodes fewer, judged from
    the file's keyframe positions. Both give the same frame.
    """

    def __init__(self, path: str, info: VideoInfo):
        self._capture = _open(path)
        self._keyframes = _KeyframeIndex(path)
        self._info = info
        self._position = -1  # index of the frame last read

    def close(self) -> None:
        self._keyframes.close()
        self._capture.release()

    def reads_forward(self, index: int) -> bool:
        """Whether frame `index` is cheaper to reach by reading forward than by seeking."""
        gap = index - self._position
        if gap <= 0:
            return False
        seek_start = self._keyframes.last_at_or_before(max(0, index - _OPENCV_SEEK_BACKOFF))
        if seek_start is None:
            return gap <= _SEQUENTIAL_READ_WINDOW
        return gap <= index - seek_start + 1

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` in BGR, as OpenCV decodes it."""
        if self.reads_forward(index):
            for _ in range(index - self._position - 1):
                if not self._capture.grab():
                    self._fail(index)
            ok, frame = self._capture.read()
        else:
            ok, frame = _read_frame_at(self._capture, index)
        if not ok or frame is None:
            self._fail(index)
        self._position = index
        return frame

    def _fail(self, index: int) -> None:
        raise _undecodable(index, self._info)


class FrameReader:
    """Reads sampled frames of one video, segment after segment.

    Keeps the video open for all its segments. Frames come from the PyAV
    decoder (`keyframe_decoder`), which starts at the keyframe right before
    each frame; a file it does not serve, or a frame it cannot deliver, is
    read with OpenCV from then on. Both give the same pixels, upright (tested
    on MPEG-4, MJPEG, VP8, H.264, HEVC and rotated files). PyAV also knows
    where the keyframes are, so `read_segment` can prefer them. `cancel` is
    checked while the decoder scans the packets and before each frame.

    No frame larger than 8K is decoded: PyAV's decoder is capped, and OpenCV,
    which cannot be, gets the file only once a capped decode of every frame
    has succeeded (`keyframe_decoder.decodable_frames`). A frame over the cap
    is a VideoError naming it, never a reason to try OpenCV.
    """

    def __init__(self, path: str, info: VideoInfo, max_edge: Optional[int] = None,
                 cancel: Optional[threading.Event] = None):
        self._path = path
        self._info = info
        self._max_edge = max_edge
        self._cancel = cancel
        self._decoder: Optional[KeyframeDecoder] = None
        self._opencv: Optional[_OpenCVFrames] = None
        if keyframe_decoder.enabled():
            try:
                self._decoder = KeyframeDecoder(path, info.frame_count, cancel)
            except keyframe_decoder.DECODER_ERRORS:
                pass
        if self._decoder is None:
            self._opencv = self._checked_opencv()

    @property
    def uses_pyav(self) -> bool:
        return self._decoder is not None

    def segment_frame_indices(self, segment: Segment, frames_per_segment: int) -> List[int]:
        """The frames `read_segment` reads: slice middles, or keyframes near them when known."""
        keyframes = self._decoder.keyframe_indices() if self._decoder is not None else None
        return sample_frame_indices(segment, frames_per_segment, self._info, keyframes)

    def read_segment(self, segment: Segment, frames_per_segment: int) -> List[Image.Image]:
        return self.read(self.segment_frame_indices(segment, frames_per_segment))

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
        if self._opencv is not None:
            self._opencv.close()

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, indices: Sequence[int]) -> List[Image.Image]:
        images = []
        for index in indices:
            raise_if_cancelled(self._cancel)
            images.append(Image.fromarray(self._rgb_frame(index)))
        return images

    def _checked_opencv(self) -> _OpenCVFrames:
        """OpenCV's reader, once a capped decode of every frame showed none is over 8K or undecodable."""
        try:
            decodable = keyframe_decoder.decodable_frames(self._path, self._cancel)
        except FrameTooLarge as error:
            raise _too_large(error) from None
        except keyframe_decoder.DECODER_ERRORS:
            decodable = 0
        if decodable < self._info.frame_count:
            raise _undecodable(decodable, self._info)
        return _OpenCVFrames(self._path, self._info)

    def _rgb_frame(self, index: int) -> np.ndarray:
        if self._decoder is not None:
            try:
                return self._decoder.frame(index, self._max_edge)
            except FrameTooLarge as error:
                raise _too_large(error) from None
            except keyframe_decoder.DECODER_ERRORS:
                self._decoder.close()
                self._decoder = None
                self._opencv = self._checked_opencv()
        # Shrinking before the colour conversion converts fewer pixels.
        return cv2.cvtColor(_shrink(self._opencv.frame(index), self._max_edge), cv2.COLOR_BGR2RGB)
