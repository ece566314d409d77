"""Faults: a model that cannot load, videos that break part-way, a model call that raises,
storage that refuses writes or is full, and SIGTERM under gunicorn. Real parts only: no mocks.
"""
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import time

import pytest
import requests

from tests.support.api import data_dir_entries, stored_entries, upload, wait_for_status
from tests.support.http import get_json, host_port, multipart, request_head
from tests.support.problems import assert_problem
from tools.hostile_media import blank_avi_frames
from tools.synthetic_video import write_video
from video_analysis.model.runner import ModelLoadError
from video_analysis.web.services import EXTENSION_KEY

GENERIC_INTERNAL = ("The analysis stopped because of an internal error; it has been logged. "
                    "Try again, or with another video.")


def assert_no_leak(response, *paths):
    text = response.get_data(as_text=True)
    for path in paths:
        assert path not in text


# -- a model that cannot be loaded ------------------------------------------------------------
@pytest.fixture(params=["bad-config", "no-weights"])
def broken_model(request, tmp_path, tiny_model_dir):
    directory = tmp_path / f"{request.param}-model"
    if request.param == "bad-config":
        directory.mkdir()
        (directory / "config.json").write_text("{not json")
    else:  # a real checkpoint without its weights file
        shutil.copytree(tiny_model_dir, directory)
        for name in os.listdir(directory):
            if name.endswith(".safetensors"):
                os.unlink(directory / name)
    return str(directory)


def test_a_model_that_cannot_load_leaves_the_server_up_degraded_and_refusing_clearly(make_app, broken_model, videos,
                                                                                       tmp_path):
    app = make_app(MODEL=broken_model)
    runner = app.extensions[EXTENSION_KEY].analysis
    with pytest.raises(ModelLoadError, match=os.path.basename(broken_model)):
        runner.wait_until_loaded(60)
    client = app.test_client()
    health = client.get("/health")
    assert health.status_code == 200
    body = health.get_json()
    name = os.path.basename(broken_model)
    assert body["status"] == "degraded" and body["model"] == {"id": name, "loaded": False, "device": "cpu"}
    assert name in body["reason"] and len(body["reason"]) > 20
    assert str(tmp_path) not in json.dumps(body)
    for url, field in (("/api/v1/video/upload", "video"), ("/analyze/highlights", "video"),
                       ("/analyze/workout", "file")):
        response = upload(client, videos["short"], url=url, field=field)
        problem = assert_problem(response, 503)
        assert "model could not be loaded" in problem["error"] and "/health" in problem["error"]
        assert_no_leak(response, str(tmp_path))
        if url.startswith("/analyze/"):
            assert problem["success"] is False
    assert stored_entries(app) == []
    # Everything else still answers.
    assert client.get("/api/v1/openapi.json").status_code == 200
    assert_problem(client.get("/api/v1/video/status/00000000-0000-4000-8000-000000000000"), 404)


def test_gunicorn_starts_with_a_broken_model_and_stops_cleanly(start_service, tmp_path, videos):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    server = start_service(model_dir=str(broken), ready=False)
    health = server.wait_ready()
    assert health["status"] == "degraded" and "broken-model" in health["reason"]
    assert str(tmp_path) not in json.dumps(health)
    with open(videos["short"], "rb") as handle:
        response = requests.post(server.base + "/api/v1/video/upload", files={"video": handle}, timeout=30)
    assert response.status_code == 503 and response.headers["Content-Type"] == "application/problem+json"
    assert data_dir_entries(str(tmp_path / "data")) == []
    assert server.terminate() < 5.0 and server.process.returncode == 0


# -- a video that opens but breaks part-way ------------------------------------------------------
@pytest.fixture(scope="module")
def breaks_midway(tmp_path_factory):
    """An MJPG AVI whose frames 20-29 of 60 are blanked: it probes fine, then fails at 00:02."""
    root = tmp_path_factory.mktemp("midway")
    avi = write_video(str(root / "clip.avi"), duration=6, fps=10)
    return blank_avi_frames(avi, str(root / "breaks-midway.avi"), range(20, 30))


def test_a_video_that_breaks_part_way_fails_its_job_with_a_reason_and_keeps_its_files(app, client, breaks_midway):
    response = upload(client, breaks_midway, segment_duration="1")
    assert response.status_code == 202, response.get_data(as_text=True)
    session_id = response.get_json()["sessionId"]
    seen = wait_for_status(client, session_id)
    final = seen[-1]
    assert final["status"] == "failed" and final["currentStep"] == "failed"
    assert final["segmentsDone"] >= 1, "it failed part-way, after some segments"
    assert final["progress"] < 100
    assert final["error"] == ("The video could not be decoded at 00:02 (frame 21 of 60); "
                              "the file may be truncated or damaged.")
    results = assert_problem(client.get(f"/api/v1/video/results/{session_id}"), 400)
    assert results["sessionStatus"] == "failed" and final["error"] in results["error"]
    assert_problem(client.post(f"/api/v1/video/cancel/{session_id}"), 409)
    # Its files stay until cleanup (or expiry).
    assert stored_entries(app) == [session_id]
    assert client.delete(f"/api/v1/video/cleanup/{session_id}").status_code == 200
    assert stored_entries(app) == []


