"""The engine on the real model path: mlx_vlm.load + generate on the tiny checkpoint."""
import dataclasses
import json
import os
import subprocess
import sys
import pytest
from pydantic import ValidationError

from tools.synthetic_video import still_video, write_video
from video_analysis.cancellation import CancelToken, Cancelled
from video_analysis.engine.analyzer import VideoHighlightGenerator
from video_analysis.engine.answers import normalize_exercise
from video_analysis.engine.prompts import WORKOUT_SYSTEM, WORKOUT_USER
from video_analysis.engine.workout import merge_exercise_steps
from video_analysis.model.runner import ModelLoadError, ModelRunner
from video_analysis.video import probe_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    engine = VideoHighlightGenerator(tiny_model_dir)
    yield engine
    engine.close()


def test_a_full_highlights_run(generator, tmp_path):
    video = write_video(str(tmp_path / "match.mp4"), duration=25, fps=10)
    calls = []
    result = generator.generate_highlights(video, min_significance=1, max_highlights=2, segment_duration=10,
                                           frames_per_segment=4, max_tokens=24,
                                           progress=lambda *args: calls.append(args))
    assert result["total_segments_analyzed"] == 3
    assert [(a["start_time"], a["end_time"]) for a in result["all_analyses"]] == [(0, 10), (10, 20), (20, 25)]
    assert all(isinstance(a["analysis"], str) for a in result["all_analyses"])
    scores = [a["significance_score"] for a in result["all_analyses"]]
    assert all(s is None or 1 <= s <= 10 for s in scores)
    assert len(result["highlights"]) == min(2, sum(s is not None for s in scores))
    assert result["settings"]["frames_per_segment"] == 4 and result["settings"]["model"] == "tiny-smolvlm"
    # Called after every segment, in order, with the total known from the start.
    assert [c[:2] for c in calls if c[0] > 0] == [(1, 3), (2, 3), (3, 3)]


def test_a_full_workout_run(generator, tmp_path):
    """What every workout result holds, whatever the random tiny model answers (the marker model's tests
    check the steps it finds)."""
    video = write_video(str(tmp_path / "gym.mp4"), duration=31, fps=5)
    result = generator.analyze_workout(video, segment_duration=15, frames_per_segment=2, max_tokens=16)
    assert list(result) == ["video", "processing_time_seconds", "total_segments_analyzed", "settings",
                            "segment_analyses", "exercise_steps", "summary"]
    analyses = result["segment_analyses"]
    assert [(s["start_time"], s["end_time"]) for s in analyses] == [(0, 15), (15, 30), (30, 31)]
    assert [a["exercise"] for a in analyses] == [normalize_exercise(a["analysis"]) for a in analyses]
    assert result["exercise_steps"] == merge_exercise_steps(analyses)
    steps = result["exercise_steps"]
    assert result["summary"] == {"total_exercises": len(steps), "exercises": [s["exercise_name"] for s in steps],
                                 "total_duration": round(sum(s["duration"] for s in steps), 3)}
    # Echoed as given (15 stays a whole number in the JSON), with the prompts the model was sent.
    assert json.dumps(result["settings"]) == json.dumps({
        "segment_duration": 15, "frames_per_segment": 2, "segmentation": "fixed", "frame_selection": "changes",
        "max_tokens": 16, "system_prompt": WORKOUT_SYSTEM,
        "user_prompt": WORKOUT_USER, "model": "tiny-smolvlm"})


@pytest.mark.parametrize("bad", [{"frames_per_segment": 0}, {"segment_duration": 0.5}, {"max_tokens": 1025},
                                 {"min_significance": 6}, {"frames_per_segment": 2.0}])
def test_parameters_out_of_bounds_or_of_another_kind_are_refused_before_any_work(generator, tmp_path, bad):
    video = write_video(str(tmp_path / "v.mp4"), duration=3, fps=5)
    before = generator.runner.prefill_chunks
    with pytest.raises(ValidationError) as raised:
        generator.analyze_workout(video, **bad)
    assert raised.value.errors()[0]["loc"] == (next(iter(bad)),)
    assert generator.runner.prefill_chunks == before


