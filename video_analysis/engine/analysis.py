"""What every kind of analysis is: parameters and prompts in, the model's answers per segment out as a result.

A kind (highlights.py, workout.py) says only what differs: its prompts, how
an answer is read, and how the answers become the contract's result object.
The segment loop that gets the answers is the same for all (analyzer.py).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, List, Tuple

from video_analysis.engine.parameters import AnalysisKind, AnalysisParameters
from video_analysis.engine.prompts import DEFAULT_PROMPTS
from video_analysis.video.probe import VideoInfo
from video_analysis.video.segments import Segment

# The model's answer for each segment, in order.
Answers = List[Tuple[Segment, str]]


def count_of(number: int, noun: str) -> str:
    """"1 highlight", "3 highlights"."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


class Analysis(ABC):
    kind: ClassVar[AnalysisKind]

    def __init__(self, parameters: AnalysisParameters):
        self.parameters = parameters
        default_system, default_user = DEFAULT_PROMPTS[self.kind]
        self.system_prompt = parameters.system_prompt or default_system
        self.user_prompt = parameters.user_prompt or default_user

    @classmethod
    def with_parameters(cls, **given) -> "Analysis":
        """The analysis with `given` checked against its kind's limits, the rest defaulted; a ValueError
        (pydantic's ValidationError) names what is wrong."""
        return cls(cls.kind.parameters(**given))

    @abstractmethod
    def result(self, info: VideoInfo, answers: Answers, model: str, seconds: float) -> dict:
        """The contract's result object for this kind."""

    @classmethod
    @abstractmethod
    def found(cls, result: dict) -> str:
        """What `result` holds, counted: "3 highlights"."""

    @classmethod
    def summary(cls, result: dict) -> str:
        """The sentence a finished job's status shows."""
        return f"Found {cls.found(result)} in {count_of(result['total_segments_analyzed'], 'segment')}"

    @staticmethod
    def _per_segment(answers: Answers, name: str, read: Callable[[str], Any]) -> List[dict]:
        """One row per answered segment: where it is, `name` as `read` finds it in the answer, the answer."""
        return [
            {
                "segment": segment.index,
                "start_time": segment.start_time,
                "end_time": segment.end_time,
                name: read(text),
                "analysis": text,
            }
            for segment, text in answers
        ]

    def _header(self, info: VideoInfo, seconds: float, segments: int) -> dict:
        """The fields every result starts with."""
        return {"video": info.as_dict(), "processing_time_seconds": seconds, "total_segments_analyzed": segments}

    def _settings(self, model: str, **own) -> dict:
        """The parameters used, with the prompts as sent and the model's name; `own` first, in its order."""
        parameters = self.parameters
        return {
            **own,
            "segment_duration": parameters.segment_duration,
            "frames_per_segment": parameters.frames_per_segment,
            "max_tokens": parameters.max_tokens,
            "system_prompt": self.system_prompt,
            "user_prompt": self.user_prompt,
            "model": model,
        }

