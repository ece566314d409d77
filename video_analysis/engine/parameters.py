"""What an analysis can be asked for: its kind and its parameters, with their defaults and limits, once.

The engine, the command line, the HTTP layer (validation and the OpenAPI
schemas) and the web page (which reads the OpenAPI document) all take them
from here.
"""
from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal, Optional, Type, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, WrapValidator

MAX_PROMPT_BYTES = 8 * 1024
DEFAULT_MAX_TOKENS = 64
# SmolVLM's control tokens: in a prompt they would break the image/text layout the model expects.
_CONTROL_TOKEN = re.compile(r"<(?:image|video|global-img|fake_token_around_image|end_of_utterance|row_\d+_col_\d+"
                            r"|\|im_(?:start|end)\||\|endoftext\|)>", re.IGNORECASE)


class AnalysisKind(StrEnum):  # a StrEnum reads as its value in sentences: "workout", not "AnalysisKind.WORKOUT"
    HIGHLIGHTS = "highlights"
    WORKOUT = "workout"

    @property
    def parameters(self) -> Type["AnalysisParameters"]:
        return HighlightsParameters if self is AnalysisKind.HIGHLIGHTS else WorkoutParameters


def _plain_prompt(text: Optional[str], info: ValidationInfo) -> Optional[str]:
    """A prompt the model can take: UTF-8 text of at most MAX_PROMPT_BYTES, no NUL, no control token."""
    if text is None:
        return None
    name = info.field_name
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") that JSON let through
        raise ValueError(f"'{name}' must be valid Unicode text; it holds an unpaired surrogate "
                         "(\\ud800-\\udfff) escape.") from None
    if size > MAX_PROMPT_BYTES:
        raise ValueError(f"'{name}' is too long: at most {MAX_PROMPT_BYTES // 1024} KiB of text is allowed.")
    if "\x00" in text:
        raise ValueError(f"'{name}' must not contain NUL characters.")
    token = _CONTROL_TOKEN.search(text)
    if token:
        raise ValueError(f"'{name}' must not contain the model's control token {token.group(0)}; "
                         "describe the frames in plain words instead.")
    return text


def _document_prompt_length(schema: dict) -> None:
    """Publish the bound a form can enforce: no more characters than MAX_PROMPT_BYTES (a character is 1-4 bytes).

    Documentation only: the byte limit itself is `_plain_prompt`'s, with its own sentence.
    """
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "string":
            option["maxLength"] = MAX_PROMPT_BYTES


Prompt = Annotated[Optional[str], AfterValidator(_plain_prompt), Field(json_schema_extra=_document_prompt_length)]


def _whole_seconds_stay_whole(value, check):
    checked = check(value)
    return value if type(value) is int else checked


# Seconds as given: 10 stays 10 (pydantic would make it 10.0, and the result's settings echo it as given).
Seconds = Annotated[float, WrapValidator(_whole_seconds_stay_whole)]


def _segment_duration(default: float = ...):  # each analysis has its own default; `...`: required
    return Field(default, ge=1, le=600, allow_inf_nan=False, description="Seconds of video per segment.")


# "fixed": segments of segment_duration seconds; "scenes": boundaries at the video's shot cuts (engine/analyzer.py).
Segmentation = Literal["fixed", "scenes"]
# "changes": of a segment's evenly spaced frames, those that differ from the ones already chosen, and the last
# answer again when nothing changed; "even": every evenly spaced frame, every segment asked (video/frame_changes.py).
FrameSelection = Literal["changes", "even"]


class AnalysisParameters(BaseModel):
    """The parameters every analysis takes."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    segment_duration: Seconds = _segment_duration()
    frames_per_segment: int = Field(8, ge=1, le=64, description="Most frames the model sees per segment.")
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1, le=1024, description="Longest answer per segment, in tokens.")
    system_prompt: Prompt = Field(None, description="Replaces the analysis's system prompt "
                                                    f"(at most {MAX_PROMPT_BYTES // 1024} KiB of UTF-8).")
    user_prompt: Prompt = Field(None, description="Replaces the analysis's question about each segment "
                                                  f"(at most {MAX_PROMPT_BYTES // 1024} KiB of UTF-8).")
    segmentation: Segmentation = Field("fixed", description="Where segments start: every segment_duration "
                                       "seconds ('fixed') or at the video's shot cuts ('scenes').")
    frame_selection: FrameSelection = Field("changes", description="Which of a segment's evenly spaced "
                                            "frames the model sees: those that differ from the ones already chosen, "
                                            "reusing the last answer when nothing changed ('changes'), or all of "
                                            "them ('even').")
    reel: bool = Field(False, description="Also render one MP4 of the results in time order "
                                          "(reelUrl in the results).")


class HighlightsParameters(AnalysisParameters):
    segment_duration: Seconds = _segment_duration(10)
    min_significance: int = Field(6, ge=1, le=10, description="Lowest score (1-10) a highlight may have.")
    max_highlights: int = Field(10, ge=1, le=100, description="Most highlights returned, best first.")


class WorkoutParameters(AnalysisParameters):
    segment_duration: Seconds = _segment_duration(15)
    reel_seconds_per_step: int = Field(5, ge=1, le=60, description="Most seconds of each exercise step "
                                                                   "in the reel.")


Parameters = Union[HighlightsParameters, WorkoutParameters]

# Parameters that ask for the reel: the asynchronous API's, not the legacy routes' (their answer has no place for it).
REEL_PARAMETERS = ("reel", "reel_seconds_per_step")
