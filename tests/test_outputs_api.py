"""Thumbnails and reels through the asynchronous API, on the marker model and generated videos.

The marker model scores a white square 9/10 and nothing else 2/10, names a red square `squat` and a blue one
`push-up`, so which segments become highlights or steps, and so what their thumbnails show, is known.
"""
import io
import os
import time

import numpy as np
import pytest
from PIL import Image

from tests.support.api import upload, wait_for_status
from tools.synthetic_video import Marker, write_video
from video_analysis.web.services import EXTENSION_KEY

# 640x360: its thumbnails are scaled down to 320x180.
WIDTH, HEIGHT = 640, 360


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    return {
        "highlights": write_video(str(root / "match.mp4"), duration=30, fps=5, size=(WIDTH, HEIGHT),
                                  markers=[Marker(11, 19), Marker(21, 29)]),
        "workout": write_video(str(root / "gym.mp4"), duration=45, fps=4, size=(WIDTH, HEIGHT),
                               markers=[Marker(0, 15, "red"), Marker(15, 45, "blue")]),
    }


@pytest.fixture
def marker_app(make_app, marker_model_dir):
    return make_app(MODEL=marker_model_dir)


def _finished(client, session_id):
    assert wait_for_status(client, session_id, timeout=120)[-1]["status"] == "completed"
    return client.get(f"/api/v1/video/results/{session_id}").get_json()["data"]


def _picture(response) -> np.ndarray:
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    image = Image.open(io.BytesIO(response.data))
    assert image.format == "JPEG"
    return np.asarray(image.convert("RGB"))


def _bright_share(picture: np.ndarray, colour=(255, 255, 255)) -> float:
    """The share of pixels within 50 levels of `colour` in every channel (the marker's square)."""
    return float((np.abs(picture.astype(int) - colour) < 50).all(axis=2).mean())


