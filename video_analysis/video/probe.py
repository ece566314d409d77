"""Probing: what a video file really holds, checked against what its container claims.

Phone videos often report a frame count or fps that is wrong; `probe_video`
checks the claims against what can actually be decoded. The probe decodes
with PyAV only, capped so that no frame larger than 8K is ever decoded
(OpenCV's decoder cannot be capped).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from video_analysis.video.capped_decoding import (
    DECODER_ERRORS, DecoderMismatch, FrameTooLarge, decodable_frames, first_frame,
)
from video_analysis.video.errors import NOT_A_VIDEO, VideoError, check_frame_size, frame_too_large
from video_analysis.video.keyframe_decoder import KeyframeDecoder

# An fps outside this range is a lie from the container, not a real rate.
_PLAUSIBLE_FPS = (1.0, 480.0)
_FALLBACK_FPS = 25.0
# A header may overstate its frame count a little (phone videos often do);
# more than this is a file cut short, which is refused.
_COUNT_SLACK_FRAMES = 2
_COUNT_SLACK_FRACTION = 0.1
_FIRST_FRAME_DAMAGED = "The video's first frame cannot be decoded; the file may be damaged."


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
    except DECODER_ERRORS:
        raise VideoError(NOT_A_VIDEO) from None
    try:
        return _probe(decoder, path, display_name)
    except FrameTooLarge as error:
        raise frame_too_large(error.index) from None
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
    check_frame_size(width, height)
    try:
        if not decoder.indexed:
            raise DecoderMismatch("no timestamps to number the frames by")
        frame_count = _count_decodable_frames(decoder)
        _check_count(frame_count, claimed_count)
        try:
            first = decoder.decoded_frame(0)
        except DecoderMismatch:
            raise
        except DECODER_ERRORS:
            raise VideoError(_FIRST_FRAME_DAMAGED) from None
        measured_fps = _fps_of([decoder.seconds(i) for i in range(min(frame_count, 6))])
    except DecoderMismatch:
        # The timestamps cannot number the frames, or the frames do not come out as they number them
        # (MPEG-TS, say): the packets are the frames, once decoding from the last keyframe works.
        # Otherwise every frame is decoded in turn (slow).
        frame_count = decoder.packet_count if decoder.tail_decodes() else decodable_frames(path)
        _check_count(frame_count, claimed_count)
        first = first_frame(path)
        if first is None:
            raise VideoError(_FIRST_FRAME_DAMAGED)
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
    check_frame_size(width, height)
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
