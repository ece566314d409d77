"""Reading videos: probe a file, plan its segments, read the sampled frames, format times.

The names other layers use are importable from here; the modules behind them
are one per concern (probe, segments, reader and its two backends, timecode).
"""
from video_analysis.video.errors import VideoError
from video_analysis.video.probe import VideoInfo, probe_video
from video_analysis.video.reader import FrameReader
from video_analysis.video.segments import Segment, plan_segments, sample_frame_indices
from video_analysis.video.timecode import Timecode, format_range

__all__ = ["VideoError", "VideoInfo", "probe_video", "FrameReader", "Segment", "plan_segments",
           "sample_frame_indices", "Timecode", "format_range"]