def test_every_highlight_has_a_thumbnail_that_shows_its_marker(marker_app, planted):
    client = marker_app.test_client()
    session_id = upload(client, planted["highlights"]).get_json()["sessionId"]
    data = _finished(client, session_id)
    assert [(h["start_time"], h["end_time"]) for h in data["highlights"]] == [(10.0, 20.0), (20.0, 30.0)]
    for n, highlight in enumerate(data["highlights"]):
        assert highlight["thumbnailUrl"] == f"/api/v1/video/thumbnail/{session_id}/{n}.jpg"
        response = client.get(highlight["thumbnailUrl"])
        picture = _picture(response)
        assert picture.shape == (HEIGHT // 2, WIDTH // 2, 3)  # at most 320 wide, the aspect kept
        # The square is a side of 0.35 of the height: ~6.9 % of a 16:9 picture; the background never comes near white.
        assert _bright_share(picture) > 0.04
        assert "private" in response.headers["Cache-Control"] and "max-age=86400" in response.headers["Cache-Control"]
        again = client.get(highlight["thumbnailUrl"], headers={"If-None-Match": response.headers["ETag"]})
        assert again.status_code == 304 and again.data == b""
    # No reel was asked for.
    assert (data["reelUrl"], data["reelDuration"], data["reelSize"]) == (None, None, None)
    assert "thumbnail" not in data["highlights"][0] and "reel" not in data  # the engine's own notes stay inside


def test_a_segment_without_a_marker_is_not_what_a_thumbnail_shows(marker_app, planted, tmp_path):
    # min_significance 1: the unmarked segments are highlights too, and their thumbnails show no square.
    client = marker_app.test_client()
    session_id = upload(client, planted["highlights"], min_significance="1").get_json()["sessionId"]
    data = _finished(client, session_id)
    shares = {(h["start_time"], h["significance_score"]): _bright_share(_picture(client.get(h["thumbnailUrl"])))
              for h in data["highlights"]}
    assert {key for key, share in shares.items() if share > 0.04} == {(10.0, 9), (20.0, 9)}
    assert shares[(0.0, 2)] < 0.005


def test_every_exercise_step_has_a_thumbnail_of_its_colour(marker_app, planted):
    client = marker_app.test_client()
    session_id = upload(client, planted["workout"], analysis_type="workout").get_json()["sessionId"]
    data = _finished(client, session_id)
    assert [s["exercise_name"] for s in data["exercise_steps"]] == ["squat", "push-up"]
    red, blue = (_picture(client.get(step["thumbnailUrl"])) for step in data["exercise_steps"])
    assert _bright_share(red, (255, 0, 0)) > 0.04 and _bright_share(red, (0, 0, 255)) < 0.005
    assert _bright_share(blue, (0, 0, 255)) > 0.04 and _bright_share(blue, (255, 0, 0)) < 0.005
    assert data["settings"]["reel"] is False and data["settings"]["reel_seconds_per_step"] == 5


@pytest.mark.parametrize("path, status", [
    ("/api/v1/video/thumbnail/{sid}/2.jpg", 404),  # two highlights: 0 and 1
    ("/api/v1/video/thumbnail/{sid}/99999999999999999999.jpg", 404),
    ("/api/v1/video/thumbnail/{sid}/-1.jpg", 404),
    ("/api/v1/video/thumbnail/{sid}/0.png", 404),
    ("/api/v1/video/thumbnail/not-a-session/0.jpg", 404),
    ("/api/v1/video/thumbnail/0123456789abcdef0123456789abcdef/0.jpg", 404),
    ("/api/v1/video/reel/{sid}.mp4", 404),  # none was asked for
])
def test_a_wrong_thumbnail_or_reel_address_is_a_404_problem(marker_app, planted, path, status):
    client = marker_app.test_client()
    session_id = upload(client, planted["highlights"]).get_json()["sessionId"]
    _finished(client, session_id)
    response = client.get(path.format(sid=session_id))
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["detail"].endswith(".")


def test_no_thumbnail_before_the_analysis_has_completed(make_app, videos):
    app = make_app(JOB_WORKERS=1)
    client = app.test_client()
    first = upload(client, videos["long"]).get_json()["sessionId"]
    waiting = upload(client, videos["long"]).get_json()["sessionId"]  # pending behind the first
    response = client.get(f"/api/v1/video/thumbnail/{waiting}/0.jpg")
    assert response.status_code == 404 and response.get_json()["sessionStatus"] == "pending"
    partial = client.get(f"/api/v1/video/results/{waiting}?partial=true").get_json()["data"]
    assert partial["reelUrl"] is None
    for session_id in (first, waiting):
        client.post(f"/api/v1/video/cancel/{session_id}")


def test_cleanup_deletes_the_thumbnails_and_gives_their_bytes_back(marker_app, planted):
    client = marker_app.test_client()
    storage = marker_app.extensions[EXTENSION_KEY].storage
    before = storage.used
    session_id = upload(client, planted["highlights"]).get_json()["sessionId"]
    data = _finished(client, session_id)
    directory = storage.session_dir(session_id)
    on_disk = sum(entry.stat().st_size for root in (directory, os.path.join(directory, "thumbnails"))
                  for entry in os.scandir(root) if entry.is_file())
    assert len(os.listdir(os.path.join(directory, "thumbnails"))) == len(data["highlights"]) == 2
    assert storage.used - before == on_disk  # the upload and the thumbnails, counted against MAX_STORAGE_MB
    assert client.delete(f"/api/v1/video/cleanup/{session_id}").status_code == 200
    assert not os.path.exists(directory) and storage.used == before
    assert client.get(data["highlights"][0]["thumbnailUrl"]).status_code == 404


def test_the_legacy_routes_make_no_thumbnails_and_take_no_reel(marker_app, planted):
    client = marker_app.test_client()
    body = upload(client, planted["highlights"], url="/analyze/highlights").get_json()
    assert body["success"] is True
    assert all("thumbnailUrl" not in h and "thumbnail" not in h for h in body["data"]["highlights"])
    assert not {"reelUrl", "reel", "reel_refused"} & set(body["data"]) and "reel" not in body["data"]["settings"]
    refused = upload(client, planted["highlights"], url="/analyze/highlights", reel="true")
    assert refused.status_code == 400 and refused.get_json()["field"] == "reel"


@pytest.mark.parametrize("fields, field, sentence", [
    ({"reel": "yes"}, "reel", "'reel' must be true or false; got 'yes'."),
    ({"params": '{"reel": 1}'}, "reel", "'reel' must be true or false; got 1."),
    ({"params": '{"reel": "yes"}'}, "reel", "'reel' must be true or false; got 'yes'."),
    ({"analysis_type": "workout", "reel_seconds_per_step": "0"}, "reel_seconds_per_step",
     "'reel_seconds_per_step' must be between 1 and 60; got 0."),
    ({"analysis_type": "workout", "reel_seconds_per_step": "61"}, "reel_seconds_per_step",
     "'reel_seconds_per_step' must be between 1 and 60; got 61."),
])
def test_bad_reel_parameters_are_a_400_naming_the_field(client, videos, fields, field, sentence):
    response = upload(client, videos["short"], **fields)
    assert response.status_code == 400
    assert (response.get_json()["field"], response.get_json()["detail"]) == (field, sentence)


# -- the reel ----------------------------------------------------------------------------------------------------------
def _reel_frames(path: str) -> int:
    import av

    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


def test_a_reel_of_the_highlights_is_served_whole_and_in_byte_ranges(marker_app, planted, tmp_path):
    client = marker_app.test_client()
    session_id = upload(client, planted["highlights"], reel="true").get_json()["sessionId"]
    data = _finished(client, session_id)
    assert data["settings"]["reel"] is True
    # Two highlights of 10 s at 5 fps: 100 frames, 20 s.
    assert data["reelUrl"] == f"/api/v1/video/reel/{session_id}.mp4"
    assert abs(data["reelDuration"] - 20.0) <= 2 / 5
    whole = client.get(data["reelUrl"])
    assert whole.status_code == 200 and whole.mimetype == "video/mp4"
    assert whole.headers["Accept-Ranges"] == "bytes" and int(whole.headers["Content-Length"]) == data["reelSize"]
    assert len(whole.data) == data["reelSize"]
    saved = tmp_path / "reel.mp4"
    saved.write_bytes(whole.data)
    assert _reel_frames(str(saved)) == 100
    size = data["reelSize"]
    for asked, part, content_range in (("bytes=0-99", whole.data[:100], f"bytes 0-99/{size}"),
                                       ("bytes=100-", whole.data[100:], f"bytes 100-{size - 1}/{size}"),
                                       ("bytes=-100", whole.data[-100:], f"bytes {size - 100}-{size - 1}/{size}")):
        response = client.get(data["reelUrl"], headers={"Range": asked})
        assert response.status_code == 206, asked
        assert response.data == part and response.headers["Content-Range"] == content_range, asked
    refused = client.get(data["reelUrl"], headers={"Range": f"bytes={size + 10}-"})
    assert refused.status_code == 416 and refused.mimetype == "application/problem+json"
    assert refused.headers["Content-Range"] == f"bytes */{size}"
    assert str(size) in refused.get_json()["detail"]


def test_a_workout_reel_shows_each_step_for_at_most_reel_seconds_per_step(marker_app, planted):
    client = marker_app.test_client()
    session_id = upload(client, planted["workout"], analysis_type="workout", reel="true",
                        reel_seconds_per_step="4").get_json()["sessionId"]
    data = _finished(client, session_id)
    assert [(s["start_timestamp"], s["end_timestamp"]) for s in data["exercise_steps"]] == [(0.0, 15.0), (15.0, 45.0)]
    assert abs(data["reelDuration"] - 8.0) <= 2 / 4  # 4 s of each step, at 4 fps
    assert data["settings"]["reel_seconds_per_step"] == 4


def test_a_reel_longer_than_max_reel_seconds_is_refused_and_the_job_still_completes(make_app, marker_model_dir,
                                                                                     planted):
    app = make_app(MODEL=marker_model_dir, MAX_REEL_SECONDS=15)
    client = app.test_client()
    session_id = upload(client, planted["highlights"], reel="true").get_json()["sessionId"]
    final = wait_for_status(client, session_id, timeout=120)[-1]
    assert final["status"] == "completed" and final["progress"] == 100
    assert "No reel was made: it would last 00:20" in final["message"] and "MAX_REEL_SECONDS" in final["message"]
    data = client.get(f"/api/v1/video/results/{session_id}").get_json()["data"]
    assert (data["reelUrl"], data["reelDuration"], data["reelSize"]) == (None, None, None)
    assert all(h["thumbnailUrl"] for h in data["highlights"])  # the thumbnails are made all the same
    directory = app.extensions[EXTENSION_KEY].storage.session_dir(session_id)
    assert "reel.mp4" not in os.listdir(directory)


def test_cancel_while_the_reel_renders_stops_it_and_leaves_no_reel_file(make_app, marker_model_dir, tmp_path):
    # Every segment a highlight (min_significance 1): a 90 s reel at 25 fps, long enough to be caught rendering.
    video = write_video(str(tmp_path / "long.mp4"), duration=90, fps=25, size=(WIDTH, HEIGHT),
                        markers=[Marker(11, 19)])
    app = make_app(MODEL=marker_model_dir)
    services = app.extensions[EXTENSION_KEY]
    client = app.test_client()
    session_id = upload(client, video, reel="true", min_significance="1", max_highlights="100",
                        frames_per_segment="1").get_json()["sessionId"]
    seen, deadline = [], time.monotonic() + 120
    while not seen or not seen[-1]["message"].startswith("Rendering the reel"):
        assert not seen or seen[-1]["status"] in ("pending", "processing"), seen[-1]  # not ended before rendering
        assert time.monotonic() < deadline, seen[-1]
        time.sleep(0.02)
        seen.append(client.get(f"/api/v1/video/status/{session_id}").get_json())
    progress = [body["progress"] for body in seen]
    assert progress == sorted(progress) and seen[-1]["currentStep"] == "rendering" and progress[-1] < 100
    assert client.post(f"/api/v1/video/cancel/{session_id}").status_code == 200
    # The job stops within a frame; then neither the reel nor a part of it is on disk.
    deadline = time.monotonic() + 10
    while services.jobs.counts()["processing"]:
        assert time.monotonic() < deadline, "the rendering did not stop"
        time.sleep(0.05)
    directory = services.storage.session_dir(session_id)
    assert not [name for name in os.listdir(directory) if name.startswith("reel")], os.listdir(directory)
    assert client.get(f"/api/v1/video/status/{session_id}").get_json()["status"] == "cancelled"
