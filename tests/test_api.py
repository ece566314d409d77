"""The async API and the legacy routes, per ../shared/api-contract.md, on the real tiny model."""
import json
import os
import re
import shutil
import time

import pytest

from tests.support.api import stored_entries, upload, wait_for_status
from tests.support.problems import assert_problem
from tools.synthetic_video import write_video
from video_analysis.model.runner import ModelLoadError
from video_analysis.web.services import EXTENSION_KEY

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def completed_session(client, video, **fields):
    response = upload(client, video, **fields)
    assert response.status_code == 202, response.get_data(as_text=True)
    session_id = response.get_json()["sessionId"]
    seen = wait_for_status(client, session_id)
    assert seen[-1]["status"] == "completed", seen[-1]
    return session_id, seen


# -- upload -------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["video", "file"])
def test_upload_answers_202_with_the_contract_body(client, videos, field):
    response = upload(client, videos["short"], field=field)
    assert response.status_code == 202
    body = response.get_json()
    assert set(body) == {"sessionId", "status", "analysisType", "message", "statusUrl", "resultsUrl", "createdAt"}
    assert re.match(r"^[0-9a-f-]{36}$", body["sessionId"]) and body["status"] == "pending"
    assert body["analysisType"] == "highlights"
    assert response.headers["Location"] == body["statusUrl"] == f"/api/v1/video/status/{body['sessionId']}"
    assert body["resultsUrl"] == f"/api/v1/video/results/{body['sessionId']}"
    assert ISO_Z.match(body["createdAt"])


def test_a_completed_highlights_job_has_the_contract_result(client, videos):
    session_id, seen = completed_session(client, videos["short"], min_significance="1", segment_duration="2")
    response = client.get(f"/api/v1/video/results/{session_id}")
    assert response.status_code == 200
    body = response.get_json()
    assert body["data"] == body["results"] and body["status"] == "completed" and body["analysisType"] == "highlights"
    data = body["data"]
    assert data["video"] == {"filename": "short clip.mp4", "duration_seconds": 6.0, "fps": 10.0, "frame_count": 60,
                             "width": 160, "height": 120}
    assert data["total_segments_analyzed"] == 3 == len(data["all_analyses"])
    assert [(a["segment"], a["start_time"], a["end_time"]) for a in data["all_analyses"]] == [
        (1, 0.0, 2.0), (2, 2.0, 4.0), (3, 4.0, 6.0)]
    assert data["settings"]["min_significance"] == 1 and data["settings"]["segment_duration"] == 2
    assert data["settings"]["model"] == "tiny-smolvlm"
    assert data["highlights_found"] == len(data["highlights"])
    # The tiny model's answers carry no score, so it finds no highlight: what a highlight holds is checked on
    # the marker model (test_marker_end_to_end.py). Every segment's analysis is here whatever the model says.
    for item in data["all_analyses"]:
        assert set(item) == {"segment", "start_time", "end_time", "significance_score", "analysis",
                             "frames_analyzed", "reused_from"}
        assert isinstance(item["analysis"], str)
        # Each segment is sent its own frames or reuses an earlier answer, and says which.
        assert (item["frames_analyzed"] >= 1) == (item["reused_from"] is None)
        assert item["reused_from"] is None or item["reused_from"] < item["segment"]


