"""The trained `marker` model through the product's own paths.

Held-out frame sets are generated here with seeds the training never uses
(new scenes, positions, sizes, noise, frame sizes); they go through
`model_runner.ModelRunner.generate` with the product's default prompts, exactly
as the engine sends them, and the answers are read with `answer_parsing`.
Then two generated videos go end to end through `VideoHighlightGenerator`.

Run with `pytest -s` to see the build time and the accuracies.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tools import make_tiny_model as mtm  # noqa: E402  (does not import mlx)

mtm.preload_openblas()

from tools import marker_training as mt  # noqa: E402

from video_analysis.engine import prompts  # noqa: E402
from video_analysis.engine.answers import normalize_exercise, parse_significance  # noqa: E402

SETS = 200
PROMPTS = {
    mt.HIGHLIGHTS: (prompts.HIGHLIGHTS_SYSTEM, prompts.HIGHLIGHTS_USER),
    mt.WORKOUT: (prompts.WORKOUT_SYSTEM, prompts.WORKOUT_USER),
}


@pytest.fixture(scope="module")
def runner(marker_model_dir):
    from video_analysis.model.runner import ModelRunner

    runner = ModelRunner(marker_model_dir)
    runner.wait_until_loaded(120)
    yield runner
    runner.close()


def _read(task: str, text: str):
    return parse_significance(text) if task == mt.HIGHLIGHTS else normalize_exercise(text)


def _accuracy(runner, task: str, seed: int, frames, min_marked: int = 1, max_marked=None):
    """Share of SETS held-out frame sets answered right; frames is an int or (lo, hi)."""
    rng = np.random.default_rng([20_251_126, seed])
    system, user = PROMPTS[task]
    lo, hi = (frames, frames) if isinstance(frames, int) else frames
    correct, wrong = 0, []
    for i in range(SETS):
        n = int(rng.integers(lo, hi + 1))
        (images, expected), = mt.eval_sets(
            rng, runner.image_size, 1, task, n, min_marked=min(min_marked, n),
            max_marked=None if max_marked is None else min(max_marked, n),
            label=mt.labels_for(task)[i % len(mt.labels_for(task))],
        )
        text = runner.generate(images, user, system_prompt=system, max_tokens=12)
        if _read(task, text) == _read(task, expected):
            correct += 1
        else:
            wrong.append((n, expected, text))
    accuracy = correct / SETS
    print(f"\n{task:10s} frames {lo}-{hi}, square in {min_marked}-{max_marked or 'all'}: "
          f"{accuracy:.1%} of {SETS}" + (f"  (wrong e.g. {wrong[:3]})" if wrong else ""))
    return accuracy


def test_checkpoint_describes_its_training(marker_model_dir):
    info = json.loads((Path(marker_model_dir) / "builder_info.json").read_text())
    assert Path(marker_model_dir).name.startswith("marker-0-")
    assert info["preset"] == "marker" and info["seed"] == 0
    print(f"\nmarker model: {info['parameter_count']:,} parameters, "
          f"{(Path(marker_model_dir) / mtm.WEIGHTS_FILE).stat().st_size / 1e6:.2f} MB, "
          f"trained in {info['training']['train_seconds']} s")


def test_highlights_accuracy(runner):
    assert _accuracy(runner, mt.HIGHLIGHTS, 1, (1, 8)) >= 0.97


def test_highlights_one_of_eight_frames(runner):
    assert _accuracy(runner, mt.HIGHLIGHTS, 2, 8, min_marked=1, max_marked=1) >= 0.97


def test_workout_accuracy(runner):
    assert _accuracy(runner, mt.WORKOUT, 3, 8, min_marked=2) >= 0.95


def test_answers_are_exact(runner):
    """The answer is the trained line itself, nothing around it."""
    rng = np.random.default_rng([20_251_126, 4])
    for task in mt.TASKS:
        system, user = PROMPTS[task]
        for images, expected in mt.eval_sets(rng, runner.image_size, 6, task, 4, distractors=0.0):
            assert runner.generate(images, user, system_prompt=system, max_tokens=12) == expected


@pytest.fixture(scope="module")
def engine(marker_model_dir):
    from video_analysis.engine.analyzer import VideoHighlightGenerator

    generator = VideoHighlightGenerator(marker_model_dir)
    yield generator
    generator.close()


@pytest.mark.parametrize("size", [(160, 120), (320, 180)])
def test_engine_finds_the_marked_segments(engine, tmp_path, size):
    from tools.synthetic_video import Marker, write_video

    video = write_video(str(tmp_path / "marked.mp4"), duration=40, fps=10, size=size,
                        markers=[Marker(12, 18), Marker(31, 36)], seed=7)
    result = engine.generate_highlights(video, min_significance=6, segment_duration=10)
    scores = [a["significance_score"] for a in result["all_analyses"]]
    print(f"\nhighlights {size}: scores per segment {scores}")
    assert scores == [2, 9, 2, 9]
    assert [(h["start_time"], h["end_time"], h["timestamp_formatted"]) for h in result["highlights"]] == [
        (10.0, 20.0, "00:10-00:20"),
        (30.0, 40.0, "00:30-00:40"),
    ]
    assert result["highlights_found"] == 2


def test_engine_names_the_exercises(engine, tmp_path):
    from tools.synthetic_video import Marker, write_video

    video = write_video(str(tmp_path / "workout.mp4"), duration=75, fps=10, size=(160, 120),
                        markers=[Marker(0, 30, "red"), Marker(30, 60, "blue")], seed=11)
    result = engine.analyze_workout(video, segment_duration=15)
    names = [a["exercise"] for a in result["segment_analyses"]]
    print(f"\nworkout: exercise per segment {names}")
    assert names == ["squat", "squat", "push-up", "push-up", "rest"]
    steps = [(s["exercise_name"], s["start_timestamp"], s["end_timestamp"], s["timestamp_formatted"])
             for s in result["exercise_steps"]]
    assert steps == [("squat", 0.0, 30.0, "00:00-00:30"), ("push-up", 30.0, 60.0, "00:30-01:00")]


def test_training_is_deterministic(tmp_path, monkeypatch):
    """Same seed -> bit-identical weights (a few steps of the real training loop)."""
    smoke = json.loads(json.dumps(mtm.PRESETS["marker"]))
    smoke["train"].update(vision_steps=2, vision_batch=16, steps=3, short_steps=1, batch_size=4, pool_size=64,
                          refresh_per_step=8)
    monkeypatch.setitem(mtm.PRESETS, "marker-smoke", smoke)
    a = mtm.build_checkpoint(tmp_path / "a", "marker-smoke", seed=5)
    b = mtm.build_checkpoint(tmp_path / "b", "marker-smoke", seed=5)
    c = mtm.build_checkpoint(tmp_path / "c", "marker-smoke", seed=6)
    weights = mtm.WEIGHTS_FILE
    assert (a / weights).read_bytes() == (b / weights).read_bytes()
    assert (a / weights).read_bytes() != (c / weights).read_bytes()


def test_cache_key_follows_the_training_code(monkeypatch):
    key = mtm.settings_hash("marker")
    assert key != mtm.settings_hash("tiny")
    monkeypatch.setattr(mt, "source_hash", lambda: "something else")
    assert mtm.settings_hash("marker") != key
