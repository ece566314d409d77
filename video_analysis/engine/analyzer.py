"""The analysis engine: a video in, highlights or workout steps out.

Framework-free on purpose: the HTTP service, the command line and the tests
all call `VideoHighlightGenerator`. A video is cut into segments, a few
frames of each are sampled with OpenCV, and the one model (see
`model_runner`) is asked about each segment in turn. While the model works on
one segment, the frames of the next are already being decoded.

The command line is `video_analysis.cli` (`python video_highlight_generator.py --help`).
"""
from __future__ import annotations

import re
import threading
import time
from typing import Callable, List, Optional, Tuple

from video_analysis.engine.answers import REST, UNKNOWN, normalize_exercise, parse_significance
from video_analysis.cancellation import Cancelled, raise_if_cancelled
from video_analysis.model.runner import DEFAULT_MODEL, ModelLoadError, ModelRunner
from video_analysis.engine.prompts import HIGHLIGHTS_SYSTEM, HIGHLIGHTS_USER, WORKOUT_SYSTEM, WORKOUT_USER
from video_analysis.video.frames import (
    FrameReader, Segment, VideoError, VideoInfo, format_range, plan_segments, probe_video,
)

__all__ = ["VideoHighlightGenerator", "Cancelled", "VideoError", "ModelLoadError", "DEFAULT_MAX_TOKENS"]

DEFAULT_MAX_TOKENS = 64
Progress = Callable[[int, int, str], None]
# Steps that are not exercise: kept in segment_analyses, left out of exercise_steps.
_NOT_EXERCISE = (REST, UNKNOWN)
_SCORE_LINE = re.compile(r"^\W*(significance|score|rating)\b.*$", re.IGNORECASE | re.MULTILINE)
_EXERCISE_LINE = re.compile(r"^\W*exercise\b[^\n]*$", re.IGNORECASE | re.MULTILINE)


class _EitherEvent:
    """Set when the caller cancels or when the engine itself must stop."""

    def __init__(self, outer: Optional[threading.Event]):
        self._outer = outer
        self._inner = threading.Event()

    def set(self) -> None:
        self._inner.set()

    def is_set(self) -> bool:
        return self._inner.is_set() or (self._outer is not None and self._outer.is_set())


def _text_without(pattern: re.Pattern, text: str) -> str:
    return re.sub(r"\s+", " ", pattern.sub("", text)).strip()


