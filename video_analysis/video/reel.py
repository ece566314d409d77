"""Reels: chosen stretches of a video cut out, exact to the frame, into one MP4 a browser plays and seeks.

A cut keeps the source frames whose time t satisfies start <= t < end, with
frame n at n / fps as the probe numbers them (the rule of the engine's
segments, `segments.holds_a_frame`), so a reel shows exactly the frames
its highlights span. Every kept frame is decoded and encoded again: H.264
(libx264, preset "veryfast") in yuv420p, at the source's frame rate, scaled
down to at most `max_width` pixels wide, upright. The sound (AAC), when the
source has any, is cut to the same frames' times, sample by sample, so the
picture and the sound of each cut start together and last as long.
"""
from __future__ import annotations

import bisect
import math
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import av
import numpy as np

from video_analysis.cancellation import CancelToken
from video_analysis.video.capped_decoding import (
    DECODER_ERRORS, DecoderMismatch, FrameTooLarge, decode_packet, open_video, rgb_array,
)
from video_analysis.video.errors import frame_too_large, undecodable
from video_analysis.video.keyframe_decoder import KeyframeDecoder
from video_analysis.video.probe import VideoInfo, probe_video

# "veryfast": x264 alone encodes 106-128 frames a second of 1280x720 on this
# project's 2 cores, and a whole render (decode, scale, encode, sound) of a
# 720p source runs at 107 (3.6x real time at 30 fps; 85 from 1080p). On the
# same frames "ultrafast" was 4-7x faster but its files 2-7x larger,
# "superfast" up to 30 % faster with files 14-25x larger (noise defeats it),
# "faster" 20 % slower for files 3-12 % smaller, "medium" half as fast.
# Reels are watched over the network: size matters as much as time.
X264_OPTIONS = {"preset": "veryfast", "crf": "23"}
# The most bits a pixel of a frame may take on average (x264's VBV, over 2 s): CRF 23 alone spends ~13 Mbit/s on
# a noisy 1280x720 30 fps picture; capped, a 60 s reel of it stays under ~62 MB (8.3 Mbit/s) while ordinary
# footage, well under the cap, is left as CRF makes it.
MAX_BITS_PER_PIXEL = 0.3
# A keyframe every 2 s: a browser's seek in the reel decodes at most 2 s of frames.
KEYFRAME_SECONDS = 2
# The sample rates AAC has; any other is resampled to 48 kHz.
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_AUDIO_BIT_RATE = {1: 96_000, 2: 160_000}
# Audio is decoded from this long before a cut: AAC's first frame after a seek decodes wrong
# (its transform overlaps the frame before).
_AUDIO_PREROLL_SECONDS = 0.2
_PROGRESS_STEPS = 100


class EmptyReel(ValueError):
    """The cuts hold no frame of the video: there is nothing to put in a reel."""


@dataclass(frozen=True)
class Reel:
    path: str          # the finished file
    duration: float    # seconds: frames written / frame rate
    size: int          # bytes on disk
    has_audio: bool


def render_reel(source: str, cuts: Sequence[Tuple[float, float]], out_path: str, *,
                cancel: Optional[CancelToken] = None,
                progress: Optional[Callable[[float], None]] = None,
                max_width: int = 1280) -> Reel:
    """Write the frames of `source` within `cuts` ((start, end) seconds) to the MP4 `out_path`.

    Cuts are sorted and merged where they touch or overlap. `progress` gets
    the fraction of the frames written, at most 100 times. `cancel` is checked
    before every frame decoded: Cancelled within one frame. The file is
    written under a temporary name beside `out_path` and renamed at the end;
    on any error or cancel, neither is left. Raises VideoError for a source
    that cannot be read, EmptyReel when the cuts hold no frame.
    """
    cancel = cancel or CancelToken()
    cancel.raise_if_cancelled("The reel")
    info = probe_video(source)
    runs = frame_runs(cuts, info.fps, info.frame_count)
    if not runs:
        raise EmptyReel("The chosen moments hold no frame of the video, so there is no reel to make.")
    report = _Progress(progress, sum(stop - first for first, stop in runs))
    try:
        return _render(source, info, runs, out_path, cancel, report, max_width, indexed=True)
    except DecoderMismatch:
        # PyAV's seeks cannot number this file's frames (MPEG-TS, say): decode it in order from the start.
        return _render(source, info, runs, out_path, cancel, report, max_width, indexed=False)


