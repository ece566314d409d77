"""What was found and when, through the HTTP API and the command line, on the marker model.

The marker model answers 9/10 for a white square and 2/10 without, `squat`
for a red square, `push-up` for a blue one and `rest` for none, so the
right answer for a planted video is known exactly.
"""
import json
import os
import subprocess
import sys

import pytest

from tests.support.api import upload, wait_for_status
from tools.service_process import REPO
from tools.synthetic_video import Marker, write_video

EXPECTED_HIGHLIGHTS = [(10.0, 20.0, "00:10-00:20", 9), (30.0, 40.0, "00:30-00:40", 9)]
EXPECTED_STEPS = [("squat", 0.0, 30.0, "00:00-00:30"), ("push-up", 30.0, 60.0, "00:30-01:00")]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    return {
        "highlights": write_video(str(root / "match.mp4"), duration=40, fps=5, markers=[Marker(12, 18), Marker(31, 36)]),
        "workout": write_video(str(root / "gym.mp4"), duration=75, fps=4,
                               markers=[Marker(0, 30, "red"), Marker(30, 60, "blue")]),
    }


@pytest.fixture
def marker_client(make_app, marker_model_dir):
    return make_app(MODEL=marker_model_dir).test_client()


def _highlights(data):
    return [(h["start_time"], h["end_time"], h["timestamp_formatted"], h["significance_score"]) for h in data["highlights"]]


def _steps(data):
    return [(s["exercise_name"], s["start_timestamp"], s["end_timestamp"], s["timestamp_formatted"])
            for s in data["exercise_steps"]]


def test_the_async_api_finds_the_planted_highlights(marker_client, planted):
    session_id = upload(marker_client, planted["highlights"], min_significance="6").get_json()["sessionId"]
    assert wait_for_status(marker_client, session_id)[-1]["status"] == "completed"
    data = marker_client.get(f"/api/v1/video/results/{session_id}").get_json()["data"]
    assert [a["significance_score"] for a in data["all_analyses"]] == [2, 9, 2, 9]
    assert _highlights(data) == EXPECTED_HIGHLIGHTS
    # A highlight holds the contract's fields. Its description is the segment's answer without the score
    # line, or the whole answer when that line is all there is (the marker model says only "Significance: 9/10").
    for item, analysis in zip(data["highlights"], (data["all_analyses"][1], data["all_analyses"][3])):
        assert set(item) == {"start_time", "end_time", "timestamp_formatted", "significance_score", "description",
                             "thumbnailUrl"}
        assert item["description"] == analysis["analysis"] == "Significance: 9/10"


def test_the_async_api_names_the_exercises_at_segment_boundaries(marker_client, planted):
    response = upload(marker_client, planted["workout"], analysis_type="workout")
    session_id = response.get_json()["sessionId"]
    assert wait_for_status(marker_client, session_id)[-1]["status"] == "completed"
    data = marker_client.get(f"/api/v1/video/results/{session_id}").get_json()["data"]
    assert [a["exercise"] for a in data["segment_analyses"]] == ["squat", "squat", "push-up", "push-up", "rest"]
    assert _steps(data) == EXPECTED_STEPS
    assert data["summary"] == {"total_exercises": 2, "total_duration": 60.0, "exercises": ["squat", "push-up"]}


def test_the_legacy_routes_find_the_same(marker_client, planted):
    highlights = upload(marker_client, planted["highlights"], url="/analyze/highlights").get_json()
    assert _highlights(highlights["data"]) == EXPECTED_HIGHLIGHTS
    workout = upload(marker_client, planted["workout"], url="/analyze/workout").get_json()
    assert _steps(workout["data"]) == EXPECTED_STEPS


def test_the_command_line_finds_the_planted_highlights(marker_model_dir, planted, tmp_path):
    out = tmp_path / "highlights.json"
    completed = subprocess.run([sys.executable, "video_highlight_generator.py", planted["highlights"],
                                "--model", marker_model_dir, "--json", str(out)],
                               cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "00:10-00:20  9/10" in completed.stdout and "00:30-00:40  9/10" in completed.stdout
    assert _highlights(json.loads(out.read_text())) == EXPECTED_HIGHLIGHTS


def test_the_command_line_names_the_exercises(marker_model_dir, planted, tmp_path):
    out = tmp_path / "workout.json"
    completed = subprocess.run([sys.executable, "video_highlight_generator.py", planted["workout"], "--workout",
                                "--model", marker_model_dir, "--json", str(out)],
                               cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "00:00-00:30  squat" in completed.stdout and "00:30-01:00  push-up" in completed.stdout
    assert _steps(json.loads(out.read_text())) == EXPECTED_STEPS


def test_the_command_line_writes_the_thumbnails_and_the_reel(marker_model_dir, planted, tmp_path):
    import av
    from PIL import Image

    reel, thumbnails = tmp_path / "best.mp4", tmp_path / "thumbs"
    completed = subprocess.run([sys.executable, "video_highlight_generator.py", planted["highlights"],
                                "--model", marker_model_dir, "--reel", str(reel), "--thumbnails", str(thumbnails),
                                "--json", str(tmp_path / "out.json")],
                               cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"2 thumbnails in {thumbnails}" in completed.stdout and f"reel: {reel} (20.0 s," in completed.stdout
    assert "rendering" in completed.stderr and "Rendering the reel" in completed.stderr  # the progress bar
    assert sorted(os.listdir(thumbnails)) == ["0.jpg", "1.jpg"]
    assert Image.open(thumbnails / "0.jpg").size == (160, 120)  # smaller than 320 wide: as it is
    result = json.loads((tmp_path / "out.json").read_text())
    assert [h["thumbnail"] for h in result["highlights"]] == ["0.jpg", "1.jpg"]
    with av.open(str(reel)) as container:  # two 10 s highlights at 5 fps
        assert sum(1 for _ in container.decode(video=0)) == 100
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".part")]  # no half-written reel
