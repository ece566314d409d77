"""Decoding with PyAV, capped: no frame larger than 8K is ever decoded.

FFmpeg's `max_pixels` makes a decoder refuse a frame larger than 8K (plus
the decoders' alignment) when it reads the frame's header, before any memory
for the picture is taken (ff_set_dimensions and ff_get_buffer check it
through av_image_check_size2), and PyAV raises that refusal as EINVAL, turned
into FrameTooLarge here, as is a decoded frame over MAX_FRAME_PIXELS. The cap
reaches FFmpeg's stream-info probe inside `av.open` too, which decodes the
first frames of some codecs. OpenCV cannot be capped the same way (its
capture opens the decoder without options; OPENCV_FFMPEG_CAPTURE_OPTIONS
reach only the demuxer), so `decodable_frames` lets a file through to it
only after a capped decode of all its frames.
"""
from __future__ import annotations

import errno
from typing import Iterator, List, Optional, Tuple

import av
import numpy as np

from video_analysis.cancellation import CancelToken
from video_analysis.video.errors import MAX_FRAME_PIXELS

# The decoders' own cap leaves room for the sizes they align a frame to before
# checking it (FFmpeg's get_buffer checks the width aligned for SIMD, up to 64;
# codecs round to their blocks, up to 128): without it a portrait 8K frame,
# 4320 x 8192, would be refused. A frame between the two limits (4.6 % more
# pixels at most) is decoded once, then refused by its size.
_DECODER_MAX_PIXELS = (8192 + 128) * (4320 + 128)
_CAPPED = {"max_pixels": str(_DECODER_MAX_PIXELS)}
# One decoding thread: the job thread decodes while the model works on the
# previous segment, and FFmpeg's extra threads only take cores from the model
# (tiny model, engine 0.83 s vs 0.99 s with FFmpeg's default; 0 = its default).
DECODER_THREADS = 1


class DecoderMismatch(Exception):
    """PyAV's view of the file disagrees with the probe's: read it with OpenCV instead."""


class FrameTooLarge(Exception):
    """The decoder refused a frame larger than MAX_FRAME_PIXELS, before allocating it.

    `index` is the frame's number (from 0) when the packets tell it, else None.
    """

    def __init__(self, index: Optional[int]):
        super().__init__(f"frame {index} is larger than {MAX_FRAME_PIXELS} pixels")
        self.index = index


# What PyAV raises on a file it cannot demux or decode, besides DecoderMismatch
# (ValueError includes UnicodeDecodeError from metadata it cannot read).
DECODER_ERRORS = (av.FFmpegError, DecoderMismatch, IndexError, ValueError, OSError)


def open_video(path: str):
    """`path` opened for capped decoding: (container, its first video stream).

    Raises one of DECODER_ERRORS when the file cannot be demuxed or holds no
    video stream (IndexError). OpenCV reads the first video stream too.
    """
    # Metadata that is not UTF-8 (a title, say) must not stop the frames being read.
    container = av.open(str(path), metadata_errors="ignore", options=_CAPPED)
    try:
        stream = container.streams.video[0]
        context = stream.codec_context
        context.options = dict(_CAPPED)  # read when the decoder opens, at the first packet
        if DECODER_THREADS:
            context.thread_count = DECODER_THREADS
        else:
            stream.thread_type = "AUTO"  # FFmpeg's frame and slice threads, one per core
    except BaseException:
        container.close()
        raise
    return container, stream


def decode_packet(packet: av.Packet) -> List[av.VideoFrame]:
    """The frames `packet` completes; FrameTooLarge for one over 8K (its number unknown here)."""
    try:
        frames = packet.decode()
    except av.FFmpegError as error:
        # The cap's refusal (av_image_check_size2) is EINVAL; damaged data is AVERROR_INVALIDDATA.
        if error.errno == errno.EINVAL:
            raise FrameTooLarge(None) from None
        raise
    if any(frame.width * frame.height > MAX_FRAME_PIXELS for frame in frames):
        raise FrameTooLarge(None)
    return frames


def first_frame(path: str) -> Optional[av.VideoFrame]:
    """The first frame `path` decodes to, capped; None when none does."""
    container, stream = open_video(path)
    try:
        for frame in _frames_in_order(container, stream):
            return frame
    except DECODER_ERRORS:
        pass
    finally:
        container.close()
    return None


def decodable_frames(path: str, cancel: Optional[CancelToken] = None) -> int:
    """How many frames of `path` decode, in order, before the first that does not: all of them in a sound file.

    Every frame is decoded with the cap; one over it raises FrameTooLarge
    with its number. An uncapped decoder (OpenCV) may read the frames this
    counts, and no others: what a frame that does not decode would hold is
    unknown. `cancel` is checked before each frame. Raises one of
    DECODER_ERRORS when the file does not open.
    """
    cancel = cancel or CancelToken()
    container, stream = open_video(path)
    decoded = 0
    try:
        for _ in _frames_in_order(container, stream):
            cancel.raise_if_cancelled()
            decoded += 1
    except DECODER_ERRORS:
        pass
    finally:
        container.close()
    return decoded


def _frames_in_order(container, stream) -> Iterator[av.VideoFrame]:
    decoded = 0
    for packet in container.demux(stream):
        try:
            frames = decode_packet(packet)
        except FrameTooLarge:
            raise FrameTooLarge(decoded) from None
        decoded += len(frames)
        yield from frames


def shrunk_size(width: int, height: int, max_edge: Optional[int]) -> Optional[Tuple[int, int]]:
    """(width, height) with the longest edge at most `max_edge`; None when the frame is small enough."""
    if not max_edge or max(width, height) <= max_edge:
        return None
    scale = max_edge / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def rgb_array(frame: av.VideoFrame, max_edge: Optional[int] = None) -> np.ndarray:
    """`frame` as an upright RGB array, its longest edge at most `max_edge`.

    A frame that must shrink is scaled and converted in one swscale pass
    (area averaging, as OpenCV's INTER_AREA), so no full-size RGB copy is
    made; one that need not gives the same pixels as ever.
    """
    size = shrunk_size(frame.width, frame.height, max_edge)
    if size is None:
        rgb = frame.to_ndarray(format="rgb24")
    else:
        rgb = frame.to_ndarray(width=size[0], height=size[1], format="rgb24", interpolation="AREA")
    return _upright(rgb, frame.rotation)


def _upright(frame: np.ndarray, rotation: int) -> np.ndarray:
    """The frame as it is meant to be seen, given the file's display rotation (degrees, counter-clockwise)."""
    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frame, turns)) if turns else frame
