"""What every kind of analysis is: parameters and prompts in, the model's answers per segment out as a result.

A kind (highlights.py, workout.py) says only what differs: its prompts, how
an answer is read, and how the answers become the contract's result object.
The segment loop that gets the answers is the same for all (analyzer.py).
"""
from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, List, Optional, Sequence

from video_analysis.engine.parameters import AnalysisKind, AnalysisParameters
from video_analysis.engine.prompts import DEFAULT_PROMPTS
from video_analysis.video.probe import VideoInfo
from video_analysis.video.segments import Segment, plan_segments


@dataclass(frozen=True)
class SegmentAnswer:
    """The model's answer for one segment, and how it was got."""

    segment: Segment
    text: str
    frames_analyzed: Optional[int] = None  # frames sent to the model (0: reused); None: kept by a version before them
    reused_from: Optional[int] = None  # the segment whose answer this is, when the model was not asked again

    def stored(self) -> str:
        """As the session stores keep it (the jobs' `answered`, a resume's `resume`): one JSON text."""
        return json.dumps({"record": _RECORD, "answer": self.text,
                           "segment": [self.segment.start_time, self.segment.end_time],
                           "frames_analyzed": self.frames_analyzed, "reused_from": self.reused_from})

    @classmethod
    def restored(cls, stored: str, index: int, planned: Optional[Segment]) -> "SegmentAnswer":
        """The answer `stored` kept for segment `index` (1-based).

        An answer kept by a version before these records is the plain text of a
        fixed segment: its segment is `planned`, how it was got is unknown. So is
        any text that is not a whole record for that segment, whatever it looks
        like (a model can be asked to answer in JSON).
        """
        record = _record(stored)
        if record is not None and (planned is None or (abs(record["segment"][0] - planned.start_time) < 1e-3 and
                                                       abs(record["segment"][1] - planned.end_time) < 1e-3)):
            start, end = record["segment"]
            return cls(Segment(index, start, end), record["answer"], record["frames_analyzed"], record["reused_from"])
        if planned is None:
            raise ValueError(f"The answer kept for segment {index} is not a record of this version, and no fixed "
                             "segment is planned there to hold it.")
        return cls(planned, stored)


_RECORD = 1  # the version of SegmentAnswer.stored's form


def _whole_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _record(stored: str) -> Optional[dict]:
    """`stored` as a record SegmentAnswer.stored wrote, or None when it is anything else."""
    try:
        record = json.loads(stored)
    except ValueError:
        return None
    if not (isinstance(record, dict) and record.keys() == {"record", "answer", "segment", "frames_analyzed",
                                                              "reused_from"} and record["record"] == _RECORD):
        return None
    segment = record["segment"]
    times_ok = (isinstance(segment, list) and len(segment) == 2 and
                all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in segment)
                and 0 <= segment[0] < segment[1])
    counts_ok = all(record[key] is None or _whole_number(record[key]) for key in ("frames_analyzed", "reused_from"))
    return record if times_ok and counts_ok and isinstance(record["answer"], str) else None


# The model's answer for each segment, in order.
Answers = List[SegmentAnswer]


def kept_answers(analysis: "Analysis", info: VideoInfo, stored: Sequence[str],
                 plan: Optional[List[Segment]] = None) -> Answers:
    """The answers a job kept (`SegmentAnswer.stored`), in order; `plan` is the job's fixed segments, for answers
    kept by a version before they named their segment."""
    if plan is None and analysis.parameters.segmentation == "fixed":
        plan = plan_segments(info.duration_seconds, analysis.parameters.segment_duration, info)
    plan = plan or []
    return [SegmentAnswer.restored(text, position + 1, plan[position] if position < len(plan) else None)
            for position, text in enumerate(stored)]


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
        """One row per answered segment: where it is, `name` as `read` finds it in the answer, the answer,
        and how it was got."""
        return [
            {
                "segment": answer.segment.index,
                "start_time": answer.segment.start_time,
                "end_time": answer.segment.end_time,
                name: read(answer.text),
                "analysis": answer.text,
                "frames_analyzed": answer.frames_analyzed,
                "reused_from": answer.reused_from,
            }
            for answer in answers
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
            "segmentation": parameters.segmentation,
            "frame_selection": parameters.frame_selection,
            "max_tokens": parameters.max_tokens,
            "system_prompt": self.system_prompt,
            "user_prompt": self.user_prompt,
            "model": model,
        }