def test_a_legacy_request_for_a_video_that_breaks_part_way_is_422_and_keeps_nothing(app, client, breaks_midway):
    problem = assert_problem(upload(client, breaks_midway, url="/analyze/highlights", segment_duration="1"), 422)
    assert "could not be decoded at 00:02" in problem["error"] and problem["success"] is False
    assert stored_entries(app) == []


# -- an exception inside generation ---------------------------------------------------------------
def test_an_exception_inside_generation_fails_that_job_only(make_app, videos):
    """A prompt holding the image placeholder `<image>` makes mlx-vlm's processor raise (the text then
    names more images than are given): a real failure inside the model call. The HTTP layer refuses
    such prompts, so the job is queued the way the upload route queues one, past that check."""
    app = make_app(JOB_WORKERS=1)
    client = app.test_client()
    svc = app.extensions[EXTENSION_KEY]
    broken = svc.sessions.new_id()
    directory = svc.storage.session_dir(broken)
    os.mkdir(directory, 0o700)
    video = os.path.join(directory, "upload-0.bin")
    shutil.copyfile(videos["short"], video)
    params = {"segment_duration": 10, "frames_per_segment": 8, "max_tokens": 16, "min_significance": 6,
              "max_highlights": 10, "system_prompt": None, "user_prompt": "Describe <image> this."}
    svc.sessions.create(broken, "highlights", "short.mp4", directory, params)
    svc.jobs.submit(svc.jobs.reserve(), broken, video)
    after = upload(client, videos["short"], segment_duration="2").get_json()["sessionId"]
    final = wait_for_status(client, broken)[-1]
    assert final["status"] == "failed" and final["error"] == GENERIC_INTERNAL
    text = json.dumps(final)
    assert "Traceback" not in text and "ValueError" not in text and "mlx" not in text
    assert wait_for_status(client, after)[-1]["status"] == "completed"
    data = client.get(f"/api/v1/video/results/{after}").get_json()["data"]
    assert data["total_segments_analyzed"] == 3
    # The model thread is alive and still serving.
    assert runner_alive(svc) and client.get("/health").get_json()["status"] == "healthy"
    assert sorted(stored_entries(app)) == sorted([broken, after])


def runner_alive(svc) -> bool:
    return svc.analysis.loaded and svc.analysis.alive()


@pytest.mark.parametrize("url", ["/api/v1/video/upload", "/analyze/workout"])
@pytest.mark.parametrize("field,value", [("system_prompt", "<image>"), ("user_prompt", "Look at <end_of_utterance>")])
def test_prompts_holding_the_models_control_tokens_are_400(app, client, videos, url, field, value):
    problem = assert_problem(upload(client, videos["short"], url=url, **{field: value}), 400)
    assert problem["field"] == field and "control token" in problem["error"]
    assert stored_entries(app) == []


