"""A result object built from the segments a job has finished so far (`?partial=true`).

The same code as the final result (the kind's `Analysis.result`), fed the
answers kept so far: a partial result is exactly what the final one would
be if the video ended after the last finished segment, so it only grows and
ends equal to the final result (timing fields apart).
"""
from __future__ import annotations

import time
from typing import List

from video_analysis.engine.analysis import kept_answers
from video_analysis.engine.kinds import analysis_class
from video_analysis.engine.outputs import note_reel_settings
from video_analysis.jobs.sessions import SessionState
from video_analysis.video import VideoInfo


def partial_result(state: SessionState, answers: List[str], model_name: str) -> dict:
    """The result object of `state`'s analysis from `answers` (its finished segments, in order)."""
    analysis = analysis_class(state.analysis_type).with_parameters(**state.params)
    info = VideoInfo(**state.video_info)
    seconds = round(time.time() - state.started_at, 3) if state.started_at else 0.0
    result = analysis.result(info, kept_answers(analysis, info, answers), model_name, seconds)
    if state.legacy:
        return result
    return note_reel_settings(analysis.kind, analysis.parameters, result, analysis.parameters.reel)

