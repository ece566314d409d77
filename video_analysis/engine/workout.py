"""Workout: the exercise of every segment named, and runs of the same exercise merged into steps."""
from __future__ import annotations

from typing import List

from video_analysis.engine.analysis import Analysis, Answers, count_of
from video_analysis.engine.answers import REST, UNKNOWN, exercise_description, normalize_exercise
from video_analysis.engine.parameters import AnalysisKind
from video_analysis.video.probe import VideoInfo
from video_analysis.video.timecode import format_range

# Steps that are not exercise: kept in segment_analyses, left out of exercise_steps.
_NOT_EXERCISE = (REST, UNKNOWN)


class WorkoutAnalysis(Analysis):
    kind = AnalysisKind.WORKOUT

    def result(self, info: VideoInfo, answers: Answers, model: str, seconds: float) -> dict:
        segment_analyses = self._per_segment(answers, "exercise", normalize_exercise)
        steps = merge_exercise_steps(segment_analyses)
        return {
            **self._header(info, seconds, len(segment_analyses)),
            "settings": self._settings(model),
            "segment_analyses": segment_analyses,
            "exercise_steps": steps,
            "summary": {
                "total_exercises": len(steps),
                "total_duration": round(sum(step["duration"] for step in steps), 3),
                "exercises": [step["exercise_name"] for step in steps],
            },
        }

    @classmethod
    def found(cls, result: dict) -> str:
        return count_of(len(result["exercise_steps"]), "exercise step")


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
                "description": exercise_description(analysis["analysis"]),
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