def test_a_probe_handed_over_is_used_instead_of_probing_again(generator, tmp_path):
    video = write_video(str(tmp_path / "probed.mp4"), duration=25, fps=10)
    probed = probe_video(video, "upload name.mp4")
    # What the caller's probe says is what the engine plans by: here it is told of 12 s only.
    shortened = dataclasses.replace(probed, duration_seconds=12.0, frame_count=120)
    result = generator.generate_highlights(video, segment_duration=10, frames_per_segment=2, max_tokens=4,
                                           video_info=shortened, video_name="ignored.mp4")
    assert [(a["start_time"], a["end_time"]) for a in result["all_analyses"]] == [(0, 10), (10, 12)]
    assert result["video"]["filename"] == "upload name.mp4" and result["video"]["duration_seconds"] == 12.0


def test_consecutive_segments_naming_the_same_exercise_merge():
    def seg(i, exercise):
        return {"segment": i + 1, "start_time": i * 10.0, "end_time": i * 10.0 + 10, "exercise": exercise,
                "analysis": f"Exercise: {exercise}\nMoving well."}

    steps = merge_exercise_steps([seg(0, "squat"), seg(1, "squat"), seg(2, "rest"), seg(3, "squat"),
                                  seg(4, "push-up"), seg(5, "push-up"), seg(6, "unknown")])
    assert [(s["exercise_name"], s["start_timestamp"], s["end_timestamp"], s["duration"]) for s in steps] == [
        ("squat", 0.0, 20.0, 20.0), ("squat", 30.0, 40.0, 10.0), ("push-up", 40.0, 60.0, 20.0)]
    assert steps[0]["timestamp_formatted"] == "00:00-00:20" and steps[0]["description"] == "Moving well."


def test_cancel_mid_run_stops_and_raises(generator, tmp_path):
    video = write_video(str(tmp_path / "long.mp4"), duration=60, fps=2, size=(64, 48))
    cancel = CancelToken()
    done_segments, chunks_at_cancel = [], []

    def progress(done, total, message):
        done_segments.append(done)
        if done == 2:
            chunks_at_cancel.append(generator.runner.prefill_chunks)
            cancel.cancel()

    with pytest.raises(Cancelled):
        generator.generate_highlights(video, segment_duration=1, progress=progress, cancel=cancel)
    assert max(done_segments) == 2
    # Segment 3's generation never ran: the model did no work after the cancel.
    assert generator.runner.prefill_chunks == chunks_at_cancel[0]


def test_a_cancel_set_before_the_call_does_no_work(generator, tmp_path):
    video = write_video(str(tmp_path / "v.mp4"), duration=3, fps=5)
    cancel = CancelToken()
    cancel.cancel()
    before = generator.runner.prefill_chunks
    progress = []
    with pytest.raises(Cancelled):
        generator.analyze_workout(video, cancel=cancel, progress=lambda *args: progress.append(args))
    assert generator.runner.prefill_chunks == before and progress == []


def test_python_callers_may_still_cancel_with_a_threading_event(generator, tmp_path):
    """Before tokens, the engine took a threading.Event; root video_highlight_generator.py's callers still may."""
    import threading

    from video_highlight_generator import Cancelled as PublicCancelled

    video = write_video(str(tmp_path / "long.mp4"), duration=20, fps=2, size=(64, 48))
    event, done_segments = threading.Event(), []

    def progress(done, total, message):
        done_segments.append(done)
        if done == 1:
            event.set()

    with pytest.raises(PublicCancelled):
        generator.generate_highlights(video, segment_duration=1, progress=progress, cancel=event)
    assert max(done_segments) == 1


def test_a_broken_model_directory_is_a_clear_error(tmp_path):
    broken = tmp_path / "my-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "smolvlm"}))
    runner = ModelRunner(str(broken))
    try:
        with pytest.raises(ModelLoadError) as raised:
            runner.wait_until_loaded(60)
        message = str(raised.value)
        assert message.startswith("Model 'my-model' could not be loaded:") and str(tmp_path) not in message
        with pytest.raises(ModelLoadError):
            runner.generate([], "hello")
    finally:
        runner.close()


def test_a_missing_model_directory_is_a_clear_error(tmp_path):
    runner = ModelRunner(str(tmp_path / "nowhere"))
    try:
        with pytest.raises(ModelLoadError, match="'nowhere' could not be loaded"):
            runner.wait_until_loaded(60)
    finally:
        runner.close()


