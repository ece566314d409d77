"""A hostile review of thumbnails and reels (issue 19), from outside: requests a careless or hostile client sends.

Real services on the marker model (it scores a white square 9/10 and anything else 2/10), generated videos,
real HTTP. Tests marked `xfail(strict=True)` are findings: they state what should happen and fail today; the
others document what holds.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time

import av
import pytest
import requests

from tests.support.api import upload, wait_for_status
from tools.synthetic_video import Marker, tone_video, write_video
from video_analysis.web.services import EXTENSION_KEY

TERMINAL = ("completed", "failed", "cancelled")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-outputs")
    return {
        # Two highlights, 10-20 s and 20-30 s: a 20 s reel of 100 frames.
        "match": write_video(str(root / "match.mp4"), duration=30, fps=5, size=(640, 360),
                             markers=[Marker(11, 19), Marker(21, 29)]),
        # No marker: no highlight at the default min_significance.
        "plain": write_video(str(root / "plain.mp4"), duration=10, fps=5, size=(160, 90)),
        # A reel of 30 s at 25 fps, 960x540: the rendering takes several seconds, long enough to act during it.
        "slow": write_video(str(root / "slow.mp4"), duration=30, fps=25, size=(960, 540),
                            markers=[Marker(1, 9), Marker(11, 19), Marker(21, 29)]),
        "tone": tone_video(str(root / "tone.mp4"), seconds=30, fps=10, size=(320, 180),
                           pitches=((0.0, 440.0), (15.0, 880.0)), markers=[Marker(11, 19), Marker(21, 29)]),
    }


@pytest.fixture
def marker_app(make_app, marker_model_dir):
    return make_app(MODEL=marker_model_dir)


def _files(directory: str) -> list:
    return sorted(os.path.relpath(os.path.join(parent, name), directory)
                  for parent, _, names in os.walk(directory) for name in names)


def _on_disk(directory: str) -> int:
    return sum(os.path.getsize(os.path.join(parent, name)) for parent, _, names in os.walk(directory) for name in names)


def _wait_for_message(client, session_id, words: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/api/v1/video/status/{session_id}").get_json()
        if words in status["message"] or status["status"] in TERMINAL:
            return status
        time.sleep(0.01)
    raise AssertionError(f"{session_id} never said {words!r}")



def _reel_frames(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


# -- a real service (gunicorn, as deployed) with a completed reel ------------------------------------------------------
@pytest.fixture(scope="module")
def service(marker_model_dir, tmp_path_factory):
    from tools.service_process import ServiceProcess

    root = tmp_path_factory.mktemp("hostile-service")
    with ServiceProcess(marker_model_dir, str(root / "data")) as running:
        running.wait_ready(120)
        yield running


@pytest.fixture(scope="module")
def reel(service, sources):
    """A completed session with a 20 s reel: (session id, its results' data, the reel's bytes, the reel's URL)."""
    with open(sources["match"], "rb") as handle:
        session_id = requests.post(f"{service.base}/api/v1/video/upload", files={"video": handle},
                                   data={"reel": "true"}, timeout=30).json()["sessionId"]
    deadline = time.monotonic() + 120
    while requests.get(f"{service.base}/api/v1/video/status/{session_id}", timeout=10).json()["status"] not in TERMINAL:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    data = requests.get(f"{service.base}/api/v1/video/results/{session_id}", timeout=10).json()["data"]
    url = service.base + data["reelUrl"]
    whole = requests.get(url, timeout=30)
    assert whole.status_code == 200 and len(whole.content) == data["reelSize"]
    return session_id, data, whole.content, url


def _problem(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.headers, response.content[:200])
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = json.loads(response.content if hasattr(response, "content") else response.data)
    assert body["status"] == status and body["detail"] == body["error"] and body["detail"].endswith(".")
    return body


@pytest.mark.parametrize("asked, first, last", [
    ("bytes=0-0", 0, 0),
    ("bytes=-1", -1, -1),                       # the last byte
    ("bytes=0-99999999999999999999", 0, -1),    # an end past the file: up to its end
    ("bytes=5-", 5, -1),
    ("bytes= 0-1", 0, 1),                       # blanks around the range
    ("bytes=00-01", 0, 1),
])
def test_ranges_a_browser_or_a_careless_client_sends_give_exactly_those_bytes(reel, asked, first, last):
    _, _, whole, url = reel
    size = len(whole)
    first, last = first % size, last % size
    response = requests.get(url, headers={"Range": asked}, timeout=30)
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
    assert response.content == whole[first:last + 1]
    assert int(response.headers["Content-Length"]) == last - first + 1


@pytest.mark.parametrize("asked", ["bytes={size}-", "bytes={size_plus}-", "bytes=-0", "bytes=99999999999999999999-"])
def test_a_range_outside_the_reel_is_a_416_problem_naming_its_size(reel, asked):
    _, _, whole, url = reel
    size = len(whole)
    response = requests.get(url, headers={"Range": asked.format(size=size, size_plus=size + 1)}, timeout=30)
    assert str(size) in _problem(response, 416)["detail"]
    assert response.headers["Content-Range"] == f"bytes */{size}"


def test_head_and_if_range_and_a_stale_etag_behave_as_http_says(reel):
    _, _, whole, url = reel
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["Content-Length"]) == len(whole)
    assert head.headers["Accept-Ranges"] == "bytes" and head.headers["ETag"]
    etag = head.headers["ETag"]
    # If-Range with the reel's ETag: the range; with another: the whole reel (it may have changed).
    same = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}, timeout=30)
    assert same.status_code == 206 and same.content == whole[:10]
    changed = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'}, timeout=30)
    assert changed.status_code == 200 and changed.content == whole
    stale = requests.get(url, headers={"If-None-Match": '"stale"'}, timeout=30)
    assert stale.status_code == 200 and stale.content == whole
    kept = requests.get(url, headers={"If-None-Match": etag}, timeout=30)
    assert kept.status_code == 304 and kept.content == b""
    assert "private" in kept.headers["Cache-Control"]