def test_the_job_analyses_the_video_as_it_was_probed_at_upload(make_app, videos, tmp_path):
    """The upload is probed once, when it arrives, and the job plans its segments from that probe instead of
    probing again. Seen from outside: a stored upload replaced by a longer video while its job waits is still
    analysed as the 6 s video the probe saw."""
    app = make_app(JOB_WORKERS=1)
    client = app.test_client()
    blocker = upload(client, videos["long"], segment_duration="1").get_json()["sessionId"]
    session_id = upload(client, videos["short"], segment_duration="3").get_json()["sessionId"]
    assert client.get(f"/api/v1/video/status/{session_id}").get_json()["status"] == "pending"
    session_dir = os.path.join(app.extensions[EXTENSION_KEY].storage.root, session_id)
    (stored,) = os.listdir(session_dir)
    longer = write_video(str(tmp_path / "longer.mp4"), duration=12, fps=10)  # the same picture, twice as long
    shutil.copyfile(longer, os.path.join(session_dir, stored))
    client.post(f"/api/v1/video/cancel/{blocker}")
    assert wait_for_status(client, session_id)[-1]["status"] == "completed"
    data = client.get(f"/api/v1/video/results/{session_id}").get_json()["data"]
    assert data["video"]["filename"] == "short clip.mp4"
    assert (data["video"]["duration_seconds"], data["video"]["frame_count"]) == (6.0, 60)
    assert [(a["start_time"], a["end_time"]) for a in data["all_analyses"]] == [(0.0, 3.0), (3.0, 6.0)]


def test_workout_type_and_params_json(client, videos):
    response = upload(client, videos["short"], analysis_type="workout", params=json.dumps({"segment_duration": 3}))
    assert response.status_code == 202 and response.get_json()["analysisType"] == "workout"
    session_id = response.get_json()["sessionId"]
    assert wait_for_status(client, session_id)[-1]["status"] == "completed"
    data = client.get(f"/api/v1/video/results/{session_id}").get_json()["data"]
    assert data["settings"]["segment_duration"] == 3
    assert [(s["start_time"], s["end_time"]) for s in data["segment_analyses"]] == [(0.0, 3.0), (3.0, 6.0)]
    assert set(data["summary"]) == {"total_exercises", "total_duration", "exercises"}


def test_a_plain_field_wins_over_params(client, videos):
    session_id, _ = completed_session(client, videos["short"], params=json.dumps({"segment_duration": 2}),
                                      segment_duration="3")
    data = client.get(f"/api/v1/video/results/{session_id}").get_json()["data"]
    assert data["settings"]["segment_duration"] == 3


def test_webm_is_accepted(client, videos):
    session_id, _ = completed_session(client, videos["webm"])
    assert client.get(f"/api/v1/video/results/{session_id}").get_json()["data"]["video"]["frame_count"] == 40


@pytest.mark.parametrize("fields,field", [
    ({"min_significance": "11"}, "min_significance"),
    ({"min_significance": "7.5"}, "min_significance"),
    ({"max_highlights": "0"}, "max_highlights"),
    ({"segment_duration": "601"}, "segment_duration"),
    ({"frames_per_segment": "abc"}, "frames_per_segment"),
    ({"params": "{not json"}, "params"),
    ({"params": "[1, 2]"}, "params"),
    ({"params": json.dumps({"colour": 1})}, "colour"),
    ({"analysis_type": "poetry"}, "analysis_type"),
    ({"favourite_colour": "blue"}, "favourite_colour"),
])
def test_bad_parameters_are_a_400_naming_the_field(app, client, videos, fields, field):
    body = assert_problem(upload(client, videos["short"], **fields), 400)
    assert body["field"] == field
    assert stored_entries(app) == []


def test_no_file_and_an_empty_file_are_400(app, client, tmp_path):
    assert_problem(client.post("/api/v1/video/upload", data={"analysis_type": "highlights"},
                               content_type="multipart/form-data"), 400)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert_problem(upload(client, str(empty)), 400)
    assert stored_entries(app) == []


