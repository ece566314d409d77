"""What a person is told about a video this service cannot read: `VideoError` and its sentences."""
from __future__ import annotations

from typing import Optional

from video_analysis.video.timecode import Timecode

# Frames larger than 8K (8192 x 4320) are refused: a small file can hold huge
# frames (a valid 16000 x 16000 JPEG is 1.5 MB; decoded, 366 MiB as YUV and
# 732 MiB more as RGB).
MAX_FRAME_PIXELS = 8192 * 4320

NOT_A_VIDEO = "The file is not a video that can be decoded; upload an MP4, MOV, WebM or AVI video."


class VideoError(Exception):
    """The file is not a video we can analyse; the message is for a person."""


def check_frame_size(width: int, height: int) -> None:
    """VideoError when a frame of this size is over the 8K this service reads."""
    if width * height > MAX_FRAME_PIXELS:
        raise VideoError(f"The video's frames are {width}x{height} pixels, larger than the 8K (8192x4320) "
                         "this service reads; upload a smaller version of the video.")


def frame_too_large(index: Optional[int]) -> VideoError:
    """The sentence for a frame a capped decoder refused: its size is not known, only that it is over."""
    which = f"Frame {index + 1} of the video" if index is not None else "A frame of the video"
    return VideoError(f"{which} is larger than the 8K (8192x4320 pixels) this service reads; "
                      "upload a smaller version of the video.")


def undecodable(index: int, fps: float, frame_count: int) -> VideoError:
    """The sentence for frame `index` (from 0) that does not decode."""
    return VideoError(f"The video could not be decoded at {Timecode(index / fps)} (frame {index + 1} of "
                      f"{frame_count}); the file may be truncated or damaged.")