def test_a_thumbnail_answers_ranges_and_head_too(reel, service):
    session_id, data, _, _ = reel
    url = service.base + data["highlights"][0]["thumbnailUrl"]
    whole = requests.get(url, timeout=10).content
    part = requests.get(url, headers={"Range": "bytes=0-9"}, timeout=10)
    assert part.status_code == 206 and part.content == whole[:10]
    assert requests.head(url, timeout=10).headers["Content-Length"] == str(len(whole))
    _problem(requests.get(url, headers={"Range": f"bytes={len(whole)}-"}, timeout=10), 416)


def test_a_suffix_range_longer_than_the_reel_gives_the_whole_reel(reel):
    _, _, whole, url = reel
    response = requests.get(url, headers={"Range": f"bytes=-{len(whole) + 1}"}, timeout=30)
    assert response.status_code == 206 and response.content == whole
    assert response.headers["Content-Range"] == f"bytes 0-{len(whole) - 1}/{len(whole)}"


@pytest.mark.parametrize("asked", ["bytes=0-1,5-9", "bytes=5-2", "items=0-1"])
def test_a_range_the_server_does_not_support_is_ignored_not_refused(reel, asked):
    _, _, whole, url = reel
    response = requests.get(url, headers={"Range": asked}, timeout=30)
    assert response.status_code in (200, 206), (response.status_code, response.content[:200])
    if response.status_code == 200:
        assert response.content == whole


@pytest.mark.xfail(strict=True, reason="finding: If-None-Match with the reel's own ETag and a Range gives 206 and "
                                       "bytes; RFC 9110 13.2.2 evaluates If-None-Match before Range: 304")
def test_if_none_match_wins_over_range(reel):
    _, _, whole, url = reel
    etag = requests.head(url, timeout=30).headers["ETag"]
    response = requests.get(url, headers={"If-None-Match": etag, "Range": "bytes=0-9"}, timeout=30)
    assert response.status_code == 304 and response.content == b""


@pytest.mark.xfail(strict=True, reason="finding: If-Match with another ETag is a 412 whose body is the whole reel, "
                                       "as video/mp4 (and with a Range, a 206); a 412 should be a problem, without "
                                       "the video")
def test_a_failed_if_match_is_a_412_problem_without_the_reel(reel):
    _, _, whole, url = reel
    response = requests.get(url, headers={"If-Match": '"stale"'}, timeout=30)
    _problem(response, 412)
    assert whole[:1000] not in response.content
    with_range = requests.get(url, headers={"If-Match": '"stale"', "Range": "bytes=0-9"}, timeout=30)
    assert with_range.status_code == 412


@pytest.mark.xfail(strict=True, reason="finding: If-Unmodified-Since before the reel was made is ignored (200 with the "
                                       "reel); RFC 9110 13.1.4: the method must not be performed (412)")