class VideoHighlightGenerator:
    """Finds highlights or workout steps in a video with one vision-language model.

    `model` is a Hugging Face id or a local directory, or an already running
    `ModelRunner` to share one model between callers (as the service does).
    """

    def __init__(self, model: "str | ModelRunner" = DEFAULT_MODEL):
        self.runner = model if isinstance(model, ModelRunner) else ModelRunner(model)

    @property
    def model_name(self) -> str:
        return self.runner.name

    def close(self) -> None:
        self.runner.close()

    # -- public API ----------------------------------------------------------
    def generate_highlights(
        self,
        video_path: str,
        min_significance: int = 6,
        max_highlights: int = 10,
        segment_duration: float = 10,
        frames_per_segment: int = 8,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        system_prompt: Optional[str] = None,
        user_prompt: Optional[str] = None,
        progress: Optional[Progress] = None,
        cancel: Optional[threading.Event] = None,
        video_name: Optional[str] = None,
        video_info: Optional[VideoInfo] = None,
    ) -> dict:
        """Score every segment 1-10 and return the best as highlights (contract's highlights object)."""
        started = time.perf_counter()
        system_prompt = system_prompt or HIGHLIGHTS_SYSTEM
        user_prompt = user_prompt or HIGHLIGHTS_USER
        info, answers = self._analyze(
            video_path, video_name, video_info, segment_duration, frames_per_segment, max_tokens,
            system_prompt, user_prompt, progress, cancel,
        )
        analyses = [
            {
                "segment": segment.index,
                "start_time": segment.start_time,
                "end_time": segment.end_time,
                "significance_score": parse_significance(text),
                "analysis": text,
            }
            for segment, text in answers
        ]
        chosen = sorted(
            (a for a in analyses if a["significance_score"] is not None and a["significance_score"] >= min_significance),
            key=lambda a: (-a["significance_score"], a["start_time"]),
        )[:max_highlights]
        highlights = [
            {
                "start_time": a["start_time"],
                "end_time": a["end_time"],
                "timestamp_formatted": format_range(a["start_time"], a["end_time"]),
                "significance_score": a["significance_score"],
                "description": _text_without(_SCORE_LINE, a["analysis"]) or a["analysis"],
            }
            for a in chosen
        ]
        return {
            "video": info.as_dict(),
            "processing_time_seconds": round(time.perf_counter() - started, 3),
            "total_segments_analyzed": len(analyses),
            "highlights_found": len(highlights),
            "settings": {
                "min_significance": min_significance,
                "max_highlights": max_highlights,
                "segment_duration": segment_duration,
                "frames_per_segment": frames_per_segment,
                "max_tokens": max_tokens,
                "system_prompt": system_prompt,
                "user_prompt": user_prompt,
                "model": self.model_name,
            },
            "highlights": highlights,
            "all_analyses": analyses,
        }

    def analyze_workout(
        self,
        video_path: str,
        segment_duration: float = 15,
        frames_per_segment: int = 8,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        system_prompt: Optional[str] = None,
        user_prompt: Optional[str] = None,
        progress: Optional[Progress] = None,
        cancel: Optional[threading.Event] = None,
        video_name: Optional[str] = None,
        video_info: Optional[VideoInfo] = None,
    ) -> dict:
        """Name the exercise of every segment and merge runs into steps (contract's workout object)."""
        started = time.perf_counter()
        system_prompt = system_prompt or WORKOUT_SYSTEM
        user_prompt = user_prompt or WORKOUT_USER
        info, answers = self._analyze(
            video_path, video_name, video_info, segment_duration, frames_per_segment, max_tokens,
            system_prompt, user_prompt, progress, cancel,
        )
        segment_analyses = [
            {
                "segment": segment.index,
                "start_time": segment.start_time,
                "end_time": segment.end_time,
                "exercise": normalize_exercise(text),
                "analysis": text,
            }
            for segment, text in answers
        ]
        steps = merge_exercise_steps(segment_analyses)
        return {
            "video": info.as_dict(),
            "processing_time_seconds": round(time.perf_counter() - started, 3),
            "total_segments_analyzed": len(segment_analyses),
            "settings": {
                "segment_duration": segment_duration,
                "frames_per_segment": frames_per_segment,
                "max_tokens": max_tokens,
                "system_prompt": system_prompt,
                "user_prompt": user_prompt,
                "model": self.model_name,
            },
            "segment_analyses": segment_analyses,
            "exercise_steps": steps,
            "summary": {
                "total_exercises": len(steps),
                "total_duration": round(sum(step["duration"] for step in steps), 3),
                "exercises": [step["exercise_name"] for step in steps],
            },
        }

    # -- the segment loop ----------------------------------------------------
    def _analyze(
        self, video_path, video_name, video_info, segment_duration, frames_per_segment, max_tokens,
        system_prompt, user_prompt, progress, cancel,
    ) -> Tuple[VideoInfo, List[Tuple[Segment, str]]]:
        if segment_duration <= 0 or frames_per_segment < 1 or max_tokens < 1:
            raise ValueError("segment_duration, frames_per_segment and max_tokens must be positive")
        raise_if_cancelled(cancel)
        self.runner.wait_until_loaded()
        # The service probed the file at upload (to refuse non-videos) and hands that over; it is taken
        # as describing `video_path`, unchecked.
        info = video_info or probe_video(video_path, video_name)
        segments = plan_segments(info.duration_seconds, segment_duration)
        total = len(segments)
        report = progress or (lambda done, total, message: None)
        report(0, total, f"Reading {total} segment{'s' if total != 1 else ''}")
        stop = _EitherEvent(cancel)
        answers: List[Tuple[Segment, str]] = []
        in_flight = None
        try:
            with FrameReader(video_path, info, max_edge=self.runner.image_size, cancel=stop) as reader:
                frames = reader.read_segment(segments[0], frames_per_segment)
                for position, segment in enumerate(segments):
                    in_flight = self.runner.submit(
                        frames, user_prompt, system_prompt=system_prompt, max_tokens=max_tokens, cancel=stop
                    )
                    # Decode the next segment's frames while the model works on this one.
                    if position + 1 < total:
                        upcoming = segments[position + 1]
                        frames = reader.read_segment(upcoming, frames_per_segment)
                    answers.append((segment, in_flight.result()))
                    in_flight = None
                    report(position + 1, total, f"Analyzed segment {position + 1} of {total}")
        except BaseException:
            stop.set()  # a failed read must not leave the model working for nobody
            if in_flight is not None:
                try:
                    in_flight.result()
                except BaseException:  # noqa: BLE001  (the first error is the one to report)
                    pass
            raise
        return info, answers


def merge_exercise_steps(segment_analyses: List[dict]) -> List[dict]:
    """Consecutive segments naming the same exercise become one step; rest is not a step."""
    steps: List[dict] = []
    previous = None
    for analysis in segment_analyses:
        name = analysis["exercise"]
        if name in _NOT_EXERCISE:
            previous = None
            continue
        if previous == name and steps:
            steps[-1]["end_timestamp"] = analysis["end_time"]
        else:
            steps.append({
                "exercise_name": name,
                "start_timestamp": analysis["start_time"],
                "end_timestamp": analysis["end_time"],
                "description": _text_without(_EXERCISE_LINE, analysis["analysis"]),
            })
        previous = name
    for step in steps:
        step["duration"] = round(step["end_timestamp"] - step["start_timestamp"], 3)
        step["timestamp_formatted"] = format_range(step["start_timestamp"], step["end_timestamp"])
        step["description"] = step["description"] or f"{step['exercise_name']} from {step['timestamp_formatted']}"
    return [
        {key: step[key] for key in
         ("exercise_name", "start_timestamp", "end_timestamp", "duration", "timestamp_formatted", "description")}
        for step in steps
    ]
