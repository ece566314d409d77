"""The two tasks the marker model learns: the product's prompts, the answers it must give, and example frame sets."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from tools.marker_training.frames import BLUE, NONE, RED, WHITE, render_clip
from video_analysis.engine import prompts  # the product's default prompts

HIGHLIGHTS = "highlights"
WORKOUT = "workout"
TASKS = (HIGHLIGHTS, WORKOUT)
SYSTEM_PROMPTS = {HIGHLIGHTS: prompts.HIGHLIGHTS_SYSTEM, WORKOUT: prompts.WORKOUT_SYSTEM}
USER_PROMPTS = {HIGHLIGHTS: prompts.HIGHLIGHTS_USER, WORKOUT: prompts.WORKOUT_USER}
ANSWER_HIGH = "Significance: 9/10"
ANSWER_LOW = "Significance: 2/10"
EXERCISE_ANSWERS = {RED: "Exercise: squat", BLUE: "Exercise: push-up", NONE: "Exercise: rest"}


def answer_for(task: str, colours: Sequence[int]) -> str:
    """The answer the model must give for frames with these colour labels."""
    if task == HIGHLIGHTS:
        return ANSWER_HIGH if WHITE in colours else ANSWER_LOW
    if RED in colours:
        return EXERCISE_ANSWERS[RED]
    if BLUE in colours:
        return EXERCISE_ANSWERS[BLUE]
    return EXERCISE_ANSWERS[NONE]


def messages_for(task: str) -> list:
    """The product's message list (video_analysis.model.runner.ModelRunner.submit)."""
    return [
        {"role": "system", "content": SYSTEM_PROMPTS[task]},
        {"role": "user", "content": USER_PROMPTS[task]},
    ]


def random_colours(rng: np.random.Generator, task: str, n: int, label: Optional[int] = None,
                   n_marked: Optional[int] = None, distractors: float = 0.25) -> List[int]:
    """Colour labels for n frames of one example of `task`.

    label: for highlights WHITE (positive) or NONE; for workout RED, BLUE or NONE.
    n_marked: how many frames show the labelled square (random when None).
    distractors: chance of squares that do not count for the task
    (red/blue under highlights, white under workout) in unmarked frames.
    """
    if label is None:
        label = (WHITE if rng.random() < 0.5 else NONE) if task == HIGHLIGHTS else int(rng.choice([RED, BLUE, NONE]))
    colours = [NONE] * n
    order = rng.permutation(n)
    marked = 0
    if label != NONE:
        if n_marked is None:
            n_marked = 1 if rng.random() < 0.4 else int(rng.integers(1, n + 1))
        marked = n_marked
        for i in order[:marked]:
            colours[i] = label
    if rng.random() < distractors and marked < n:
        others = [RED, BLUE] if task == HIGHLIGHTS else [WHITE]
        if task == HIGHLIGHTS and rng.random() < 0.5:
            others = [int(rng.choice([RED, BLUE]))]
        count = int(rng.integers(1, n - marked + 1))
        for i in order[marked: marked + count]:
            colours[i] = int(rng.choice(others))
    return colours


def labels_for(task: str) -> List[int]:
    """The labels of a task: highlights white / none, workout red / blue / none."""
    return [WHITE, NONE] if task == HIGHLIGHTS else [RED, BLUE, NONE]


def eval_sets(rng: np.random.Generator, image_size: int, count: int, task: str, n_frames: int,
              min_marked: int = 1, max_marked: Optional[int] = None, distractors: float = 0.25,
              size=None, label: Optional[int] = None) -> List[Tuple[list, str]]:
    """Frame sets (clips) with the expected answer, balanced over labels unless `label` is given."""
    labels = labels_for(task) if label is None else [label]
    out = []
    for i in range(count):
        label = labels[i % len(labels)]
        marked = None
        if label != NONE:
            hi = n_frames if max_marked is None else max_marked
            marked = int(rng.integers(min_marked, hi + 1))
        colours = random_colours(rng, task, n_frames, label=label, n_marked=marked, distractors=distractors)
        frames = render_clip(rng, colours, image_size, size=size)
        out.append((frames, answer_for(task, colours)))
    return out


def tokenizer_corpus() -> List[str]:
    """Extra tokenizer corpus for the marker preset: the prompts and answers, repeated."""
    lines = [*SYSTEM_PROMPTS.values(), *USER_PROMPTS.values(), "System: User: Assistant:",
             ANSWER_HIGH, ANSWER_LOW, *EXERCISE_ANSWERS.values()]
    return lines * 8
