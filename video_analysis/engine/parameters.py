"""What an analysis can be asked for: its kind and its parameters, with their defaults and limits, once.

The engine, the command line, the HTTP layer (validation and the OpenAPI
schemas) and the web page (which reads the OpenAPI document) all take them
from here.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Optional, Type, Union

from pydantic import BaseModel, ConfigDict, Field, WrapValidator

MAX_PROMPT_BYTES = 8 * 1024
DEFAULT_MAX_TOKENS = 64


class AnalysisKind(StrEnum):  # a StrEnum reads as its value in sentences: "workout", not "AnalysisKind.WORKOUT"
    HIGHLIGHTS = "highlights"
    WORKOUT = "workout"

    @property
    def parameters(self) -> Type["AnalysisParameters"]:
        return HighlightsParameters if self is AnalysisKind.HIGHLIGHTS else WorkoutParameters


def _whole_seconds_stay_whole(value, check):
    checked = check(value)
    return value if type(value) is int else checked


# Seconds as given: 10 stays 10 (pydantic would make it 10.0, and the result's settings echo it as given).
Seconds = Annotated[float, WrapValidator(_whole_seconds_stay_whole)]


class AnalysisParameters(BaseModel):
    """The parameters every analysis takes."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    segment_duration: Seconds = Field(ge=1, le=600, description="Seconds of video per segment.")
    frames_per_segment: int = Field(8, ge=1, le=64, description="Frames the model sees per segment.")
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1, le=1024, description="Longest answer per segment, in tokens.")
    system_prompt: Optional[str] = Field(None, description="Replaces the analysis's system prompt.")
    user_prompt: Optional[str] = Field(None, description="Replaces the analysis's question about each segment.")


class HighlightsParameters(AnalysisParameters):
    segment_duration: Seconds = Field(10, ge=1, le=600, description="Seconds of video per segment.")
    min_significance: int = Field(6, ge=1, le=10, description="Lowest score (1-10) a highlight may have.")
    max_highlights: int = Field(10, ge=1, le=100, description="Most highlights returned, best first.")


class WorkoutParameters(AnalysisParameters):
    segment_duration: Seconds = Field(15, ge=1, le=600, description="Seconds of video per segment.")


Parameters = Union[HighlightsParameters, WorkoutParameters]
