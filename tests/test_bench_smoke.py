"""Fast checks of the benchmark code (bench/): helpers, result keys, the README table.

No server and no model: the benchmarks themselves run with `make bench-quick`
(< 3 min) and `make bench`. One small real measurement (frame sampling vs
decoding every frame, a subprocess on a 2 s video) keeps the code honest.
"""
import json
import os

import pytest

from bench import report
from bench.figures.p6_scaling import linear_fit, sampling_vs_decode_all
from bench.pollers import percentile
from bench.reference_pipeline import cli_environment, parse_answer, segment_starts
from bench.results import FULL_KEYS, REQUIRED_KEYS, TARGETS, finish, missing_keys
from tools.synthetic_video import write_video
from video_analysis.video import plan_segments


def test_linear_fit_recovers_a_line_and_percentiles_interpolate():
    fit = linear_fit([1, 2, 4, 8], [3.5, 6.0, 11.0, 21.0])
    assert fit["slope"] == pytest.approx(2.5) and fit["intercept"] == pytest.approx(1.0)
    assert fit["r2"] == pytest.approx(1.0)
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile(list(range(101)), 99) == pytest.approx(99)
    assert percentile([10.0], 99) == 10.0


@pytest.mark.parametrize("duration", [10, 20, 25.0, 60, 9.9995, 65.5, 3])
def test_reference_cuts_the_segments_the_service_analyses(duration):
    assert segment_starts(duration, 10) == [s.start_time for s in plan_segments(duration, 10)]


def test_reference_reads_the_answer_without_the_cli_notice():
    stdout = ("SmolVLMProcessor has no native video support; sending 8 of 8 sampled frames as ordered images.\n"
              "A dog runs.\nSignificance: 7/10\n")
    assert parse_answer(stdout) == "A dog runs.\nSignificance: 7/10"


def test_reference_blas_choice_is_explicit(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/somewhere/else.so")
    assert "LD_PRELOAD" not in cli_environment("bundled")
    preloaded = cli_environment("openblas").get("LD_PRELOAD")
    assert preloaded is None or "openblas" in preloaded
    with pytest.raises(ValueError):
        cli_environment("mkl")


def _fake_results(mode: str, value: float = 1.0) -> dict:
    """A complete results file of `mode` with every figure at `value`, as finish() writes it."""
    keys = list(REQUIRED_KEYS) + (list(FULL_KEYS) if mode == "full" else [])
    results = {key: value for key in keys if key not in ("machine", "targets")}
    results.update(mode=mode, details={}, bench_seconds=60.0)
    return finish(results, ["bench/run.py"] + (["--quick"] if mode == "quick" else []))


def test_a_run_must_have_every_figure_the_readme_table_shows():
    """A figure the table shows but a run need not have would sit at '–' without the run failing."""
    shown = {key for key, _label, _format, _target in report.ROWS}
    required = set(REQUIRED_KEYS + FULL_KEYS) - {"machine", "targets"}
    assert sorted(shown - required) == [], "shown in bench/README.md, never required of a run"
    assert sorted(required - shown) == [], "required of a run, never shown in bench/README.md"


def test_the_readme_table_and_the_results_judge_the_same_targets():
    with_target = {key for key, _label, _format, target in report.ROWS if target}
    assert with_target == set(TARGETS)


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_a_run_that_lost_a_figure_is_reported(mode):
    complete = _fake_results(mode)
    required = list(REQUIRED_KEYS) + (list(FULL_KEYS) if mode == "full" else [])
    for key in required:
        results = {k: v for k, v in complete.items() if k != key}
        assert missing_keys(results) == [key]
    if mode == "quick":
        assert not set(FULL_KEYS) & set(complete)  # a quick run is complete without the full-size figures


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_results_judge_each_target_and_describe_the_machine(mode):
    results = _fake_results(mode)
    assert results["machine"]["cores"] >= 1 and results["machine"]["mlx"]
    assert results["targets"]["p3_status_p99_ms"] == {"target": "<= 10", "value": 1.0, "met": True}
    assert results["targets"]["p2_speedup_vs_reference_tiny"]["met"] is False  # 1.0 < 20
    json.dumps(results)  # serialisable as written


def test_readme_table_is_built_from_the_newest_results(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", str(tmp_path))
    for name, mode, value in (("2025-12-31-quick.json", "quick", 9.0), ("2026-01-01-quick.json", "quick", 1.0),
                              ("2026-01-01.json", "full", 1.0), ("2025-12-31.json", "full", 9.0)):
        (tmp_path / name).write_text(json.dumps(_fake_results(mode, value)))
    text = report.table()
    assert "| P3 GET /status p99, 50 pollers (`p3_status_p99_ms`) | <= 10 ms | 1.0 ms ✅ | 1.0 ms ✅ |" in text
    assert "2026-01-01.json" in text and "2026-01-01-quick.json" in text and "2025-12-31" not in text


def test_the_results_the_readme_shows_are_complete():
    """The newest file of each kind (older ones predate figures added since, and stay as they were written)."""
    for kind in ("quick", "full"):
        results = report.latest(kind)
        assert results is not None, kind
        assert missing_keys(results) == [], results["_file"]


def test_sampling_vs_decoding_every_frame_measures_both(tmp_path):
    video = write_video(str(tmp_path / "v.mp4"), duration=2, fps=10, size=(96, 64))
    figure = sampling_vs_decode_all(video, repeats=1)
    assert figure["sample_seconds"] > 0 and figure["decode_all_seconds"] > 0
    assert figure["ratio"] == pytest.approx(figure["sample_seconds"] / figure["decode_all_seconds"])


def test_pure_inference_runs_on_the_tiny_model(tiny_model_dir, tmp_path):
    """The P1 denominator's script, end to end on a 3 s video (catches a broken import or key)."""
    import subprocess
    import sys

    video = write_video(str(tmp_path / "clip.mp4"), duration=3.0, fps=10, size=(96, 64))
    done = subprocess.run(
        [sys.executable, "-m", "bench.pure_inference", "--model", tiny_model_dir, "--video", video,
         "--segment-duration", "2", "--frames-per-segment", "2", "--max-tokens", "4"],
        capture_output=True, text=True, timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert [s["frames"] for s in answer["segments"]] == [2, 2]
    assert answer["sum_generate_seconds"] > 0 and answer["load_seconds"] > 0
