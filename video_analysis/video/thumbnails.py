"""Thumbnails: one small JPEG from inside each stretch of a video (a highlight, an exercise step)."""
from __future__ import annotations

import os
from typing import Callable, List, Optional, Sequence, Tuple

from video_analysis.cancellation import CancelToken
from video_analysis.video.probe import VideoInfo
from video_analysis.video.reader import FrameReader
from video_analysis.video.segments import Segment

THUMBNAIL_WIDTH = 320  # the widest a thumbnail is: a row of a table, a mark on a timeline
_QUALITY = 85


def write_thumbnails(path: str, info: VideoInfo, stretches: Sequence[Tuple[float, float]], directory: str,
                     cancel: Optional[CancelToken] = None,
                     written: Optional[Callable[[int, int], None]] = None) -> List[str]:
    """One JPEG per (start, end) stretch, `<n>.jpg` in `directory` (n from 0, in the order given); their paths.

    The picture is the stretch's middle frame (a keyframe near it when there is one, as the model's frames
    are chosen), scaled down to at most THUMBNAIL_WIDTH wide with its aspect kept. `written(done, total)`
    is called after each.
    """
    try:
        os.mkdir(directory)  # not makedirs: a session directory cleaned up meanwhile must not come back
    except FileExistsError:
        pass
    for entry in os.listdir(directory):  # what a run that crashed mid-write left (the job resumed after a restart)
        if entry.endswith(".partial"):
            os.unlink(os.path.join(directory, entry))
    # The long edge bounds the width too; a portrait video's width is its short edge.
    longest = THUMBNAIL_WIDTH if info.width >= info.height else round(THUMBNAIL_WIDTH * info.height / info.width)
    paths = []
    with FrameReader(path, info, max_edge=longest, cancel=cancel) as reader:
        for n, (start, end) in enumerate(stretches):
            middle = reader.segment_frame_indices(Segment(n + 1, start, end), 1)
            picture = reader.read(middle[:1])[0]
            if picture.width > THUMBNAIL_WIDTH:  # rounding of the long edge
                picture = picture.resize((THUMBNAIL_WIDTH, max(1, round(picture.height * THUMBNAIL_WIDTH /
                                                                             picture.width))))
            target = os.path.join(directory, f"{n}.jpg")
            partial = target + ".partial"
            picture.save(partial, "JPEG", quality=_QUALITY)
            os.replace(partial, target)  # never half a JPEG under the name a client asks for
            paths.append(target)
            if written is not None:
                written(n + 1, len(stretches))
    return paths