def frame_runs(cuts: Sequence[Tuple[float, float]], fps: float, frame_count: int) -> List[Tuple[int, int]]:
    """The frames (first, stop) each cut keeps, in order, touching runs merged: frame n is kept when
    start <= n / fps < end (a millionth of a frame's tolerance for times rounded to the millisecond)."""
    runs: List[Tuple[int, int]] = []
    for start, end in sorted((float(s), float(e)) for s, e in cuts):
        if math.isnan(start) or math.isnan(end):
            raise ValueError("A cut's start or end is not a number.")
        first = max(0, math.ceil(start * fps - 1e-6))
        stop = min(frame_count, math.ceil(end * fps - 1e-6))
        if stop <= first:
            continue
        if runs and first <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], stop))
        else:
            runs.append((first, stop))
    return runs


def reel_size(width: int, height: int, max_width: int) -> Tuple[int, int]:
    """The reel's frame size: the source's, scaled down to at most `max_width` wide, aspect kept, both even
    (H.264 in yuv420p halves both for colour)."""
    out_width = max(2, min(width, max_width) // 2 * 2)
    out_height = max(2, round(height * out_width / width / 2) * 2)
    return out_width, out_height


class _Progress:
    """Reports the fraction of frames written each time it passes another hundredth; never goes back
    (a render started again from the beginning reports nothing until it passes where the first got to)."""

    def __init__(self, callback: Optional[Callable[[float], None]], total: int):
        self._callback, self._total, self._step = callback, total, 0

    def __call__(self, written: int) -> None:
        step = written * _PROGRESS_STEPS // self._total
        if step > self._step and self._callback is not None:
            self._step = step
            self._callback(step / _PROGRESS_STEPS)


def leftovers(out_path: str) -> List[str]:
    """The temporary files renders to `out_path` left behind: only a crash mid-render leaves one."""
    directory, name = os.path.split(os.path.abspath(out_path))
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [os.path.join(directory, entry) for entry in entries
            if entry.startswith(f".{name}.") and entry.endswith(".part")]


def _render(source: str, info: VideoInfo, runs: List[Tuple[int, int]], out_path: str, cancel: CancelToken,
            report: _Progress, max_width: int, indexed: bool) -> Reel:
    directory, name = os.path.split(os.path.abspath(out_path))
    for left in leftovers(out_path):  # a render that crashed before (the job resumed after a restart)
        os.unlink(left)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
    os.close(handle)
    output = sound = frames = None
    try:
        frames = _IndexedFrames(source, info, runs, cancel) if indexed else _FramesInOrder(source, info, runs, cancel)
        output = av.open(temporary, "w", format="mp4", options={"movflags": "+faststart"})
        rate = _frame_rate(frames.stream, info.fps)
        picture = _add_picture_stream(output, rate, reel_size(info.width, info.height, max_width))
        sound = _Sound.of(source, output)
        written = 0
        for (first, stop), seconds, pictures in frames.runs():
            if sound is not None:
                end = written + stop - first
                sound.start_cut(seconds, sound.sample(end, rate) - sound.sample(written, rate))
            for frame in pictures:
                written = _encode(output, picture, frame, written, rate)
                if sound is not None:
                    sound.encode_until(sound.sample(written, rate))
                report(written)
        output.mux(picture.encode())
        if sound is not None:
            sound.finish()
        output.close()  # the trailer, and faststart's move of the index to the front
        output = None
        os.replace(temporary, out_path)
    except BaseException:
        _close_quietly(output)
        _remove(temporary)
        raise
    finally:
        for part in (frames, sound):
            if part is not None:
                part.close()
    return Reel(path=out_path, duration=float(written / rate), size=os.path.getsize(out_path),
                has_audio=sound is not None)


def _frame_rate(stream, fps: float) -> Fraction:
    """The container's exact rate (30000/1001, not 29.97) when it is the probe's; else the probe's."""
    exact = stream.guessed_rate
    if exact and round(float(exact), 3) == fps:
        return Fraction(exact)
    return Fraction(fps).limit_denominator(1001)


def _add_picture_stream(output, rate: Fraction, size: Tuple[int, int]):
    most = round(MAX_BITS_PER_PIXEL * size[0] * size[1] * float(rate) / 1000)  # kbit/s
    stream = output.add_stream("libx264", rate=rate, options={**X264_OPTIONS, "maxrate": f"{most}k",
                                                              "bufsize": f"{2 * most}k"})
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = 1 / rate
    stream.codec_context.gop_size = max(1, round(KEYFRAME_SECONDS * rate))
    return stream


def _encode(output, stream, frame: av.VideoFrame, written: int, rate: Fraction) -> int:
    """`frame` as the reel's frame number `written`: upright, scaled, yuv420p; returns the count written."""
    width, height = stream.width, stream.height
    if frame.rotation:
        frame = av.VideoFrame.from_ndarray(rgb_array(frame), format="rgb24")
    smaller = width < frame.width or height < frame.height
    picture = frame.reformat(width, height, "yuv420p", interpolation="AREA" if smaller else None)
    picture.pts, picture.time_base = written, 1 / rate
    output.mux(stream.encode(picture))
    return written + 1


class _IndexedFrames:
    """The kept frames through `KeyframeDecoder`: each cut decoded from the keyframe before it (or read on
    from the cut before, when that is nearer), one frame at a time so a cancel is seen between any two.

    DecoderMismatch (PyAV's seeks do not land where the timestamps say) goes up to `render_reel`.
    """

    def __init__(self, source: str, info: VideoInfo, runs: List[Tuple[int, int]], cancel: CancelToken):
        self._info, self._runs, self._cancel = info, runs, cancel
        try:
            self._decoder = KeyframeDecoder(source, info.frame_count, cancel)
        except FrameTooLarge as error:
            raise frame_too_large(error.index) from None
        except DECODER_ERRORS as error:
            raise DecoderMismatch(str(error)) from None
        self._keyframes = self._decoder.keyframe_indices()
        self._last: Optional[int] = None  # the last frame decoded

    @property
    def stream(self):
        return self._decoder.stream

    def runs(self) -> Iterator[Tuple[Tuple[int, int], float, Iterator[av.VideoFrame]]]:
        """Each run, the time on the source's clock of its first frame (where its sound starts), its frames."""
        for run in self._runs:
            yield run, self._decoder.seconds(run[0]), self._frames_of(*run)

    def _frames_of(self, first: int, stop: int) -> Iterator[av.VideoFrame]:
        at = bisect.bisect_right(self._keyframes, first) - 1
        keyframe = self._keyframes[at] if at >= 0 else 0
        start = self._last + 1 if self._last is not None and keyframe <= self._last < first else keyframe
        for index in range(start, stop):
            self._cancel.raise_if_cancelled("The reel")
            frame = self._frame(index)
            self._last = index
            if index >= first:
                yield frame

    def _frame(self, index: int) -> av.VideoFrame:
        try:
            return self._decoder.decoded_frame(index)
        except FrameTooLarge as error:
            raise frame_too_large(error.index) from None
        except DECODER_ERRORS as error:
            # Damaged data decodes no better in order, but the in-order reader says where it stops.
            raise DecoderMismatch(str(error)) from None

    def close(self) -> None:
        self._decoder.close()


class _FramesInOrder:
    """The kept frames of a file PyAV cannot seek by timestamp: every frame decoded in order from the
    start, frame n being the n-th the decoder gives (as OpenCV numbers them)."""

    def __init__(self, source: str, info: VideoInfo, runs: List[Tuple[int, int]], cancel: CancelToken):
        self._info, self._runs, self._cancel = info, runs, cancel
        try:
            self._container, self._stream = open_video(source)
        except DECODER_ERRORS:
            raise undecodable(0, info.fps, info.frame_count) from None
        self._decoded = self._decode()
        self._next = 0  # the number of the next frame the decoder gives
        self._pending: Optional[av.VideoFrame] = None  # a run's first frame, read to learn its time

    @property
    def stream(self):
        return self._stream

    def runs(self) -> Iterator[Tuple[Tuple[int, int], float, Iterator[av.VideoFrame]]]:
        for run in self._runs:
            while self._next <= run[0]:
                self._pending = self._read()
            frame = self._pending
            yield run, frame.time if frame.time is not None else run[0] / self._info.fps, self._frames_to(run[1])

    def _frames_to(self, stop: int) -> Iterator[av.VideoFrame]:
        yield self._pending
        while self._next < stop:
            yield self._read()

    def _read(self) -> av.VideoFrame:
        self._cancel.raise_if_cancelled("The reel")
        number = self._next
        try:
            frame = next(self._decoded)
        except FrameTooLarge:
            raise frame_too_large(number) from None
        except (StopIteration, *DECODER_ERRORS):
            raise undecodable(number, self._info.fps, self._info.frame_count) from None
        self._next += 1
        return frame

    def _decode(self) -> Iterator[av.VideoFrame]:
        for packet in self._container.demux(self._stream):
            yield from decode_packet(packet)

    def close(self) -> None:
        self._decoded.close()
        self._container.close()


class _Sound:
    """The source's first audio stream, cut as the picture is, into the reel's AAC stream.

    Its own container on the source, so its seeks leave the picture's decoder where it is. A packet
    that does not decode, and any time the source has no sound for, becomes silence.
    """

    @classmethod
    def of(cls, source: str, output) -> Optional["_Sound"]:
        """The reel's sound, or None when the source has no audio stream this FFmpeg decodes."""
        container, _ = open_video(source)
        try:
            streams = container.streams.audio
            if not streams or streams[0].codec_context is None or not streams[0].codec_context.sample_rate:
                container.close()
                return None
        except BaseException:
            container.close()
            raise
        return cls(container, streams[0], output)

    def __init__(self, container, stream, output):
        self._container, self._source = container, stream
        rate = stream.codec_context.sample_rate
        self.rate = rate if rate in _AAC_RATES else 48000
        channels = 1 if stream.codec_context.channels == 1 else 2
        self._layout = "mono" if channels == 1 else "stereo"
        self._stream = output.add_stream("aac", rate=self.rate, layout=self._layout)
        self._stream.bit_rate = _AUDIO_BIT_RATE[channels]
        self._output = output
        self._written = 0  # samples encoded
        self._chunks: Iterator[np.ndarray] = iter(())

    def sample(self, frames: int, rate: Fraction) -> int:
        """The sample at which the reel's frame number `frames` starts."""
        return round(Fraction(frames) * self.rate / rate)

    def start_cut(self, seconds: float, samples: int) -> None:
        """The next cut's sound: `samples` samples from `seconds` on the source's clock."""
        self._drain()
        self._chunks = self._cut(seconds, samples)

    def encode_until(self, sample: int) -> None:
        """Encode the cut's sound up to (at least) the reel's sample number `sample`."""
        while self._written < sample:
            chunk = next(self._chunks, None)
            if chunk is None:
                return
            self._encode(chunk)

    def finish(self) -> None:
        self._drain()
        self._output.mux(self._stream.encode())

    def _drain(self) -> None:
        for chunk in self._chunks:
            self._encode(chunk)

    def _encode(self, chunk: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=self._layout)
        frame.sample_rate, frame.pts, frame.time_base = self.rate, self._written, Fraction(1, self.rate)
        self._output.mux(self._stream.encode(frame))
        self._written += chunk.shape[1]

    def _cut(self, seconds: float, samples: int) -> Iterator[np.ndarray]:
        """Exactly `samples` samples (channels x n, float32) from `seconds` on the source's clock."""
        wanted, end = round(seconds * self.rate), round(seconds * self.rate) + samples
        channels = 1 if self._layout == "mono" else 2
        try:
            stamp = int((seconds - _AUDIO_PREROLL_SECONDS) / self._source.time_base)
            self._container.seek(max(stamp, self._source.start_time or 0), stream=self._source, backward=True)
        except av.FFmpegError:
            self._container.seek(0)
        resampler = av.AudioResampler(format="fltp", layout=self._layout, rate=self.rate)
        position: Optional[int] = None  # the sample number after the last decoded
        for packet in self._container.demux(self._source):
            try:
                decoded = [out for frame in packet.decode() for out in resampler.resample(frame)]
            except av.FFmpegError:
                continue
            for frame in decoded:
                data = frame.to_ndarray()
                at = round(frame.time * self.rate) if frame.time is not None else position
                at = wanted if at is None else at
                position = at + data.shape[1]
                if position <= wanted:
                    continue
                if at > wanted:
                    gap = min(at, end) - wanted
                    yield np.zeros((channels, gap), np.float32)
                    wanted += gap
                if wanted < end:
                    piece = data[:, wanted - at:end - at]
                    yield piece
                    wanted += piece.shape[1]
                if wanted >= end:
                    return
        if wanted < end:
            yield np.zeros((channels, end - wanted), np.float32)

    def close(self) -> None:
        self._container.close()


def _close_quietly(output) -> None:
    if output is not None:
        try:
            output.close()
        except (av.FFmpegError, OSError):
            pass  # the file is removed next: a trailer that cannot be written does not matter


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
