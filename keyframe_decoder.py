"""Decoding sampled frames with PyAV, from the keyframe right before each one.

OpenCV's seek starts decoding at a keyframe at least 16 frames before the
target (cap_ffmpeg_impl.hpp), so each sampled frame can cost up to 16 decoded
frames more than it needs. FFmpeg itself can start at the last keyframe at or
before the target, and PyAV exposes that: on a video with a keyframe every
12 frames, sampling decodes ~3.4x fewer frames than through OpenCV.

Frame numbers mean what they mean everywhere else in the service (OpenCV's):
the n-th frame in presentation order. The decoder maps them to presentation
timestamps from a scan of the file's packets (no decoding, ~5 µs a packet).
If that scan does not find exactly the number of frames the probe counted,
or a frame does not come out with the timestamp expected, it raises
DecoderMismatch and `video_frames.FrameReader` reads with OpenCV instead (as
the service did before). The check is on timestamps: it catches files whose
numbering PyAV would get wrong, not frames a damaged file decodes wrongly
(OpenCV, with the same FFmpeg inside, decodes those no better). Frames are
turned upright as OpenCV turns them (the file's display rotation: portrait
phone videos). `PYAV_FRAMES=0` turns the decoder off.
"""
from __future__ import annotations

import bisect
import os
import threading
from array import array
from typing import Iterator, Optional

import av
import numpy as np

from cancellation import raise_if_cancelled


class DecoderMismatch(Exception):
    """PyAV's view of the file disagrees with the probe's: read it with OpenCV instead."""


# What PyAV raises on a file it cannot demux or decode, besides DecoderMismatch
# (ValueError includes UnicodeDecodeError from metadata it cannot read).
DECODER_ERRORS = (av.FFmpegError, DecoderMismatch, IndexError, ValueError, OSError)
# The packet scan looks at the cancel event this often.
_CANCEL_CHECK_PACKETS = 4096
# One decoding thread: the job thread decodes while the model works on the
# previous segment, and FFmpeg's extra threads only take cores from the model
# (tiny model, engine 0.83 s vs 0.99 s with FFmpeg's default; 0 = its default).
DECODER_THREADS = 1
# The timestamp index takes 8 bytes a frame (16 while it is sorted): beyond
# this (9 h at 30 fps) a small upload of tiny packets could claim gigabytes,
# so OpenCV reads it.
MAX_INDEXED_FRAMES = 1_000_000


def enabled() -> bool:
    return os.environ.get("PYAV_FRAMES", "1") != "0"


class KeyframeDecoder:
    """Decodes frames by number, seeking only when that decodes fewer frames.

    Raises one of DECODER_ERRORS when it cannot serve the file or a frame.
    """

    def __init__(self, path: str, frame_count: int, cancel: Optional[threading.Event] = None):
        if frame_count > MAX_INDEXED_FRAMES:
            raise DecoderMismatch(f"{frame_count} frames are more than the index holds")
        # Metadata that is not UTF-8 (a title, say) must not stop the frames being read.
        self._container = av.open(str(path), metadata_errors="ignore")
        try:
            self._stream = self._container.streams.video[0]  # OpenCV reads the first video stream too
            if DECODER_THREADS:
                self._stream.codec_context.thread_count = DECODER_THREADS
            else:
                self._stream.thread_type = "AUTO"  # FFmpeg's frame and slice threads, one per core
            self._timestamps, self._keyframes = self._scan_packets(frame_count, cancel)
        except BaseException:
            self.close()
            raise
        self._frames: Optional[Iterator[av.VideoFrame]] = None  # the decoder's output since the last seek
        self._position: Optional[int] = None  # timestamp of the last frame decoded
        self.frames_decoded = 0
        self._keyframe_indices: Optional[array] = None

    def _scan_packets(self, frame_count: int, cancel: Optional[threading.Event]):
        """Sorted presentation timestamps of all frames, and of the keyframes."""
        timestamps, keyframes = array("q"), array("q")
        for packet in self._container.demux(self._stream):
            if packet.size == 0 or packet.is_discard:
                continue  # the demuxer's end-of-stream marker; packets the decoder drops
            if packet.pts is None:
                raise DecoderMismatch("a packet without a presentation timestamp")
            if len(timestamps) == frame_count:
                raise DecoderMismatch(f"more packets than the {frame_count} frames the probe counted")
            if len(timestamps) % _CANCEL_CHECK_PACKETS == 0:
                raise_if_cancelled(cancel)
            timestamps.append(packet.pts)
            if packet.is_keyframe:
                keyframes.append(packet.pts)
        if len(timestamps) != frame_count:
            raise DecoderMismatch(f"{len(timestamps)} packets for {frame_count} frames")
        ordered = np.sort(np.frombuffer(timestamps, dtype=np.int64))
        if ordered.size > 1 and not np.all(np.diff(ordered) > 0):
            raise DecoderMismatch("two packets share a presentation timestamp")
        return _int64_array(ordered), _int64_array(np.sort(np.frombuffer(keyframes, dtype=np.int64)))

    def keyframe_indices(self) -> array:
        """Frame numbers of the keyframes, sorted."""
        if self._keyframe_indices is None:
            self._keyframe_indices = array("q", (bisect.bisect_left(self._timestamps, k) for k in self._keyframes))
        return self._keyframe_indices

    def close(self) -> None:
        self._frames = None
        self._container.close()

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` as an RGB array (height x width x 3, uint8)."""
        if not 0 <= index < len(self._timestamps):
            raise DecoderMismatch(f"frame {index} is past the packets")
        wanted = self._timestamps[index]
        at = bisect.bisect_right(self._keyframes, wanted) - 1
        keyframe = self._keyframes[at] if at >= 0 else self._timestamps[0]
        # Read forward unless the frame was passed already or a seek starts later than where we are.
        if self._position is None or wanted <= self._position or keyframe > self._position:
            self._container.seek(keyframe, stream=self._stream, backward=True)
            self._frames = self._container.decode(self._stream)
            self._position = None
        for decoded in self._frames:
            if decoded.pts is None:
                raise DecoderMismatch("a decoded frame without a timestamp")
            self._position = decoded.pts
            self.frames_decoded += 1
            if decoded.pts >= wanted:
                if decoded.pts != wanted:
                    raise DecoderMismatch(f"frame {index} did not come out of the decoder")
                return _upright(decoded.to_ndarray(format="rgb24"), decoded.rotation)
        raise DecoderMismatch(f"the stream ended before frame {index}")


def _int64_array(values: np.ndarray) -> array:
    packed = array("q")
    packed.frombytes(values.astype(np.int64).tobytes())
    return packed


def _upright(frame: np.ndarray, rotation: int) -> np.ndarray:
    """The frame as it is meant to be seen, given the file's display rotation (degrees, counter-clockwise)."""
    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frame, turns)) if turns else frame