def test_if_unmodified_since_before_the_reel_was_made_is_a_412(reel):
    _, _, _, url = reel
    response = requests.get(url, headers={"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}, timeout=30)
    assert response.status_code == 412


def test_a_reel_response_has_one_date_header(reel):
    # send_file's conditional answer sets Date itself; werkzeug's development server (app.py) adds a second one
    # ("Date: <d>, <d>"), gunicorn does not.
    _, _, _, url = reel
    response = requests.get(url, headers={"Range": "bytes=0-9"}, timeout=30)
    assert "," not in response.headers["Date"].split(",", 1)[1], response.headers["Date"]


# -- addresses -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [
    "/api/v1/video/thumbnail/{sid}/2.jpg",
    "/api/v1/video/thumbnail/{sid}/+1.jpg",
    "/api/v1/video/thumbnail/{sid}/1.JPG",
    "/api/v1/video/thumbnail/{sid}/1.5.jpg",
    "/api/v1/video/thumbnail/{sid}/%200.jpg",
    "/api/v1/video/thumbnail/{sid}/0.jpg%00",
    "/api/v1/video/thumbnail/{sid}/0.jpg/",
    "/api/v1/video/thumbnail/{sid}/" + "9" * 5000 + ".jpg",
    "/api/v1/video/thumbnail/{sid}/..%2F..%2Freel%2F{sid}.mp4",
    "/api/v1/video/thumbnail/{SID}/0.jpg",          # ids are lower-case UUIDs
    "/api/v1/video/thumbnail/{hex}/0.jpg",          # the same UUID without its dashes
    "/api/v1/video/reel/{SID}.mp4",
    "/api/v1/video/reel/{sid}.MP4",
    "/api/v1/video/reel/{sid}.mp4.mp4",
    "/api/v1/video/reel/{sid}%00.mp4",
    "/api/v1/video/reel/..%2F{sid}.mp4",
    "/api/v1/video/reel/%2E%2E.mp4",
    "/api/v1/video/reel/" + "a" * 3000 + ".mp4",
    "/api/v1/video/reel/{sid}/../{sid}.mp4",
])
def test_a_crafted_address_is_a_404_problem_and_never_a_file(reel, service, path):
    session_id = reel[0]
    url = service.base + path.format(sid=session_id, SID=session_id.upper(), hex=session_id.replace("-", ""))
    connection = requests.Session()
    request = requests.Request("GET", url).prepare()
    request.url = url  # as typed: requests would otherwise resolve the dot segments
    response = connection.send(request, timeout=30)
    _problem(response, 404)
    assert b"/tmp" not in response.content and service.data_dir.encode() not in response.content


def test_other_methods_on_the_outputs_are_a_405_problem(reel, service):
    session_id, _, _, url = reel
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = requests.request(method, url, data=b"x", timeout=30)
        _problem(response, 405)
        assert "GET" in response.headers["Allow"]


# -- what the reel says when there is none ---------------------------------------------------------------------------
def test_a_reel_asked_for_over_nothing_is_null_and_the_message_says_why(marker_app, sources):
    client = marker_app.test_client()
    session_id = upload(client, sources["plain"], reel="true").get_json()["sessionId"]
    final = wait_for_status(client, session_id, timeout=120)[-1]
    assert final["status"] == "completed" and final["progress"] == 100
    assert final["message"].endswith("No reel was made: the analysis found nothing to put in it.")
    data = client.get(f"/api/v1/video/results/{session_id}").get_json()["data"]
    assert (data["highlights"], data["reelUrl"], data["reelDuration"], data["reelSize"]) == ([], None, None, None)
    assert data["settings"]["reel"] is True
    directory = marker_app.extensions[EXTENSION_KEY].storage.session_dir(session_id)
    assert _files(directory) == ["upload-0.bin"]
    _problem(client.get(f"/api/v1/video/reel/{session_id}.mp4"), 404)


def test_the_404_of_a_refused_reel_says_why_there_is_none(make_app, marker_model_dir, sources):
    app = make_app(MODEL=marker_model_dir, MAX_REEL_SECONDS=15)
    client = app.test_client()
    session_id = upload(client, sources["match"], reel="true").get_json()["sessionId"]
    final = wait_for_status(client, session_id, timeout=120)[-1]
    assert "MAX_REEL_SECONDS" in final["message"]  # holds: the status says why
    detail = _problem(client.get(f"/api/v1/video/reel/{session_id}.mp4"), 404)["detail"]
    assert "MAX_REEL_SECONDS" in detail and "ask for one" not in detail, detail


