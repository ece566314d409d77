"""The default prompts, shared by the engine and by the marker model's training, and whether prompts fit a model.

The user prompt holds no timestamps on purpose: every segment is asked the
same question, so training and inference see identical text.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

from video_analysis.engine.parameters import AnalysisKind, AnalysisParameters

HIGHLIGHTS_SYSTEM = (
    "You are a video analyst. You watch frames sampled from one segment of a video "
    "and judge how significant or interesting that moment is."
)
HIGHLIGHTS_USER = (
    "These frames come from one segment of a video. Describe what happens in one sentence, "
    "then rate the segment on its own line as 'Significance: N/10', where 10 is a key moment "
    "and 1 is nothing of note."
)
WORKOUT_SYSTEM = (
    "You are a fitness coach. You watch frames sampled from one segment of a workout video "
    "and name the exercise being done."
)
WORKOUT_USER = (
    "These frames come from one segment of a workout video. Answer on the first line as "
    "'Exercise: NAME' (for example squat, push-up, lunge, plank, or rest when nobody exercises), "
    "then describe the movement in one sentence."
)

# The prompts an analysis uses when the request gives none, by kind: (system, user).
DEFAULT_PROMPTS = {
    AnalysisKind.HIGHLIGHTS: (HIGHLIGHTS_SYSTEM, HIGHLIGHTS_USER),
    AnalysisKind.WORKOUT: (WORKOUT_SYSTEM, WORKOUT_USER),
}


class PromptsDoNotFit(ValueError):
    """The prompts, frames and max_tokens do not fit the model's context; `field` names what to change."""

    def __init__(self, field: str, sentence: str):
        super().__init__(sentence)
        self.field = field


def prompts_problem(prompt_problem: Callable[..., Optional[Tuple[str, str]]], kind: AnalysisKind,
                    parameters: AnalysisParameters) -> Optional[Tuple[str, str]]:
    """(field, sentence) when the request's prompts, frames and max_tokens do not fit the model, else None.

    `prompt_problem` is the model runner's (`ModelRunner.prompt_problem`, maybe asked through the
    analysis process): it counts with the loaded tokenizer. Prompts not given count as `kind`'s defaults.
    """
    default_system, default_user = DEFAULT_PROMPTS[kind]
    return prompt_problem(parameters.system_prompt, parameters.user_prompt, parameters.frames_per_segment,
                          parameters.max_tokens, default_system_prompt=default_system,
                          default_user_prompt=default_user)