def test_a_file_that_is_not_a_video_is_415_and_leaves_nothing(app, client, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    body = assert_problem(upload(client, str(text)), 415)
    assert "video" in body["error"]
    assert stored_entries(app) == []


def test_an_upload_over_the_limit_is_413_and_leaves_nothing(make_app, tmp_path):
    app = make_app(MAX_UPLOAD_MB=1)
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    assert_problem(upload(app.test_client(), str(big)), 413)
    assert stored_entries(app) == []


# -- status and progress ------------------------------------------------------------
def test_status_has_every_field_and_progress_only_grows_to_100(client, videos):
    response = upload(client, videos["long"], segment_duration="5")
    session_id = response.get_json()["sessionId"]
    seen = wait_for_status(client, session_id)
    for body in seen:
        assert set(body) == {"sessionId", "status", "analysisType", "progress", "currentStep", "message",
                             "segmentsDone", "segmentsTotal", "createdAt", "updatedAt", "startedAt", "finishedAt",
                             "error"}
        assert 0 <= body["progress"] <= 100
        assert (body["progress"] == 100) == (body["status"] == "completed")
    progress = [body["progress"] for body in seen]
    assert progress == sorted(progress) and progress[-1] == 100
    steps = {body["currentStep"] for body in seen}
    assert steps <= {"queued", "reading", "analyzing", "ranking", "done"} and "done" in steps
    final = seen[-1]
    assert final["segmentsDone"] == final["segmentsTotal"] == 18
    assert all(ISO_Z.match(final[key]) for key in ("createdAt", "updatedAt", "startedAt", "finishedAt"))


def test_unfinished_status_suggests_when_to_poll_again(client, videos):
    session_id = upload(client, videos["long"], segment_duration="1").get_json()["sessionId"]
    response = client.get(f"/api/v1/video/status/{session_id}")
    assert response.get_json()["status"] in ("pending", "processing")
    assert response.headers["Retry-After"] == "1"
    client.post(f"/api/v1/video/cancel/{session_id}")
    assert "Retry-After" not in client.get(f"/api/v1/video/status/{session_id}").headers


@pytest.mark.parametrize("bad_id", ["nope", "..", "%00", "x" * 10000, "1' OR '1'='1",
                                    "00000000-0000-4000-8000-000000000000"])
@pytest.mark.parametrize("method,route", [("get", "status"), ("get", "results"), ("post", "cancel"),
                                          ("delete", "cleanup")])
def test_unknown_or_malformed_ids_are_404(client, bad_id, method, route):
    assert_problem(getattr(client, method)(f"/api/v1/video/{route}/{bad_id}"), 404)


# -- results ---------------------------------------------------------------------------
def test_results_before_completion_are_400_with_the_session_status(client, videos):
    session_id = upload(client, videos["long"], segment_duration="1").get_json()["sessionId"]
    body = assert_problem(client.get(f"/api/v1/video/results/{session_id}"), 400)
    assert body["sessionStatus"] in ("pending", "processing")
    client.post(f"/api/v1/video/cancel/{session_id}")


# -- cancel ------------------------------------------------------------------------------
def test_cancel_of_a_running_job_stops_its_model_work(app, client, videos):
    session_id = upload(client, videos["long"], segment_duration="1").get_json()["sessionId"]
    wait_for_status(client, session_id, statuses=("processing",))
    while client.get(f"/api/v1/video/status/{session_id}").get_json()["segmentsDone"] < 2:
        time.sleep(0.01)
    response = client.post(f"/api/v1/video/cancel/{session_id}")
    cancelled_at = time.monotonic()
    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"
    # The job ends within a token or a frame; the 88 segments left would take seconds (~60 ms each).
    assert app.extensions[EXTENSION_KEY].jobs.wait(session_id, 10)
    assert time.monotonic() - cancelled_at < 2.0
    status = client.get(f"/api/v1/video/status/{session_id}").get_json()
    assert (status["status"], status["message"]) == ("cancelled", "Cancelled at your request")
    # Cancelling keeps the upload until cleanup.
    assert stored_entries(app) == [session_id]


def test_a_cancelled_pending_job_never_starts(make_app, videos):
    app = make_app(JOB_WORKERS=1)
    client = app.test_client()
    blocker = upload(client, videos["long"], segment_duration="1").get_json()["sessionId"]
    waiting = upload(client, videos["short"]).get_json()["sessionId"]
    assert client.get(f"/api/v1/video/status/{waiting}").get_json()["status"] == "pending"
    assert client.post(f"/api/v1/video/cancel/{waiting}").status_code == 200
    client.post(f"/api/v1/video/cancel/{blocker}")
    jobs = app.extensions[EXTENSION_KEY].jobs
    assert jobs.wait(blocker, 10) and jobs.wait(waiting, 10)
    body = client.get(f"/api/v1/video/status/{waiting}").get_json()
    assert body["status"] == "cancelled" and body["startedAt"] is None and body["segmentsDone"] == 0


def test_cancel_is_idempotent_and_409_after_completion(client, videos):
    session_id = upload(client, videos["long"], segment_duration="1").get_json()["sessionId"]
    assert client.post(f"/api/v1/video/cancel/{session_id}").status_code == 200
    assert client.post(f"/api/v1/video/cancel/{session_id}").status_code == 200
    assert_problem(client.get(f"/api/v1/video/results/{session_id}"), 400)
    done, _ = completed_session(client, videos["short"])
    body = assert_problem(client.post(f"/api/v1/video/cancel/{done}"), 409)
    assert body["sessionStatus"] == "completed"


# -- cleanup and expiry ------------------------------------------------------------------
def test_cleanup_removes_every_file_and_then_everything_is_404(app, client, videos):
    session_id, _ = completed_session(client, videos["short"])
    assert stored_entries(app) == [session_id]
    response = client.delete(f"/api/v1/video/cleanup/{session_id}")
    assert response.status_code == 200 and response.get_json()["sessionId"] == session_id
    assert stored_entries(app) == []
    for method, route in (("get", "status"), ("get", "results"), ("post", "cancel"), ("delete", "cleanup")):
        assert_problem(getattr(client, method)(f"/api/v1/video/{route}/{session_id}"), 404)


def test_cleanup_of_a_running_job_cancels_it(app, client, videos):
    session_id = upload(client, videos["long"], segment_duration="1").get_json()["sessionId"]
    wait_for_status(client, session_id, statuses=("processing",))
    assert client.delete(f"/api/v1/video/cleanup/{session_id}").status_code == 200
    assert app.extensions[EXTENSION_KEY].jobs.wait(session_id, 10)
    assert stored_entries(app) == []


def test_sessions_expire_with_their_files(make_app, videos):
    app = make_app(SESSION_TTL_SECONDS=1, SWEEP_INTERVAL_SECONDS=0.1)
    client = app.test_client()
    session_id, _ = completed_session(client, videos["short"])
    assert stored_entries(app) == [session_id]
    deadline = time.monotonic() + 10
    while client.get(f"/api/v1/video/status/{session_id}").status_code != 404 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_problem(client.get(f"/api/v1/video/status/{session_id}"), 404)
    assert stored_entries(app) == []


# -- queue, CORS, health ---------------------------------------------------------------------
def test_a_full_queue_answers_503_with_retry_after(make_app, videos):
    app = make_app(MAX_QUEUED_JOBS=1, JOB_WORKERS=1)
    client = app.test_client()
    first = upload(client, videos["long"], segment_duration="1")
    assert first.status_code == 202
    response = upload(client, videos["short"])
    assert_problem(response, 503)
    assert int(response.headers["Retry-After"]) > 0
    assert stored_entries(app) == [first.get_json()["sessionId"]]
    client.post(f"/api/v1/video/cancel/{first.get_json()['sessionId']}")


def test_cors_on_a_cross_origin_request_and_a_preflight(client):
    response = client.get("/health", headers={"Origin": "http://frontend.example"})
    assert response.headers["Access-Control-Allow-Origin"] in ("*", "http://frontend.example")
    preflight = client.options("/api/v1/video/upload", headers={
        "Origin": "http://frontend.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    exposed = client.get("/api/v1/video/status/x", headers={"Origin": "http://frontend.example"})
    assert {"Location", "Retry-After"} <= {h.strip() for h in exposed.headers["Access-Control-Expose-Headers"].split(",")}


def test_cors_origins_are_configurable(make_app):
    client = make_app(CORS_ORIGINS=["http://good.example"]).test_client()
    good = client.get("/health", headers={"Origin": "http://good.example"})
    assert good.headers["Access-Control-Allow-Origin"] == "http://good.example"
    evil = client.get("/health", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in evil.headers


def test_health_reports_model_and_queue(client):
    body = client.get("/health").get_json()
    assert body["status"] == "healthy"
    assert body["model"] == {"id": "tiny-smolvlm", "loaded": True, "device": "cpu"}
    assert body["queue"] == {"pending": 0, "processing": 0}
    assert body["version"]


def test_a_model_that_cannot_load_degrades_health_and_refuses_uploads(make_app, tmp_path, videos):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    app = make_app(MODEL=str(broken))
    runner = app.extensions[EXTENSION_KEY].analysis
    with pytest.raises(ModelLoadError, match="broken-model"):
        runner.wait_until_loaded(60)
    client = app.test_client()
    body = client.get("/health").get_json()
    assert body["status"] == "degraded" and body["model"]["loaded"] is False
    assert "broken-model" in body["reason"] and str(tmp_path) not in json.dumps(body)
    assert_problem(upload(client, videos["short"]), 503)
    assert stored_entries(app) == []


# -- legacy routes --------------------------------------------------------------------------
def test_legacy_highlights_answers_the_old_shape_and_keeps_no_file(app, client, videos):
    response = upload(client, videos["short"], url="/analyze/highlights", min_significance="1")
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"success", "analysis_type", "data"}
    assert body["success"] is True and body["analysis_type"] == "highlights"
    assert body["data"]["total_segments_analyzed"] == 1 and "highlights" in body["data"]
    assert stored_entries(app) == []


def test_legacy_workout_answers_the_old_shape(app, client, videos):
    response = upload(client, videos["short"], url="/analyze/workout", field="file", segment_duration="2")
    assert response.status_code == 200
    body = response.get_json()
    assert body["success"] is True and body["analysis_type"] == "workout_timestamps"
    assert len(body["data"]["segment_analyses"]) == 3
    assert stored_entries(app) == []


def test_legacy_errors_carry_success_false(app, client, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(2048))
    body = assert_problem(upload(client, str(junk), url="/analyze/highlights"), 415)
    assert body["success"] is False
    assert stored_entries(app) == []


def test_routing_errors_are_problems(client):
    assert_problem(client.get("/no/such/page"), 404)
    body = assert_problem(client.get("/api/v1/video/upload"), 405)
    assert "POST" in body["error"]
    assert_problem(client.put("/analyze/highlights"), 405)


def test_no_response_reveals_a_server_path(app, client, videos, tiny_model_dir):
    session_id, _ = completed_session(client, videos["short"])
    data_dir = app.extensions[EXTENSION_KEY].storage.root
    for response in (client.get(f"/api/v1/video/status/{session_id}"), client.get(f"/api/v1/video/results/{session_id}"),
                     client.get("/health"), client.get("/api/v1/openapi.json")):
        text = response.get_data(as_text=True)
        assert data_dir not in text and tiny_model_dir not in text and os.path.dirname(videos["short"]) not in text


def test_while_the_scenes_are_found_the_status_says_how_far(client, tmp_path):
    """segmentation=scenes reads every frame before the first segment: the status says so, in frames read."""
    from tools.shot_videos import random_shots, write_shot_video
    video = str(tmp_path / "shots.mp4")
    write_shot_video(video, random_shots(24, 30, seed=2, shortest=2.0, longest=3.0), fps=30, size=(320, 180))
    session_id, seen = completed_session(client, video, segmentation="scenes", frames_per_segment=1, max_tokens=2)
    finding = [body for body in seen if body["message"].startswith("Finding the video's scenes (")]
    assert finding, [body["message"] for body in seen]
    assert all(body["status"] == "processing" and body["currentStep"] == "reading" and body["segmentsDone"] == 0
               for body in finding)
    data = client.get(f"/api/v1/video/results/{session_id}").get_json()["data"]
    assert data["settings"]["segmentation"] == "scenes" and data["total_segments_analyzed"] >= 24
