"""Planning: a video cut into segments, and which frames of each segment the model sees."""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

from video_analysis.video.probe import VideoInfo


@dataclass(frozen=True)
class Segment:
    index: int  # 1-based, as people count segments
    start_time: float
    end_time: float


def plan_segments(duration: float, segment_duration: float, info: Optional[VideoInfo] = None) -> List[Segment]:
    """Cut [0, duration) into segments; the last, partial one counts too.

    With `info` (the video's frame rate and count), a segment in which no
    frame starts is merged into the one before it: it could only show that
    segment's last frame again (a 4.004 s clip at 29.97 fps in 2 s segments
    is 0-2 and 2-4.004, not 0-2, 2-4 and 4-4.004).
    """
    if duration <= 0 or segment_duration <= 0:
        return []
    # A trailing sliver shorter than a millisecond is rounding, not video.
    count = max(1, math.ceil(duration / segment_duration - 1e-3))
    bounds = [(i * segment_duration, min((i + 1) * segment_duration, duration)) for i in range(count)]
    if info is not None:
        merged = bounds[:1]
        for start, end in bounds[1:]:
            if holds_a_frame(start, end, info):
                merged.append((start, end))
            else:
                merged[-1] = (merged[-1][0], end)
        bounds = merged
    return [Segment(index=i + 1, start_time=float(round(start, 3)), end_time=float(round(end, 3)))
            for i, (start, end) in enumerate(bounds)]


def holds_a_frame(start: float, end: float, info: VideoInfo) -> bool:
    """Whether a frame of the video starts within [start, end) (frame n starts at n / fps)."""
    if info.fps <= 0:
        return True  # nothing to go by: keep the segment as planned
    first = math.ceil(start * info.fps - 1e-6)
    return first < info.frame_count and first / info.fps < end - 1e-9


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