# -- the parameters, as careless clients send them ---------------------------------------------------------------------
@pytest.mark.parametrize("fields, reel", [
    ({"reel": "TRUE"}, True),
    ({"reel": " true "}, True),
    ({"reel": "1"}, True),
    ({"reel": "0"}, False),
    ({"reel": ""}, False),                               # empty: the default
    ({"params": '{"reel": true}'}, True),
    ({"params": '{"reel": "true"}'}, True),
    ({"params": '{"reel": false}', "reel": "true"}, True),  # a plain field wins over params
    ({"reel": "true", "analysis_type": "highlights", "reel_seconds_per_step": "30"}, True),  # another kind's: checked
])
def test_reel_values_a_client_may_send_are_read_as_documented(client, videos, fields, reel):
    response = upload(client, videos["short"], **fields)
    assert response.status_code == 202, response.get_json()
    session_id = response.get_json()["sessionId"]
    assert wait_for_status(client, session_id, timeout=60)[-1]["status"] == "completed"
    data = client.get(f"/api/v1/video/results/{session_id}").get_json()["data"]
    assert data["settings"]["reel"] is reel


@pytest.mark.parametrize("fields, field", [
    ({"reel": "yes"}, "reel"),
    ({"reel": "on"}, "reel"),
    ({"reel": "2"}, "reel"),
    ({"params": '{"reel": 2}'}, "reel"),
    ({"params": '{"reel": null}'}, "reel"),
    ({"params": '{"reel": 1.0}'}, "reel"),
    ({"analysis_type": "workout", "reel_seconds_per_step": "2.5"}, "reel_seconds_per_step"),
    ({"analysis_type": "workout", "reel_seconds_per_step": "1e1"}, "reel_seconds_per_step"),
    ({"analysis_type": "workout", "reel_seconds_per_step": "true"}, "reel_seconds_per_step"),
    ({"analysis_type": "workout", "reel_seconds_per_step": "NaN"}, "reel_seconds_per_step"),
    ({"analysis_type": "workout", "reel_seconds_per_step": "\u0665"}, "reel_seconds_per_step"),  # Arabic-Indic 5
    ({"analysis_type": "workout", "params": '{"reel_seconds_per_step": true}'}, "reel_seconds_per_step"),
    ({"analysis_type": "workout", "params": '{"reel_seconds_per_step": 1e400}'}, "reel_seconds_per_step"),
    ({"analysis_type": "highlights", "reel_seconds_per_step": "0"}, "reel_seconds_per_step"),  # another kind's
    ({"params": '{"reel_seconds_per_step": 61}'}, "reel_seconds_per_step"),
])
def test_bad_reel_values_are_a_400_naming_the_field(client, videos, fields, field):
    body = _problem(upload(client, videos["short"], **fields), 400)
    assert body["field"] == field and field in body["detail"]


# -- cancel, cleanup and MAX_STORAGE_MB during the rendering ---------------------------------------------------------
def test_cleanup_while_the_reel_renders_leaves_nothing_and_gives_every_byte_back(make_app, marker_model_dir, sources):
    app = make_app(MODEL=marker_model_dir)
    services = app.extensions[EXTENSION_KEY]
    client = app.test_client()
    before = services.storage.used
    session_id = upload(client, sources["slow"], reel="true").get_json()["sessionId"]
    directory = services.storage.session_dir(session_id)
    at = _wait_for_message(client, session_id, "Rendering the reel (3 %)")
    assert at["currentStep"] == "rendering", at
    assert any(name.endswith(".part") for name in os.listdir(directory))  # the reel is being written
    assert client.delete(f"/api/v1/video/cleanup/{session_id}").status_code == 200
    deadline = time.monotonic() + 15
    while services.jobs.counts()["processing"]:
        assert time.monotonic() < deadline, "the rendering did not stop"
        time.sleep(0.05)
    time.sleep(0.5)  # the analysis process's last writes, if any, are done by now
    assert not os.path.exists(directory) and services.storage.entries() == []
    assert services.storage.used == before
    for path in (f"/api/v1/video/status/{session_id}", f"/api/v1/video/reel/{session_id}.mp4",
                 f"/api/v1/video/thumbnail/{session_id}/0.jpg"):
        _problem(client.get(path), 404)


def test_cancel_while_the_reel_renders_keeps_the_thumbnails_and_no_part_of_the_reel(make_app, marker_model_dir,
                                                                                      sources):
    app = make_app(MODEL=marker_model_dir)
    services = app.extensions[EXTENSION_KEY]
    client = app.test_client()
    before = services.storage.used
    session_id = upload(client, sources["slow"], reel="true").get_json()["sessionId"]
    directory = services.storage.session_dir(session_id)
    _wait_for_message(client, session_id, "Rendering the reel (3 %)")
    assert client.post(f"/api/v1/video/cancel/{session_id}").status_code == 200
    deadline = time.monotonic() + 15
    while services.jobs.counts()["processing"]:
        assert time.monotonic() < deadline, "the rendering did not stop"
        time.sleep(0.05)
    assert _files(directory) == ["thumbnails/0.jpg", "thumbnails/1.jpg", "thumbnails/2.jpg", "upload-0.bin"]
    assert services.storage.used - before == _on_disk(directory)  # the thumbnails are counted
    status = client.get(f"/api/v1/video/status/{session_id}").get_json()
    assert status["status"] == "cancelled" and status["progress"] < 100
    _problem(client.get(f"/api/v1/video/reel/{session_id}.mp4"), 404)
    _problem(client.get(f"/api/v1/video/thumbnail/{session_id}/0.jpg"), 404)  # only completed sessions show them
    assert client.delete(f"/api/v1/video/cleanup/{session_id}").status_code == 200
    assert not os.path.exists(directory) and services.storage.used == before