# -- storage that cannot be written ----------------------------------------------------------------
def _chattr(flag: str, path: str) -> bool:
    try:
        return subprocess.run(["chattr", flag, path], capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.fixture(params=["replaced-by-a-file", "immutable", "read-only-mode"])
def unwritable_app(request, make_app, tmp_path):
    """An app whose DATA_DIR stops taking new files after it started (its state database elsewhere: the
    directory is replaced or frozen whole)."""
    app = make_app(STATE_DB=str(tmp_path / "state.db"))
    root = app.extensions[EXTENSION_KEY].storage.root
    if request.param == "replaced-by-a-file":
        os.rmdir(root)
        with open(root, "w") as handle:
            handle.write("not a directory")
        undo = lambda: (os.unlink(root), os.mkdir(root, 0o700))  # noqa: E731
    elif request.param == "immutable":  # works for root too, where file modes do not stop writes
        if not _chattr("+i", root):
            pytest.skip("chattr +i is not supported here")
        undo = lambda: _chattr("-i", root)  # noqa: E731
    else:
        if os.geteuid() == 0:
            pytest.skip("file modes do not stop root; the other two ways cover it")
        os.chmod(root, 0o500)
        undo = lambda: os.chmod(root, 0o700)  # noqa: E731
    yield app
    undo()


@pytest.mark.parametrize("url", ["/api/v1/video/upload", "/analyze/highlights"])
def test_a_data_dir_that_is_not_writable_is_a_clear_503_and_leaves_nothing(unwritable_app, videos, url):
    app = unwritable_app
    client = app.test_client()
    response = upload(client, videos["short"], url=url)
    problem = assert_problem(response, 503)
    assert "cannot store uploads" in problem["error"] and int(response.headers["Retry-After"]) > 0
    assert_no_leak(response, app.extensions[EXTENSION_KEY].storage.root)
    root = app.extensions[EXTENSION_KEY].storage.root
    assert not os.path.isdir(root) or data_dir_entries(root) == []
    health = client.get("/health").get_json()
    if os.path.isdir(root):  # frozen: nothing to restart for
        assert health["status"] == "healthy"
    else:  # DATA_DIR is gone (a file in its place): an operator must know
        assert health["status"] == "degraded" and "DATA_DIR" in health["problems"][0]
    assert app.extensions[EXTENSION_KEY].jobs.counts() == {"pending": 0, "processing": 0}


def _limit_file_size(max_bytes: int):
    def apply():
        # Without SIGXFSZ ignored the process would die; ignored, writes past the limit fail with EFBIG.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def test_a_full_disk_is_507_with_no_partial_file_and_small_uploads_still_work(start_service, tmp_path, videos):
    """A server process that may write no file beyond 120 kB stands for a disk that fills part-way through a write."""
    big = write_video(str(tmp_path / "big.mp4"), duration=30, fps=10)
    assert os.path.getsize(big) > 200_000 and os.path.getsize(videos["short"]) < 100_000
    server = start_service(env={"PYTHONDONTWRITEBYTECODE": "1"}, preexec_fn=_limit_file_size(120_000))
    data_dir = server.data_dir
    for url in ("/api/v1/video/upload", "/analyze/highlights"):
        with open(big, "rb") as handle:
            response = requests.post(server.base + url, files={"video": ("big.mp4", handle)}, timeout=30)
        assert response.status_code == 507, response.text
        body = response.json()
        assert response.headers["Content-Type"] == "application/problem+json"
        assert body["error"] == body["detail"] and "no room left" in body["error"]
        assert data_dir not in response.text and "Traceback" not in response.text
        assert data_dir_entries(data_dir) == []
    with open(videos["short"], "rb") as handle:
        response = requests.post(server.base + "/api/v1/video/upload", files={"video": handle}, timeout=30)
    assert response.status_code == 202, response.text
    session_id = response.json()["sessionId"]
    deadline = time.monotonic() + 30
    while get_json(f"{server.base}/api/v1/video/status/{session_id}")[1]["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert data_dir_entries(data_dir) == [session_id]


# -- SIGTERM under gunicorn ------------------------------------------------------------------------
def test_sigterm_during_a_long_job_exits_promptly_and_cleanly(make_app, start_service, videos):
    server = start_service()
    data_dir = server.data_dir
    with open(videos["long"], "rb") as handle:
        response = requests.post(server.base + "/api/v1/video/upload", files={"video": handle},
                                 data={"segment_duration": "1"}, timeout=30)
    session_id = response.json()["sessionId"]
    deadline = time.monotonic() + 30
    while get_json(f"{server.base}/api/v1/video/status/{session_id}")[1]["segmentsDone"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    took = server.terminate()
    assert server.process.returncode == 0, server.log()
    assert took < 5.0, f"exit took {took:.1f} s"
    log = server.log()
    assert "Traceback" not in log and "Aborted" not in log
    # Only the complete upload of the stopped session is there; a restart goes on with its job.
    assert data_dir_entries(data_dir) == [session_id]
    assert os.listdir(os.path.join(data_dir, session_id)) == ["upload-0.bin"]
    restarted = make_app(DATA_DIR=data_dir)
    assert stored_entries(restarted) == [session_id]
    state = wait_for_status(restarted.test_client(), session_id, timeout=60)[-1]
    assert state["status"] == "completed" and state["segmentsDone"] == state["segmentsTotal"] == 90


def test_sigterm_during_a_slow_upload_exits_and_a_restart_leaves_nothing(make_app, start_service, tmp_path):
    server = start_service()
    data_dir = server.data_dir
    # The service reads a large body 1 MiB at a time (request_body.py): send more than that, then stop.
    body = multipart([(b"video", b"slow.mp4", os.urandom(3 * 1024 * 1024))])
    sent = 1024 * 1024 + 200_000
    connection = None
    try:
        connection = socket.create_connection(host_port(server.base), timeout=10)
        connection.sendall(request_head("/api/v1/video/upload", len(body)) + body[:sent])
        deadline = time.monotonic() + 10
        # The half-sent upload is being written into DATA_DIR (its directory is made a moment before the file).
        while not any(os.listdir(os.path.join(data_dir, name)) for name in data_dir_entries(data_dir)):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.02)
        (partial,) = data_dir_entries(data_dir)
        assert os.listdir(os.path.join(data_dir, partial)) == ["upload-0.bin"]
        took = server.terminate()
        assert server.process.returncode == 0, server.log()
        # gunicorn waits graceful_timeout (5 s) for the request in flight, then the worker goes.
        assert took < 8.0, f"exit took {took:.1f} s"
        assert "Traceback" not in server.log()
    finally:
        if connection is not None:
            connection.close()
    restarted = make_app(DATA_DIR=data_dir)
    assert stored_entries(restarted) == []
    response = upload(restarted.test_client(), write_video(str(tmp_path / "after.mp4"), duration=2, fps=10))
    assert response.status_code == 202