def test_a_process_that_generated_from_worker_threads_exits_0(tiny_model_dir, tmp_path):
    script = (
        "import sys, threading\n"
        "from PIL import Image\n"
        "from video_analysis.model.runner import ModelRunner\n"
        "runner = ModelRunner(sys.argv[1])\n"
        "out = []\n"
        "def work():\n"
        "    out.append(runner.generate([Image.new('RGB', (64, 64))] * 2, 'Describe.', max_tokens=8))\n"
        "threads = [threading.Thread(target=work) for _ in range(3)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print(len(out))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script, tiny_model_dir], cwd=REPO, capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "3"


def test_the_command_line_prints_a_summary_and_writes_json(tiny_model_dir, tmp_path):
    video = write_video(str(tmp_path / "cli.mp4"), duration=12, fps=5)
    out = tmp_path / "result.json"
    completed = subprocess.run(
        [sys.executable, "video_highlight_generator.py", video, "--model", tiny_model_dir, "--segment-duration", "6",
         "--frames-per-segment", "2", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.startswith("cli.mp4: 12.0 s, 2 segments")
    assert "segment" in completed.stderr  # the tqdm bar
    assert json.loads(out.read_text())["total_segments_analyzed"] == 2


def test_the_command_line_runs_as_a_module_too_with_scenes_and_what_it_sent(tiny_model_dir, tmp_path):
    """`python -m video_analysis.cli` is the same command (it once did nothing and exited 0)."""
    from tools.shot_videos import random_shots, write_shot_video
    video = str(tmp_path / "shots.mp4")
    write_shot_video(video, random_shots(4, 15, seed=1), fps=15)
    completed = subprocess.run(
        [sys.executable, "-m", "video_analysis.cli", video, "--model", tiny_model_dir, "--segmentation", "scenes",
         "--frames-per-segment", "2", "--max-tokens", "4"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.startswith("shots.mp4: ") and " 4 segments " in completed.stdout
    assert "frames sent to the model" in completed.stdout


def test_the_command_line_explains_a_bad_video(tiny_model_dir, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    completed = subprocess.run([sys.executable, "video_highlight_generator.py", str(junk), "--model", tiny_model_dir],
                               cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert completed.stderr.strip().endswith("upload an MP4, MOV, WebM or AVI video.")


@pytest.mark.parametrize("option, sentence", [
    (["--max-tokens", "0"], "error: --max-tokens: Input should be greater than or equal to 1"),
    (["--workout", "--segment-duration", "601"],
     "error: --segment-duration: Input should be less than or equal to 600"),
])
def test_the_command_line_refuses_an_option_out_of_bounds(tmp_path, option, sentence):
    completed = subprocess.run([sys.executable, "video_highlight_generator.py", str(tmp_path / "unread.mp4"), *option],
                               cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert completed.stderr.strip() == sentence


def test_unchanged_segments_are_answered_once_and_the_rest_reuse_it(generator, tmp_path):
    video = still_video(str(tmp_path / "still.mp4"), 12, 10, marked_at=[(6.0, 8.0)])
    kept = []
    result = generator.generate_highlights(video, segment_duration=2, frames_per_segment=4, max_tokens=8,
                                           answered=lambda position, stored: kept.append(stored))
    rows = result["all_analyses"]
    assert [(r["frames_analyzed"], r["reused_from"]) for r in rows] == [
        (1, None), (0, 1), (0, 1), (1, None), (1, None), (0, 5)]  # the square from 6 s to 8 s: segment 4
    assert rows[1]["analysis"] == rows[0]["analysis"] and rows[5]["analysis"] == rows[4]["analysis"]
    assert result["settings"]["frame_selection"] == "changes"
    # Every frame with "even", every segment asked; and the same answers where the pictures were the same.
    even = generator.generate_highlights(video, segment_duration=2, frames_per_segment=4, max_tokens=8,
                                         frame_selection="even")
    assert [(r["frames_analyzed"], r["reused_from"]) for r in even["all_analyses"]] == [(4, None)] * 6

    # Resumed after segment 3 (a reused one) the run goes on as if never stopped: segment 4 is asked, 6 reuses 5.
    resumed = generator.generate_highlights(video, segment_duration=2, frames_per_segment=4, max_tokens=8,
                                            resume=kept[:3])
    assert resumed["all_analyses"] == rows
    # ... and resumed after segment 5, segment 6 still reuses it (what the model last saw is read again).
    resumed = generator.generate_highlights(video, segment_duration=2, frames_per_segment=4, max_tokens=8,
                                            resume=kept[:5])
    assert resumed["all_analyses"] == rows


def test_answers_kept_by_the_version_before_records_resume_as_plain_text(generator, tmp_path):
    video = still_video(str(tmp_path / "still.mp4"), 6, 10)
    first = generator.generate_highlights(video, segment_duration=2, frames_per_segment=2, max_tokens=8)
    old = [row["analysis"] for row in first["all_analyses"][:2]]  # the plain text an earlier version kept
    resumed = generator.generate_highlights(video, segment_duration=2, frames_per_segment=2, max_tokens=8,
                                            resume=old)
    assert [r["analysis"] for r in resumed["all_analyses"]] == [r["analysis"] for r in first["all_analyses"]]
    assert [(r["frames_analyzed"], r["reused_from"]) for r in resumed["all_analyses"]] == [
        (None, None), (None, None), (1, None)]


def test_scene_segmentation_puts_the_boundaries_at_the_cuts_and_splits_long_scenes(generator, tmp_path):
    from tools.shot_videos import random_shots, write_shot_video
    fps = 15
    shots = random_shots(6, fps, seed=3, shortest=1.5, longest=3.0)
    shots[2] = dataclasses.replace(shots[2], frames=7 * fps)  # 7 s: two segments of 3.5 s at segment_duration 5
    path = str(tmp_path / "shots.mp4")
    cuts = write_shot_video(path, shots, fps=fps)
    calls = []
    result = generator.generate_highlights(path, segmentation="scenes", segment_duration=5, frames_per_segment=2,
                                           max_tokens=4, progress=lambda *call: calls.append(call))
    # While the cuts are found, progress says how far in frames (0 of 0 segments: none planned yet), then segments.
    finding = [message for done, total, message in calls if total == 0]
    assert finding[0] == "Finding the video's scenes (0 % of its frames read)"
    assert finding[-1] == "Finding the video's scenes (100 % of its frames read)"
    assert calls.index((0, 0, finding[-1])) < min(i for i, call in enumerate(calls) if call[1] > 0)
    rows = result["all_analyses"]
    starts = [round(row["start_time"] * fps) for row in rows]
    middle_of_the_long_scene = (cuts[1] + cuts[2]) / 2
    expected = sorted([0, *cuts, middle_of_the_long_scene])
    assert len(starts) == len(expected) and all(abs(a - b) <= 1 for a, b in zip(starts, expected)), (starts, expected)
    assert [row["end_time"] for row in rows[:-1]] == [row["start_time"] for row in rows[1:]]
    assert rows[-1]["end_time"] == result["video"]["duration_seconds"]
    assert result["settings"]["segmentation"] == "scenes"
    # The same video in fixed segments of 5 s: boundaries every 5 s, whatever the cuts.
    fixed = generator.generate_highlights(path, segment_duration=5, frames_per_segment=2, max_tokens=4)
    assert [row["start_time"] for row in fixed["all_analyses"]][:3] == [0, 5, 10]


@pytest.mark.parametrize("text", [
    '{"answer": "Significance: 9/10", "segment": [100, 200]}',  # a model asked to answer in JSON
    '{"record": 1, "answer": "x", "segment": 5, "frames_analyzed": 1, "reused_from": null}',
    '{"record": 1, "answer": 7, "segment": [0, 2], "frames_analyzed": 1, "reused_from": null}',
    '{"record": 1, "answer": "x", "segment": [4, 6], "frames_analyzed": 1, "reused_from": null}',  # another segment
    '{"record": 1, "answer": "x", "segment": [0, 2], "frames_analyzed": true, "reused_from": null}',
    "[1, 2]", "null", "Significance: 7/10",
])
def test_a_kept_answer_that_is_not_a_whole_record_of_its_segment_is_plain_text(text):
    """Answers an earlier version kept are the model's text, whatever it looks like: never trusted as times."""
    from video_analysis.engine.analysis import SegmentAnswer
    from video_analysis.video import Segment
    planned = Segment(1, 0.0, 2.0)
    assert SegmentAnswer.restored(text, 1, planned) == SegmentAnswer(planned, text)
    if '"segment": [4, 6]' in text:
        return  # a whole record, of segment 4-6 s: what a scene plan (nothing planned to check it with) takes
    with pytest.raises(ValueError, match="not a record of this version"):
        SegmentAnswer.restored(text, 1, None)  # a scene plan has no fixed segment to hold it


def test_a_record_round_trips():
    from video_analysis.engine.analysis import SegmentAnswer
    from video_analysis.video import Segment
    answer = SegmentAnswer(Segment(3, 4.0, 6.5), '{"answer": "looks like JSON"}', 0, 2)
    assert SegmentAnswer.restored(answer.stored(), 3, None) == answer
    assert SegmentAnswer.restored(answer.stored(), 3, Segment(3, 4.0, 6.5)) == answer
