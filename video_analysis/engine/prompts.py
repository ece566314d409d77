"""The default prompts, shared by the engine and by the marker model's training.

The user prompt holds no timestamps on purpose: every segment is asked the
same question, so training and inference see identical text.
"""
from video_analysis.engine.parameters import AnalysisKind

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
