"""Which frames of a segment the model sees, and whether it must be asked about the segment at all.

The candidates are the segment's evenly spaced frames (video/segments.py).
With frame selection "changes" only those that differ from the ones already
chosen are sent (video/frame_changes.py), and a segment whose chosen frames
show the pictures the model last saw is answered with that answer again:
decoding is greedy, so the model would say the same. With "even" every
candidate is sent and every segment asked, as before selection existed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
from PIL import Image

from video_analysis.video import FrameReader, Segment
from video_analysis.video.frame_changes import choose_changed, same_pictures, signature


@dataclass(frozen=True)
class SegmentFrames:
    segment: Segment
    images: List[Image.Image]  # the frames to send
    signatures: List[np.ndarray]  # theirs ("changes" only)


@dataclass(frozen=True)
class Seen:
    """The last frames the model was asked about, and its answer."""

    frames: SegmentFrames
    answer: str

    @property
    def segment_index(self) -> int:
        return self.frames.segment.index


class FrameSampler:
    def __init__(self, reader: FrameReader, frames_per_segment: int, frame_selection: str):
        self.reader = reader
        self.frames_per_segment = frames_per_segment
        self.changes = frame_selection == "changes"

    def frames(self, segment: Segment) -> SegmentFrames:
        images = self.reader.read_segment(segment, self.frames_per_segment)
        if not self.changes:
            return SegmentFrames(segment, images, [])
        signatures = [signature(image) for image in images]
        chosen = choose_changed(signatures)
        return SegmentFrames(segment, [images[i] for i in chosen], [signatures[i] for i in chosen])

    def unchanged(self, frames: SegmentFrames, seen: Optional[Seen]) -> bool:
        """Whether the model already answered these pictures (never with "even")."""
        return self.changes and seen is not None and same_pictures(frames.signatures, seen.frames.signatures)
