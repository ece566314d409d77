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
