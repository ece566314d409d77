"""What a finished analysis makes besides its result: a thumbnail for each finding, and a reel of them.

The asynchronous API asks for both (the reel only with `reel: true`), the
command line for what its flags name, the legacy routes for neither. The
findings are the result's highlights or exercise steps; `n`, a finding's
position in its list, names its thumbnail `<n>.jpg`. The reel shows the
findings in time order, an exercise step for at most `reel_seconds_per_step`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from video_analysis.cancellation import CancelToken
from video_analysis.engine.parameters import AnalysisKind, AnalysisParameters
from video_analysis.video.probe import VideoInfo
from video_analysis.video.reel import EmptyReel, render_reel
from video_analysis.video.thumbnails import write_thumbnails
from video_analysis.video.timecode import Timecode

# Called with (the fraction of the rendering done, 0-1; a sentence) while thumbnails and the reel are made.
Rendering = Callable[[float, str], None]

DEFAULT_MAX_REEL_SECONDS = 600.0
_NOTHING = "No reel was made: the analysis found nothing to put in it."
_THUMBNAILS_SHARE = 0.1  # of the rendering's progress, when a reel follows the thumbnails


@dataclass(frozen=True)
class OutputRequest:
    """Where the outputs go; None: not made."""

    thumbnails_dir: Optional[str] = None  # <n>.jpg for each finding
    reel_path: Optional[str] = None  # the reel's MP4
    max_reel_seconds: float = DEFAULT_MAX_REEL_SECONDS  # a longer reel is refused, and the result says why


# Each kind's findings in its result: the list's name, and the names of a finding's start and end times.
FINDINGS = {AnalysisKind.HIGHLIGHTS: ("highlights", "start_time", "end_time"),
            AnalysisKind.WORKOUT: ("exercise_steps", "start_timestamp", "end_timestamp")}


def findings(kind: AnalysisKind, result: dict) -> Tuple[List[dict], str, str]:
    """The result's findings and the names of their start and end times."""
    name, start, end = FINDINGS[kind]
    return result[name], start, end


def reel_cuts(kind: AnalysisKind, result: dict, parameters: AnalysisParameters) -> List[Tuple[float, float]]:
    """The stretches of the source the reel shows, in time order."""
    items, start, end = findings(kind, result)
    cuts = sorted((item[start], item[end]) for item in items)
    if kind is AnalysisKind.WORKOUT:
        most = parameters.reel_seconds_per_step
        cuts = [(first, min(last, first + most)) for first, last in cuts]
    return cuts


def _too_long(kind: AnalysisKind, seconds: float, most: float) -> str:
    remedy = ("lower max_highlights or raise min_significance" if kind is AnalysisKind.HIGHLIGHTS
              else "lower reel_seconds_per_step")
    return (f"No reel was made: it would last {Timecode(seconds)}, more than the {Timecode(most)} a reel may last "
            f"on this server (MAX_REEL_SECONDS); {remedy} and run the analysis again.")


def add_outputs(kind: AnalysisKind, parameters: AnalysisParameters, result: dict, video_path: str, info: VideoInfo,
                request: OutputRequest, cancel: CancelToken, rendering: Rendering) -> dict:
    """Make the requested outputs and note them in `result` (changed in place, and returned).

    Each finding gains `thumbnail` (its file name in `thumbnails_dir`); the result gains `reel`
    ({"duration", "size"} or None) and `reel_refused` (None, or the sentence saying why there is no reel
    although one was asked for); `settings` gains the reel's parameters.
    """
    items, start, end = findings(kind, result)
    reel_asked = request.reel_path is not None
    note_reel_settings(kind, parameters, result, reel_asked)
    share = _THUMBNAILS_SHARE if reel_asked else 1.0
    if request.thumbnails_dir is not None and items:
        def written(done: int, total: int) -> None:
            rendering(share * done / total, f"Making thumbnails ({done} of {total})")
        rendering(0.0, f"Making thumbnails (0 of {len(items)})")
        paths = write_thumbnails(video_path, info, [(item[start], item[end]) for item in items],
                                 request.thumbnails_dir, cancel, written)
        for item, path in zip(items, paths):
            item["thumbnail"] = os.path.basename(path)
    result["reel"], result["reel_refused"] = None, None
    if not reel_asked:
        return result
    cuts = reel_cuts(kind, result, parameters)
    seconds = sum(last - first for first, last in cuts)
    if not cuts:
        result["reel_refused"] = _NOTHING
    elif seconds > request.max_reel_seconds:
        result["reel_refused"] = _too_long(kind, seconds, request.max_reel_seconds)
    else:
        def rendered(fraction: float) -> None:
            rendering(share + (1 - share) * fraction, f"Rendering the reel ({int(100 * fraction)} %)")
        rendered(0.0)
        try:
            reel = render_reel(video_path, cuts, request.reel_path, cancel=cancel, progress=rendered)
        except EmptyReel:  # the findings' times hold no frame: nothing to show
            result["reel_refused"] = _NOTHING
            return result
        result["reel"] = {"duration": round(reel.duration, 3), "size": reel.size}
    return result


def note_reel_settings(kind: AnalysisKind, parameters: AnalysisParameters, result: dict, reel: bool) -> dict:
    """`settings` with the reel's parameters: whether one was asked for, and (workout) how long a step in it lasts."""
    result["settings"]["reel"] = reel
    if kind is AnalysisKind.WORKOUT:
        result["settings"]["reel_seconds_per_step"] = parameters.reel_seconds_per_step
    return result


def without_outputs(result: dict, reason: str) -> dict:
    """`result` with no thumbnail and no reel noted (they were made, but are not where clients get them), and why."""
    for name, _, _ in FINDINGS.values():
        for item in result.get(name, ()):
            item.pop("thumbnail", None)
    result["reel"], result["reel_refused"] = None, reason
    return result