def test_a_completed_reel_is_counted_and_cleanup_gives_it_all_back(make_app, marker_model_dir, sources):
    app = make_app(MODEL=marker_model_dir)
    services = app.extensions[EXTENSION_KEY]
    client = app.test_client()
    before = services.storage.used
    session_id = upload(client, sources["tone"], reel="true").get_json()["sessionId"]
    assert wait_for_status(client, session_id, timeout=120)[-1]["status"] == "completed"
    data = client.get(f"/api/v1/video/results/{session_id}").get_json()["data"]
    directory = services.storage.session_dir(session_id)
    assert _files(directory) == ["reel.mp4", "thumbnails/0.jpg", "thumbnails/1.jpg", "upload-0.bin"]
    assert services.storage.used - before == _on_disk(directory)
    reel = client.get(data["reelUrl"]).data
    with av.open(io.BytesIO(reel)) as container:  # the source has sound: so has the reel
        assert [s.codec_context.name for s in container.streams.audio] == ["aac"]
    assert client.delete(f"/api/v1/video/cleanup/{session_id}").status_code == 200
    assert not os.path.exists(directory) and services.storage.used == before


# -- restarts during the rendering -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stopped_while_rendering(marker_model_dir, sources, tmp_path_factory):
    """The service stopped as SIGTERM stops it while the reel renders, then started again on the same DATA_DIR
    (in-process, to read its count of MAX_STORAGE_MB): the session's directory, what the status said, the results,
    the reel's bytes and the count."""
    from video_analysis.web.app import create_app

    data_dir = str(tmp_path_factory.mktemp("graceful") / "data")
    apps = []

    messages = []

    def watch(sessions, session_id):  # every message the session shows, however briefly, as a poller may see it
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            state = sessions.get(session_id, with_result=False)
            if not messages or messages[-1] != state.message:
                messages.append(state.message)
            if state.status.terminal:
                return
            time.sleep(0.001)

    def start(session_id=None):
        app = create_app({"MODEL": marker_model_dir, "DATA_DIR": data_dir})
        apps.append(app)
        if session_id is not None:  # the resumed job starts with the app: watched from then on
            watcher = threading.Thread(target=watch, args=(app.extensions[EXTENSION_KEY].sessions, session_id),
                                       daemon=True)
            watcher.start()
        app.extensions[EXTENSION_KEY].analysis.wait_until_loaded(120)
        return app

    try:
        client = start().test_client()
        session_id = upload(client, sources["slow"], reel="true").get_json()["sessionId"]
        _wait_for_message(client, session_id, "Rendering the reel (5 %)")
        apps[0].extensions[EXTENSION_KEY].close()
        app = start(session_id)
        client = app.test_client()
        storage = app.extensions[EXTENSION_KEY].storage
        seen = wait_for_status(client, session_id, timeout=180)
        data = client.get(f"/api/v1/video/results/{session_id}").get_json()["data"]
        reel = client.get(data["reelUrl"]).data if data["reelUrl"] else b""
        directory = storage.session_dir(session_id)
        yield {"seen": seen, "messages": messages, "data": data, "reel": reel, "files": _files(directory), "on_disk": _on_disk(directory),
               "used": storage.used}
    finally:
        for app in apps:
            app.extensions[EXTENSION_KEY].close()


def test_a_job_stopped_while_rendering_resumes_with_a_whole_reel_and_no_part_left(stopped_while_rendering):
    run = stopped_while_rendering
    assert run["seen"][-1]["status"] == "completed" and run["seen"][-1]["progress"] == 100
    assert run["files"] == ["reel.mp4", "thumbnails/0.jpg", "thumbnails/1.jpg", "thumbnails/2.jpg", "upload-0.bin"]
    assert abs(run["data"]["reelDuration"] - 30.0) <= 3 / 25  # 3 highlights of a 10 s segment each, at 25 fps
    assert _reel_frames(run["reel"]) == 30 * 25
    progress = [body["progress"] for body in run["seen"]]
    assert progress == sorted(progress)


