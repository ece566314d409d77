"""Scene-aligned segments: shot cuts found in the video, and the segment plan that follows them.

`CutDetector` (a class, as PySceneDetect's detectors are) scores each frame
against the one before it on small copies: the share of cells that moved by
more than a level. A cut is a frame where most of the picture changed at once
while its neighbours did not: sensor noise moves no cell past the level, a
moving shape or a drifting picture moves a few cells each frame (and its
neighbours as many), a hard cut moves most of them, whatever the two shots'
mean brightness. `detect_cuts` feeds it every frame of a file, decoded with
PyAV under the same cap as every other decode and shrunk to the detector's
size, in grey, in FFmpeg's scaler (no full-size RGB copy). `plan_scene_segments` turns
cuts into segments without any video, so its rules are tested alone.
Why this detector and not PySceneDetect's: guides/architecture.md, "Scene-aligned segments".
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from video_analysis.cancellation import CancelToken
from video_analysis.video.capped_decoding import DECODER_ERRORS, FrameTooLarge, decode_packet, open_video
from video_analysis.video.errors import NOT_A_VIDEO, VideoError, frame_too_large, undecodable
from video_analysis.video.probe import VideoInfo
from video_analysis.video.segments import Segment

# Scenes shorter than this are merged into a neighbour: too short for a moment of their own.
MIN_SCENE_SECONDS = 1.0
# progress(frames done, frames in all) is called this often while the frames are read.
PROGRESS_EVERY_FRAMES = 50


class CutDetector:
    """Finds hard cuts in a stream of frames given one at a time, in order.

    `signature_size(width, height)` gives the size to shrink frames to;
    `add(small_rgb)` takes each frame at that size; `cuts()` returns the
    numbers (from 0) of the frames that start a new shot. The decision needs
    a few frames after the cut (`window`), so it is made at the end.
    """

    def __init__(self, edge: int = 64, level: int = 20, min_changed: float = 0.35, min_jump: float = 0.25,
                 window: int = 6):
        """`edge`: the small copies' longest edge, in cells (a 1080p frame's cell averages 30x30 pixels).
        `level`: how far (0-255 grey; any channel of a colour copy) a cell must move to count as changed; sensor noise on a
        cell of a few pixels stays far below it. `min_changed`: the share of cells a cut changes at least.
        `min_jump`: how far above its neighbours' median (the `window` frames either side) a cut's share
        must stand: a fast pan changes many cells on every frame, and none of those frames is a cut.
        """
        self.edge, self.level, self.min_changed, self.min_jump, self.window = edge, level, min_changed, min_jump, window
        self._previous: Optional[np.ndarray] = None
        self._scores: List[float] = []  # the share of cells changed since the frame before; 0 for the first

    def signature_size(self, width: int, height: int) -> Tuple[int, int]:
        scale = min(1.0, self.edge / max(width, height, 1))
        return max(1, round(width * scale)), max(1, round(height * scale))

    def add(self, small: np.ndarray) -> None:
        """The next frame, shrunk to `signature_size`: grey (height x width) or colour (x channels), uint8."""
        current = small.astype(np.int16)
        if self._previous is None or self._previous.shape != current.shape:
            self._scores.append(0.0 if self._previous is None else 1.0)
        else:
            moved = np.abs(current - self._previous)
            moved = moved.max(axis=2) if moved.ndim == 3 else moved
            self._scores.append(float(np.count_nonzero(moved > self.level)) / moved.size)
        self._previous = current

    @property
    def frames(self) -> int:
        return len(self._scores)

    @property
    def scores(self) -> List[float]:
        return list(self._scores)

    def cuts(self) -> List[int]:
        """Frames whose share of changed cells is large and stands well above their neighbours'."""
        scores = np.asarray(self._scores, dtype=np.float64)
        found = []
        for index in np.flatnonzero(scores >= self.min_changed):
            if index == 0:
                continue
            around = np.concatenate([scores[max(1, index - self.window):index], scores[index + 1:index + 1 + self.window]])
            baseline = float(np.median(around)) if around.size else 0.0
            if scores[index] - baseline >= self.min_jump:
                found.append(int(index))
        return found


