"""Frames by number with PyAV, decoding from the keyframe right before each one.

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
DecoderMismatch and the frame reader reads with OpenCV instead. The check is
on timestamps: it catches files whose numbering PyAV would get wrong, not
frames a damaged file decodes wrongly (OpenCV, with the same FFmpeg inside,
decodes those no better). Frames are turned upright as OpenCV turns them (the
file's display rotation: portrait phone videos). Every decode is capped
(`capped_decoding`).
"""
from __future__ import annotations

import bisect
from array import array
from typing import Iterator, Optional, Tuple

import av
import numpy as np

from video_analysis.cancellation import CancelToken
from video_analysis.video.capped_decoding import (
    DECODER_ERRORS, DecoderMismatch, FrameTooLarge, decode_packet, open_video, rgb_array,
)

# The packet scan looks at the cancel token this often (a packet takes ~5 µs).
_CANCEL_CHECK_PACKETS = 4096
# The timestamp index takes 8 bytes a frame (16 while it is sorted): beyond
# this (9 h at 30 fps) a small upload of tiny packets could claim gigabytes,
# so OpenCV reads it.
MAX_INDEXED_FRAMES = 1_000_000


class KeyframeDecoder:
    """Decodes frames by number, seeking only when that decodes fewer frames.

    Raises one of DECODER_ERRORS when it cannot serve the file or a frame.
    """

    def __init__(self, path: str, frame_count: Optional[int], cancel: Optional[CancelToken] = None):
        """`frame_count` is the probe's count, which the packets must match.

        With None (the probe's own use) every packet is counted, and the frames
        are numbered by their timestamps when the packets allow it (`indexed`).
        """
        if frame_count is not None and frame_count > MAX_INDEXED_FRAMES:
            raise DecoderMismatch(f"{frame_count} frames are more than the index holds")
        self._container, self._stream = open_video(path)
        self.packet_count = 0  # packets that hold a frame
        self._last_keyframe: Optional[Tuple[int, int]] = None  # (packet number, timestamp) of the last keyframe
        try:
            self._timestamps, self._keyframes = self._scan_packets(frame_count, cancel or CancelToken())
        except BaseException:
            self.close()
            raise
        self._frames: Optional[Iterator[av.VideoFrame]] = None  # the decoder's output since the last seek
        self._position: Optional[int] = None  # timestamp of the last frame decoded
        self.frames_decoded = 0  # read by bench.experiment_sampling and the tests of seeking
        self._keyframe_indices: Optional[array] = None

    def _scan_packets(self, frame_count: Optional[int], cancel: CancelToken):
        """Sorted presentation timestamps of all frames, and of the keyframes.

        When they cannot number the frames, DecoderMismatch; or, without a
        `frame_count`, two empty arrays (and `indexed` is False).
        """
        timestamps, keyframes = array("q"), array("q")
        unusable = None  # why the timestamps cannot number the frames
        for packet in self._container.demux(self._stream):
            if packet.size == 0 or packet.is_discard:
                continue  # the demuxer's end-of-stream marker; packets the decoder drops
            if self.packet_count % _CANCEL_CHECK_PACKETS == 0:
                cancel.raise_if_cancelled()
            self.packet_count += 1
            stamp = packet.pts if packet.pts is not None else packet.dts
            if packet.is_keyframe and stamp is not None:
                self._last_keyframe = (self.packet_count - 1, stamp)
            if unusable is None:
                if packet.pts is None:
                    unusable = "a packet without a presentation timestamp"
                elif len(timestamps) == frame_count:
                    unusable = f"more packets than the {frame_count} frames the probe counted"
                elif len(timestamps) == MAX_INDEXED_FRAMES:
                    unusable = f"more than {MAX_INDEXED_FRAMES} packets"
                else:
                    timestamps.append(packet.pts)
                    if packet.is_keyframe:
                        keyframes.append(packet.pts)
                if unusable is not None:
                    if frame_count is not None:
                        raise DecoderMismatch(unusable)
                    timestamps, keyframes = array("q"), array("q")  # the probe counts on, without an index
        if frame_count is not None and len(timestamps) != frame_count:
            raise DecoderMismatch(f"{len(timestamps)} packets for {frame_count} frames")
        ordered = np.sort(np.frombuffer(timestamps, dtype=np.int64))
        if ordered.size > 1 and not np.all(np.diff(ordered) > 0):
            if frame_count is not None:
                raise DecoderMismatch("two packets share a presentation timestamp")
            unusable, ordered, keyframes = "two packets share a presentation timestamp", ordered[:0], array("q")
        self.indexed = unusable is None
        return _int64_array(ordered), _int64_array(np.sort(np.frombuffer(keyframes, dtype=np.int64)))

    @property
    def frame_count(self) -> int:
        """The frames the timestamps number (the packets, when `indexed`)."""
        return len(self._timestamps)

    @property
    def stream(self) -> av.video.stream.VideoStream:
        return self._stream

    def seconds(self, index: int) -> float:
        """When frame `index` is shown, from the stream's time base (not from its start)."""
        return float(self._timestamps[index] * self._stream.time_base)

    def tail_decodes(self) -> bool:
        """Whether decoding from the last keyframe to the end gives frames, and no error; no timestamps needed.

        A frame over the cap raises FrameTooLarge, numbered in decoding order.
        """
        if self._last_keyframe is None:
            return False
        number, timestamp = self._last_keyframe
        self._frames, self._position = None, None
        decoded = 0
        try:
            self._container.seek(timestamp, stream=self._stream, backward=True)
            for packet in self._container.demux(self._stream):
                decoded += len(decode_packet(packet))
        except FrameTooLarge:
            raise FrameTooLarge(number + decoded) from None
        except DECODER_ERRORS:
            return False
        return decoded > 0

    def decodes(self, index: int) -> bool:
        """Whether frame `index` decodes.

        Raises FrameTooLarge for a frame over the cap on the way, and
        DecoderMismatch when the frames do not come out as the timestamps
        number them (such a file must be counted by decoding it in order).
        """
        try:
            self.decoded_frame(index)
        except (FrameTooLarge, DecoderMismatch):
            raise
        except DECODER_ERRORS:
            return False
        return True

    def keyframe_indices(self) -> array:
        """Frame numbers of the keyframes, sorted."""
        if self._keyframe_indices is None:
            self._keyframe_indices = array("q", (bisect.bisect_left(self._timestamps, k) for k in self._keyframes))
        return self._keyframe_indices

    def close(self) -> None:
        self._frames = None
        self._container.close()

    def frame(self, index: int, max_edge: Optional[int] = None) -> np.ndarray:
        """Frame `index` as an upright RGB array (height x width x 3, uint8), its longest edge at most `max_edge`.

        Raises FrameTooLarge (the number of the frame refused, which may lie
        between the keyframe and `index`) or one of DECODER_ERRORS.
        """
        return rgb_array(self.decoded_frame(index), max_edge)

    def decoded_frame(self, index: int) -> av.VideoFrame:
        """Frame `index` as the decoder gives it; raises as `frame` does."""
        if not 0 <= index < len(self._timestamps):
            raise DecoderMismatch(f"frame {index} is past the packets" if self._timestamps else "no frame index")
        wanted = self._timestamps[index]
        at = bisect.bisect_right(self._keyframes, wanted) - 1
        keyframe = self._keyframes[at] if at >= 0 else self._timestamps[0]
        # Read forward unless the frame was passed already or a seek starts later than where we are.
        if self._position is None or wanted <= self._position or keyframe > self._position:
            self._container.seek(keyframe, stream=self._stream, backward=True)
            self._frames = self._decode()
            self._position = None
        try:
            for decoded in self._frames:
                if decoded.pts is None:
                    raise DecoderMismatch("a decoded frame without a timestamp")
                self._position = decoded.pts
                self.frames_decoded += 1
                if decoded.pts >= wanted:
                    if decoded.pts != wanted:
                        raise DecoderMismatch(f"frame {index} did not come out of the decoder")
                    return decoded
        except BaseException:
            self._frames, self._position = None, None  # the next frame starts with a seek
            raise
        raise DecoderMismatch(f"the stream ended before frame {index}")

    def _decode(self) -> Iterator[av.VideoFrame]:
        """The decoder's output from the current position; a frame over the cap raises FrameTooLarge with its number."""
        for packet in self._container.demux(self._stream):
            try:
                frames = decode_packet(packet)
            except FrameTooLarge:
                raise FrameTooLarge(self._frame_number(packet)) from None
            yield from frames

    def _frame_number(self, packet: av.Packet) -> Optional[int]:
        """The number of the frame `packet` holds; for the decoder's final flush, the one after the last decoded."""
        if not self._timestamps:
            return None
        if packet.pts is not None:
            return min(bisect.bisect_left(self._timestamps, packet.pts), len(self._timestamps) - 1)
        if self._position is not None:
            return min(bisect.bisect_right(self._timestamps, self._position), len(self._timestamps) - 1)
        return 0


def _int64_array(values: np.ndarray) -> array:
    packed = array("q")
    packed.frombytes(values.astype(np.int64).tobytes())
    return packed