def test_after_a_restart_during_the_rendering_the_storage_count_is_what_is_on_disk(stopped_while_rendering):
    run = stopped_while_rendering
    assert run["seen"][-1]["status"] == "completed"
    assert run["used"] == run["on_disk"], f"counted {run['used'] - run['on_disk']} bytes more than on disk"


def test_a_job_resumed_in_its_rendering_does_not_name_a_segment_past_the_last(stopped_while_rendering):
    messages = stopped_while_rendering["messages"]
    assert not any("segment 4 of 3" in message for message in messages), messages
    assert any("Resumed" in message for message in messages), messages


def test_a_crash_during_the_rendering_resumes_with_a_whole_reel(killed_while_rendering):
    run = killed_while_rendering
    assert run["final"]["status"] == "completed" and run["final"]["progress"] == 100
    assert _reel_frames(run["reel"]) == 30 * 25
    assert "reel.mp4" in run["files"]


def test_a_crash_during_the_rendering_leaves_no_part_of_a_reel(killed_while_rendering):
    run = killed_while_rendering
    assert run["part_before_restart"], run["files"]  # the crash did leave one behind
    assert not [name for name in run["files"] if name.endswith(".part")], run["files"]


@pytest.fixture(scope="module")
def killed_while_rendering(marker_model_dir, sources, tmp_path_factory):
    """The service (gunicorn) killed with SIGKILL while the reel renders, started again on the same port and
    DATA_DIR; what its session holds once the resumed job has ended."""
    from tools.service_process import ServiceProcess

    data_dir = str(tmp_path_factory.mktemp("killed") / "data")
    first = ServiceProcess(marker_model_dir, data_dir)
    try:
        first.wait_ready(120)
        api = f"{first.base}/api/v1/video"
        with open(sources["slow"], "rb") as handle:
            session_id = requests.post(f"{api}/upload", files={"video": handle}, data={"reel": "true"},
                                       timeout=30).json()["sessionId"]
        deadline = time.monotonic() + 120
        while "Rendering the reel (5 %)" not in requests.get(f"{api}/status/{session_id}", timeout=10).json()["message"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        first.kill()
    finally:
        first.stop()
    directory = os.path.join(data_dir, session_id)
    part_before_restart = [name for name in _files(directory) if name.endswith(".part")]
    with ServiceProcess(marker_model_dir, data_dir, port=first.port) as second:
        second.wait_ready(120)
        deadline = time.monotonic() + 180
        while True:
            final = requests.get(f"{api}/status/{session_id}", timeout=10).json()
            if final["status"] in TERMINAL:
                break
            assert time.monotonic() < deadline, final
            time.sleep(0.1)
        data = requests.get(f"{api}/results/{session_id}", timeout=10).json()["data"]
        reel = requests.get(second.base + data["reelUrl"], timeout=30).content if data["reelUrl"] else b""
        return {"final": final, "reel": reel, "files": _files(directory), "part_before_restart": part_before_restart}


# -- the workers' PUT of outputs, in cluster mode ----------------------------------------------------------------------
UPLOAD_LIMIT_MB = 1


@pytest.fixture(scope="module")
def api_node(tiny_model_dir, tmp_path_factory):
    """A cluster's API node (gunicorn, Redis of its own, MAX_UPLOAD_MB=1) with no worker, and a second API node on
    the same Redis: uploads stay pending on the node that received them, whose outputs route is attacked."""
    from tests.support.cluster import Cluster
    from tools.redis_server import RedisServer
    from tools.service_process import ServiceProcess

    root = tmp_path_factory.mktemp("hostile-cluster")
    with RedisServer(root / "redis") as redis_server:
        cluster = Cluster(str(root / "cluster"), tiny_model_dir, redis_server)
        try:
            cluster.start_api(MAX_UPLOAD_MB=str(UPLOAD_LIMIT_MB))
            with ServiceProcess(tiny_model_dir, str(root / "other-api"), env=cluster.env()) as other:
                other.wait_health(timeout=60)
                yield cluster, other, redis_server.client()
        finally:
            cluster.stop()


@pytest.fixture
def pending(api_node, sources):
    """A session waiting for a worker on the first API node (none comes); cleaned up after the test."""
    cluster = api_node[0]
    with open(sources["plain"], "rb") as handle:
        response = requests.post(f"{cluster.base}/api/v1/video/upload", files={"video": handle}, timeout=30)
    assert response.status_code == 202, response.text
    session_id = response.json()["sessionId"]
    yield session_id
    requests.delete(f"{cluster.base}/api/v1/video/cleanup/{session_id}", timeout=10)


def _used(cluster, redis_client) -> int:
    return int(redis_client.get(f"va:storage:{cluster.base}:used") or 0)


def _outputs_url(base: str, session_id: str, name: str) -> str:
    return f"{base}/internal/v1/videos/{session_id}/outputs/{name}"


def _put(url: str, body: bytes, authorization=None) -> requests.Response:
    from tests.support.cluster import TOKEN

    headers = {"Authorization": authorization if authorization is not None else f"Bearer {TOKEN}"}
    prepared = requests.Request("PUT", url, data=body, headers=headers).prepare()
    prepared.url = url  # as written: requests would resolve ../ itself
    return requests.Session().send(prepared, timeout=30)


def _raw_put(cluster, session_id: str, name: str, headers: list, body: bytes, close_write: bool = False):
    from tests.support.cluster import TOKEN
    from tests.support.http import raw_http

    head = "\r\n".join([f"PUT /internal/v1/videos/{session_id}/outputs/{name} HTTP/1.1", "Host: localhost",
                        f"Authorization: Bearer {TOKEN}", "Connection: close", *headers]) + "\r\n\r\n"
    return raw_http(cluster.base, head.encode(), [body] if body else [], close_write=close_write)


@pytest.mark.parametrize("authorization", [None, "", "Bearer wrong-token-0123456789", "bearer {token}",
                                           "Bearer  {token}", "Basic {token}", "Bearer {token}x"])
@pytest.mark.parametrize("method", ["PUT", "GET", "POST", "DELETE"])
def test_the_outputs_route_without_the_token_is_the_same_404_as_no_route(api_node, pending, authorization, method):
    from tests.support.cluster import TOKEN

    cluster, _, _ = api_node
    session_id = pending
    unknown = requests.request(method, f"{cluster.base}/internal/v1/nothing-here", timeout=10)
    headers = {} if authorization is None else {"Authorization": authorization.format(token=TOKEN)}
    if method != "PUT":
        headers["Authorization"] = f"Bearer {TOKEN}"  # with the token: the route takes PUT only, and says nothing
    response = requests.request(method, _outputs_url(cluster.base, session_id, "reel.mp4"), data=b"hello",
                                headers=headers, timeout=10)
    assert (response.status_code, response.content) == (404, unknown.content)
    assert "Allow" not in response.headers


@pytest.mark.parametrize("name", [
    "..%2Fx", "../x", "reel.mp4/..", "thumbnails/../../x.jpg", "thumbnails/%2e%2e/%2e%2e/x.jpg",
    "thumbnails/1.jpg.partial", "thumbnails/1234567.jpg", "thumbnails//1.jpg", "thumbnails/-1.jpg",
    "thumbnails/1.JPG", "REEL.MP4", "reel.mp4%0A", "reel.mp4%00", "upload-0.bin", "..%2F..%2Fstate.db",
    ".reel.mp4.abc.part", "thumbnails", "thumbnails/",
])
def test_a_name_outside_the_outputs_is_a_404_that_writes_nothing(api_node, pending, name):
    cluster, _, redis_client = api_node
    session_id = pending
    before, used = sorted(os.walk(cluster.api.data_dir)), _used(cluster, redis_client)
    response = _put(_outputs_url(cluster.base, session_id, name), b"hello")
    assert response.status_code == 404, (name, response.status_code)
    assert sorted(os.walk(cluster.api.data_dir)) == before and _used(cluster, redis_client) == used


def test_a_thumbnail_named_with_a_non_ascii_digit_is_refused(api_node, pending):
    cluster, _, _ = api_node
    session_id = pending
    response = _put(_outputs_url(cluster.base, session_id, "thumbnails/%D9%A1.jpg"), b"hello")
    assert response.status_code == 404
    assert not os.path.exists(os.path.join(cluster.api.data_dir, session_id, "thumbnails"))


def test_an_output_is_written_whole_and_counted_once_however_often_it_is_sent(api_node, pending):
    cluster, _, redis_client = api_node
    session_id = pending
    directory = os.path.join(cluster.api.data_dir, session_id)
    used = _used(cluster, redis_client)
    for body in (b"first", b"second, longer", b"x"):
        response = _put(_outputs_url(cluster.base, session_id, "thumbnails/0.jpg"), body)
        assert response.status_code == 204 and response.content == b""
        with open(os.path.join(directory, "thumbnails", "0.jpg"), "rb") as handle:
            assert handle.read() == body
        assert _used(cluster, redis_client) - used == len(body)
    assert sorted(os.listdir(os.path.join(directory, "thumbnails"))) == ["0.jpg"]  # no .partial left


def test_a_body_shorter_than_its_length_or_without_one_leaves_no_file(api_node, pending):
    cluster, _, redis_client = api_node
    session_id = pending
    directory = os.path.join(cluster.api.data_dir, session_id)
    used = _used(cluster, redis_client)
    short = _raw_put(cluster, session_id, "reel.mp4", ["Content-Length: 1000"], b"x" * 10, close_write=True)
    assert short.status_code == 400
    chunked = _raw_put(cluster, session_id, "thumbnails/0.jpg", ["Transfer-Encoding: chunked"],
                       b"5\r\nhello\r\n0\r\n\r\n")
    assert chunked.status_code == 411
    time.sleep(0.5)
    assert _files(directory) == ["upload-0.bin"] and _used(cluster, redis_client) == used


def test_the_outputs_routes_errors_say_what_to_fix(api_node, pending):
    cluster, _, _ = api_node
    session_id = pending
    chunked = _raw_put(cluster, session_id, "thumbnails/0.jpg", ["Transfer-Encoding: chunked"],
                       b"5\r\nhello\r\n0\r\n\r\n")
    assert "Content-Length" in chunked.get_json()["detail"], chunked.get_json()
    short = _raw_put(cluster, session_id, "reel.mp4", ["Content-Length: 1000"], b"x" * 10, close_write=True)
    assert "form" not in short.get_json()["detail"], short.get_json()


def test_a_put_to_a_cleaned_up_session_or_another_nodes_is_a_404_that_leaves_nothing(api_node, pending):
    cluster, other, redis_client = api_node
    session_id = pending
    # Another API node on the same Redis does not keep this session's upload: it takes nothing for it.
    response = _put(_outputs_url(other.base, session_id, "reel.mp4"), b"hello")
    assert response.status_code == 404 and not os.path.exists(os.path.join(other.data_dir, session_id))
    used = _used(cluster, redis_client)
    assert requests.delete(f"{cluster.base}/api/v1/video/cleanup/{session_id}", timeout=10).status_code == 200
    freed = used - _used(cluster, redis_client)
    assert freed > 0
    for name in ("reel.mp4", "thumbnails/0.jpg"):
        assert _put(_outputs_url(cluster.base, session_id, name), b"hello").status_code == 404
    assert not os.path.exists(os.path.join(cluster.api.data_dir, session_id))
    assert _used(cluster, redis_client) == used - freed


def test_a_reel_larger_than_the_upload_limit_can_be_delivered(api_node, pending):
    cluster, _, _ = api_node
    session_id = pending
    response = _put(_outputs_url(cluster.base, session_id, "reel.mp4"), b"x" * (UPLOAD_LIMIT_MB + 2) * 1024 * 1024)
    assert response.status_code == 204, (response.status_code, response.text[:300])


def test_a_worker_stopped_while_it_sends_its_outputs_hands_the_job_back(marker_model_dir, redis_server, sources,
                                                                         tmp_path):
    import signal

    from tests.support.cluster import Cluster
    from tools.service_process import ServiceProcess

    cluster = Cluster(str(tmp_path / "cluster"), marker_model_dir, redis_server)
    with contextlib.ExitStack() as stack:
        stack.callback(cluster.stop)
        cluster.start_api()
        # A second API node on the same Redis, to follow the session while the first is down.
        other = stack.enter_context(ServiceProcess(marker_model_dir, str(tmp_path / "other"), env=cluster.env()))
        other.wait_health(timeout=60)
        worker = cluster.add_worker()
        with open(sources["slow"], "rb") as handle:
            session_id = requests.post(f"{cluster.base}/api/v1/video/upload", files={"video": handle},
                                       data={"reel": "true"}, timeout=30).json()["sessionId"]

        def status():
            return requests.get(f"{other.base}/api/v1/video/status/{session_id}", timeout=10).json()

        deadline = time.monotonic() + 120
        while "Rendering the reel (5" not in status()["message"]:
            assert time.monotonic() < deadline and status()["status"] not in TERMINAL, status()
            time.sleep(0.05)
        cluster.api.stop()  # the node keeping the upload goes away: the worker's sending waits for it
        while "(100 %)" not in status()["message"]:
            assert time.monotonic() < deadline, status()
            time.sleep(0.1)
        time.sleep(3)  # rendered: the worker is trying to send the outputs now
        worker.process.send_signal(signal.SIGTERM)
        worker.process.wait(30)
        time.sleep(1)
        message = status()["message"]
        assert "stopped answering" not in message and "try 2 of 3" not in message, message
        assert message.startswith(f"Waiting for a worker: the worker running it ({worker.name}) stopped"), message