def detect_cuts(path: str, info: VideoInfo, cancel: CancelToken,
                progress: Optional[Callable[[int, int], None]] = None,
                detector: Optional[CutDetector] = None) -> List[int]:
    """The frames (numbers from 0) of `path` that start a new shot, in order.

    Decodes every frame, in order, under the 8K cap, and no more frames than
    the probe counted (`info.frame_count`): a file whose packets go on past
    them is not read further. `cancel` is checked before each frame. Raises
    VideoError for a file that does not open or a frame that does not
    decode, with the frame's time.
    """
    detector = detector or CutDetector()
    try:
        container, stream = open_video(path)
    except DECODER_ERRORS:
        raise VideoError(NOT_A_VIDEO) from None
    done, size = 0, None
    try:
        for packet in container.demux(stream):
            cancel.raise_if_cancelled()
            for frame in decode_packet(packet):
                cancel.raise_if_cancelled()
                if done >= info.frame_count:
                    break
                if size is None:
                    size = detector.signature_size(frame.width, frame.height)
                detector.add(frame.to_ndarray(width=size[0], height=size[1], format="gray", interpolation="AREA"))
                done += 1
                if progress is not None and done % PROGRESS_EVERY_FRAMES == 0:
                    progress(done, info.frame_count)
            if done >= info.frame_count:
                break
    except FrameTooLarge:
        raise frame_too_large(done) from None
    except DECODER_ERRORS:
        raise undecodable(min(done, max(0, info.frame_count - 1)), info.fps, info.frame_count) from None
    finally:
        container.close()
    if progress is not None:
        progress(done, info.frame_count)
    return detector.cuts()


def plan_scene_segments(cuts: Sequence[int], frame_count: int, fps: float, segment_duration: float) -> List[Segment]:
    """Segments whose boundaries are the cuts (frame numbers that start a shot), for a video of `frame_count` frames.

    - A scene shorter than MIN_SCENE_SECONDS joins the scene before it (the
      first one joins the one after): a flash or a cutaway is part of the
      moment it interrupts, and a run of short shots (a montage) becomes one
      scene instead of many slivers. The joined cut is no boundary.
    - A scene longer than `segment_duration` is split into ceil(length /
      segment_duration) equal parts, each at least one frame.
    Every segment holds at least one frame of its own; times are seconds
    (frame / fps), rounded to 3 decimals as `plan_segments`'s are.
    """
    if frame_count <= 0 or fps <= 0 or segment_duration <= 0:
        return []
    starts = sorted({int(cut) for cut in cuts if 0 < cut < frame_count})
    scenes: List[Tuple[int, int]] = []  # [first frame, frame after the last)
    for start, end in zip([0] + starts, starts + [frame_count]):
        if scenes and ((end - start) / fps < MIN_SCENE_SECONDS or (scenes[-1][1] - scenes[-1][0]) / fps < MIN_SCENE_SECONDS):
            scenes[-1] = (scenes[-1][0], end)
        else:
            scenes.append((start, end))
    bounds: List[Tuple[int, int]] = []
    for start, end in scenes:
        frames = end - start
        # A scene that is a whole number of segments long (to rounding) is not split once more.
        parts = max(1, min(frames, math.ceil(frames / fps / segment_duration - 1e-6)))
        edges = [start + round(i * frames / parts) for i in range(parts + 1)]
        bounds.extend(zip(edges, edges[1:]))
    return [Segment(index=i + 1, start_time=float(round(start / fps, 3)), end_time=float(round(end / fps, 3)))
            for i, (start, end) in enumerate(bounds)]


def scene_segments(path: str, info: VideoInfo, segment_duration: float, cancel: CancelToken,
                   progress: Optional[Callable[[int, int], None]] = None) -> List[Segment]:
    """The segment plan of `segmentation: "scenes"`: boundaries at the video's cuts (`detect_cuts`), then
    `plan_scene_segments`'s rules. `progress(frames read, frames in all)` reports the reading."""
    cuts = detect_cuts(path, info, cancel, progress)
    return plan_scene_segments(cuts, info.frame_count, info.fps, segment_duration)
