"""Hostile input: every malformed, oversized or malicious request gets a clear 4xx problem.

Each refusal is checked the same way (`refused`): the status; a problem+json
body whose `error` is a sentence equal to `detail`; no traceback and no server
path in it; the server still healthy afterwards; and no file of the request
left in DATA_DIR. Requests the werkzeug test client cannot express (a lying
Content-Length, a chunked body, raw non-UTF-8 bytes in a file name) go over a
socket to `live_server`.
"""
import io
import json
import os
import time
import uuid

import cv2
import numpy as np
import pytest

from tests.support.api import serve, stored_entries, upload, wait_for_status
from tests.support.http import multipart, raw_http, request_head
from tests.support.problems import assert_healthy, assert_problem, refused
from tools.hostile_media import cut_file, declare_avi_frame_size, faststart_mp4
from tools.synthetic_video import write_video
from video_analysis.web.services import EXTENSION_KEY

UPLOAD = "/api/v1/video/upload"
LEGACY = "/analyze/highlights"
BOTH_ROUTES = pytest.mark.parametrize("url", [UPLOAD, LEGACY])


def post_files(client, url=UPLOAD, files=(), **fields):
    """Multipart POST with files as (field, bytes, filename) triples and text fields."""
    data = {name: value for name, value in fields.items()}
    for name, content, filename in files:
        data.setdefault(name, []).append((io.BytesIO(content), filename))
    return client.post(url, data=data, content_type="multipart/form-data")


# -- media --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def media(tmp_path_factory, videos):
    root = tmp_path_factory.mktemp("hostile-media")
    out = {}
    with open(videos["short"], "rb") as handle:
        out["mp4"] = handle.read()
    (root / "notes.mp4").write_text("These are my notes, not a video.\n" * 200)
    out["text"] = (root / "notes.mp4").read_bytes()
    ok, png = cv2.imencode(".png", np.full((120, 160, 3), 90, np.uint8))
    out["png"] = png.tobytes()
    out["random"] = np.random.default_rng(7).bytes(64 * 1024)
    # OpenCV's MP4s end with their index (moov): a cut one has no index at all.
    out["mp4_cut"] = out["mp4"][: len(out["mp4"]) // 2]
    # "Header fine, frames cut off": the index moved in front, then the frames cut away.
    header = faststart_mp4(videos["short"], str(root / "faststart.mp4"))
    faststart = (root / "faststart.mp4").read_bytes()
    out["faststart"] = faststart
    out["mp4_header_only"] = faststart[: header + 8]
    out["mp4_half"] = faststart[: header + (len(faststart) - header) // 2]
    # A video writer closed before any frame: a container with 0 frames.
    zero = str(root / "zero.mp4")
    writer = cv2.VideoWriter(zero, cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    writer.release()
    out["zero_frames"] = open(zero, "rb").read()
    out["one_frame"] = open(write_video(str(root / "one.mp4"), duration=0.1, fps=10), "rb").read()
    avi = write_video(str(root / "clip.avi"), duration=6, fps=10)
    out["avi"] = open(avi, "rb").read()
    out["avi_cut"] = open(cut_file(avi, str(root / "cut.avi"), 3000), "rb").read()
    out["avi_half"] = out["avi"][: len(out["avi"]) // 2]
    out["huge_frames"] = open(declare_avi_frame_size(avi, str(root / "huge.avi"), 16000, 16000), "rb").read()
    return out


# == uploads ================================================================================
@BOTH_ROUTES
def test_no_file_part(app, client, url):
    body = refused(app, client.post(url, data={"min_significance": "7"}, content_type="multipart/form-data"), 400,
                   field="video")
    assert "No video was uploaded" in body["error"]


@BOTH_ROUTES
def test_not_multipart_at_all(app, client, url):
    refused(app, client.post(url, json={"video": "aGVsbG8="}), 400, field="video")


@BOTH_ROUTES
def test_wrong_file_field_name(app, client, media, url):
    body = refused(app, post_files(client, url, files=[("upload", media["mp4"], "clip.mp4")]), 400, field="upload")
    assert "'video'" in body["error"]


def test_the_video_field_as_text_instead_of_a_file(app, client):
    body = refused(app, client.post(UPLOAD, data={"video": "clip.mp4"}, content_type="multipart/form-data"), 400,
                   field="video")
    assert "text" in body["error"]


@BOTH_ROUTES
def test_empty_file(app, client, url):
    body = refused(app, post_files(client, url, files=[("video", b"", "clip.mp4")]), 400, field="video")
    assert "empty" in body["error"]


def test_an_empty_file_with_no_name(app, client):
    """What a browser sends for a file input left empty."""
    refused(app, post_files(client, files=[("video", b"", "")]), 400, field="video")


@pytest.mark.parametrize("kind", ["text", "png", "random", "mp4_cut", "mp4_header_only", "zero_frames", "one_frame",
                                  "avi_cut"])
@BOTH_ROUTES
def test_files_that_are_not_analysable_videos_are_415(app, client, media, kind, url):
    body = refused(app, post_files(client, url, files=[("video", media[kind], f"{kind}.mp4")]), 415, field="video")
    assert "video" in body["error"] or "frame" in body["error"]


def test_a_still_image_is_named_as_such(app, client, media):
    body = refused(app, post_files(client, files=[("video", media["png"], "photo.png")]), 415)
    assert "still image" in body["error"]


def test_frames_declared_larger_than_8k_are_refused_before_any_is_decoded(app, client, media):
    """A 150 kB file declaring 16000 x 16000 frames in its headers and in every JPEG (whose data is for
    160x120): FFmpeg refuses each as invalid before allocating it. The capped stream-info probe
    leaves no declared size to quote; tests/test_frame_bombs.py has valid 16000 x 16000 frames."""
    body = refused(app, post_files(client, files=[("video", media["huge_frames"], "huge.avi")]), 415, field="video")
    assert body["error"] == "The video has no frames that can be decoded; the file may be empty or damaged."


@pytest.mark.parametrize("kind", ["mp4_half", "avi_half"])
@BOTH_ROUTES
def test_a_video_cut_in_half_with_its_header_intact_is_415(app, client, media, kind, url):
    """The header survives (an AVI's is in front; the MP4 here was made "faststart") and promises
    more frames than decode: a truncated file, refused before it becomes a job."""
    body = refused(app, post_files(client, url, files=[("video", media[kind], f"{kind}.mp4")]), 415, field="video")
    assert "truncated" in body["error"] and "Upload the complete file" in body["error"]


def test_two_files_in_one_request(app, client, media):
    body = refused(app, post_files(client, files=[("video", media["mp4"], "a.mp4"), ("file", media["mp4"], "b.mp4")]),
                   400, field="video")
    assert "one video" in body["error"]


def test_two_files_in_the_same_field(app, client, media):
    refused(app, post_files(client, files=[("video", media["mp4"], "a.mp4"), ("video", media["mp4"], "b.mp4")]),
            400, field="video")


def test_a_body_over_max_upload_mb(make_app, media):
    app = make_app(MAX_UPLOAD_MB=1)
    body = refused(app, post_files(app.test_client(), files=[("video", os.urandom(1024 * 1024 + 4096), "big.mp4")]),
                   413)
    assert "1 MB" in body["error"]


def test_a_whole_body_over_the_request_limit(make_app, media):
    app = make_app(MAX_UPLOAD_MB=1)
    refused(app, post_files(app.test_client(), files=[("video", os.urandom(3 * 1024 * 1024), "big.mp4")]), 413)


def test_thousands_of_parts(app, client, media):
    fields = {f"f{i}": "x" for i in range(3000)}
    body = refused(app, post_files(client, files=[("video", media["mp4"], "clip.mp4")], **fields), 413)
    assert "form fields" in body["error"]


def test_a_text_field_larger_than_the_form_memory_limit(app, client, media):
    refused(app, post_files(client, files=[("video", media["mp4"], "clip.mp4")], user_prompt="x" * (300 * 1024)), 413)


@pytest.mark.parametrize("declared", [10 ** 12, 10 ** 30])
def test_an_enormous_declared_content_length_with_a_small_body(app, live_server, media, declared):
    body = multipart([(b"video", b"clip.mp4", media["mp4"])])
    response = raw_http(live_server, request_head(UPLOAD, declared), [body])
    refused(app, response, 413)


def test_a_body_that_stops_before_its_declared_length(app, live_server, media):
    """The client promises 500 kB, sends 40 kB of the file, then stops sending."""
    body = multipart([(b"video", b"clip.mp4", media["mp4"])])[:40000]
    response = raw_http(live_server, request_head(UPLOAD, 500_000), [body], close_write=True)
    refused(app, response, 400)


def test_a_chunked_body_over_the_limit(make_app, media):
    app = make_app(MAX_UPLOAD_MB=1)
    payload = multipart([(b"video", b"big.mp4", os.urandom(3 * 1024 * 1024))])
    chunks = [b"%x\r\n" % len(payload[i:i + 65536]) + payload[i:i + 65536] + b"\r\n"
              for i in range(0, len(payload), 65536)] + [b"0\r\n\r\n"]
    head = request_head(UPLOAD, None, extra=b"Transfer-Encoding: chunked\r\n")
    with serve(app) as base_url:
        response = raw_http(base_url, head, chunks)
    refused(app, response, 413)


def test_a_multipart_body_without_a_boundary(app, client, media):
    refused(app, client.post(UPLOAD, data=media["mp4"], content_type="multipart/form-data"), 400)


def test_a_multipart_body_cut_before_its_closing_boundary(app, live_server, media):
    body = multipart([(b"video", b"clip.mp4", media["mp4"])])
    body = body[: body.rindex(b"--hostile-boundary--")]
    refused(app, raw_http(live_server, request_head(UPLOAD, len(body)), [body]), 400)


# -- hostile file names: accepted, shown sanitised, stored under a server-made name --------------
def _accepted_name(app, client, response):
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    session_id = body["sessionId"]
    assert wait_for_status(client, session_id)[-1]["status"] == "completed"
    name = client.get(f"/api/v1/video/results/{session_id}").get_json()["data"]["video"]["filename"]
    for shown in (name, body["message"]):
        assert "/" not in shown and "\\" not in shown and "\x00" not in shown
        assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or c in "\u202e\u200f\u2066" for c in shown)
    root = app.extensions[EXTENSION_KEY].storage.root
    assert stored_entries(app) == [session_id]
    assert os.listdir(os.path.join(root, session_id)) == ["upload-0.bin"]
    assert_healthy(app)
    return name


@pytest.mark.parametrize("raw_name,expected", [
    ("../../../etc/passwd.mp4", "passwd.mp4"),
    ("..\\..\\windows\\system32\\clip.mp4", None),  # werkzeug reads backslashes as quoting
    ("/absolute/path/clip.mp4", "clip.mp4"),
    ("cl\x00ip.mp4", "clip.mp4"),
    ("tab\there\x7f\x85.mp4", "tabhere.mp4"),
    ("zero\u200bwidth\u2028.mp4", "zerowidth.mp4"),
    ("...", "video"),
    ("..", "video"),
    ("", "video"),
    ("evil\u202egpj.mp4", "evilgpj.mp4"),  # a right-to-left override would show "evil4pm.jpg"
    ("a" * 5000 + ".mp4", "a" * 196 + ".mp4"),
    ("<script>alert(1)</script>.mp4", "script>.mp4"),
])
def test_hostile_file_names_are_accepted_and_sanitised(app, client, media, raw_name, expected):
    response = post_files(client, files=[("video", media["mp4"], raw_name)])
    name = _accepted_name(app, client, response)
    assert expected is None or name == expected


def test_a_file_name_that_is_not_utf8_is_a_clear_400(app, live_server, media):
    body = multipart([(b"video", b"caf\xe9 \xff\xfe.mp4", media["mp4"])])
    response = raw_http(live_server, request_head(UPLOAD, len(body)), [body])
    assert "not UTF-8" in refused(app, response, 400)["error"]


# == parameters =============================================================================
@pytest.mark.parametrize("fields,field", [
    ({"params": "{not json"}, "params"),
    ({"params": "{'min_significance': 7}"}, "params"),
    ({"params": "[" * 100000}, "params"),
    ({"params": "[1, 2]"}, "params"),
    ({"params": "\"text\""}, "params"),
    ({"params": "7"}, "params"),
    ({"params": "null"}, "params"),
    ({"params": '{"segment_duration": NaN}'}, "params"),
    ({"params": '{"segment_duration": Infinity}'}, "params"),
    ({"params": '{"min_significance": -Infinity}'}, "params"),
    ({"params": '{"segment_duration": 1e400}'}, "segment_duration"),
    ({"params": json.dumps({"min_significance": 10 ** 400})}, "min_significance"),
    ({"params": '{"max_tokens": 1' + "0" * 5000 + "}"}, "params"),
    ({"params": json.dumps({"min_significance": 7.5})}, "min_significance"),
    ({"params": json.dumps({"min_significance": "7"}) .replace('"7"', "true")}, "min_significance"),
    ({"params": json.dumps({"min_significance": None})}, "min_significance"),
    ({"params": json.dumps({"max_highlights": [3]})}, "max_highlights"),
    ({"params": json.dumps({"frames_per_segment": {"n": 3}})}, "frames_per_segment"),
    ({"params": json.dumps({"system_prompt": 42})}, "system_prompt"),
    ({"params": json.dumps({"colour": "blue"})}, "colour"),
    ({"params": json.dumps({"max_tokens": 1025})}, "max_tokens"),
    ({"min_significance": "0"}, "min_significance"),
    ({"min_significance": "11"}, "min_significance"),
    ({"max_highlights": "101"}, "max_highlights"),
    ({"segment_duration": "0.5"}, "segment_duration"),
    ({"segment_duration": "600.5"}, "segment_duration"),
    ({"frames_per_segment": "65"}, "frames_per_segment"),
    ({"max_tokens": "0"}, "max_tokens"),
    ({"max_tokens": "-5"}, "max_tokens"),
    ({"min_significance": "seven"}, "min_significance"),
    ({"min_significance": "7.0"}, "min_significance"),
    ({"segment_duration": "NaN"}, "segment_duration"),
    ({"segment_duration": "inf"}, "segment_duration"),
    ({"segment_duration": "-Infinity"}, "segment_duration"),
    ({"segment_duration": "1e3"}, "segment_duration"),
    ({"min_significance": "1" + "0" * 400}, "min_significance"),
    ({"segment_duration": "9" * 5000}, "segment_duration"),
    ({"max_highlights": "0x10"}, "max_highlights"),
    ({"max_highlights": "\uff17"}, "max_highlights"),  # a full-width digit seven
    ({"analysis_type": "poetry"}, "analysis_type"),
    ({"analysis_type": "Highlights"}, "analysis_type"),
    ({"analysis_type": "x" * 10000}, "analysis_type"),
    ({"favourite_colour": "blue"}, "favourite_colour"),
    ({"x" * 5000: "1"}, "x" * 64),
    ({"system_prompt": "x" * (8 * 1024 + 1)}, "system_prompt"),
    ({"user_prompt": "\u20ac" * 3000}, "user_prompt"),  # 3000 characters, 9000 bytes
    ({"user_prompt": "look\x00here"}, "user_prompt"),
])
def test_bad_parameters_are_a_400_naming_the_field(app, client, media, fields, field):
    body = refused(app, post_files(client, files=[("video", media["mp4"], "clip.mp4")], **fields), 400, field=field)
    assert len(body["error"]) < 600  # the sentence quotes, it does not echo a huge value back


def test_a_field_sent_twice(app, client, media):
    data = {"video": (io.BytesIO(media["mp4"]), "clip.mp4"), "min_significance": ["3", "4"]}
    refused(app, client.post(UPLOAD, data=data, content_type="multipart/form-data"), 400, field="min_significance")


@pytest.mark.parametrize("url,fields,field", [
    ("/analyze/highlights", {"min_significance": "99"}, "min_significance"),
    ("/analyze/workout", {"segment_duration": "NaN"}, "segment_duration"),
    ("/analyze/workout", {"params": "[]"}, "params"),
])
def test_legacy_routes_refuse_bad_parameters_the_same_way(app, client, media, url, fields, field):
    refused(app, post_files(client, url, files=[("file", media["mp4"], "clip.mp4")], **fields), 400, field=field)


def test_a_bad_parameter_on_a_file_that_is_also_bad_is_refused_once_and_leaves_nothing(app, client, media):
    refused(app, post_files(client, files=[("video", media["random"], "x.mp4")], min_significance="99"), 400)


# == ids and methods ===========================================================================
MALFORMED_IDS = ["..", "%00", "%2e%2e", "x" * 10240, "1' OR '1'='1", "1;DROP TABLE sessions",
                 "..%2F..%2Fetc%2Fpasswd", "00000000-0000-4000-8000-000000000000",
                 str(uuid.uuid4()).upper(), str(uuid.uuid1()), "<script>alert(1)</script>"]


@pytest.mark.parametrize("bad_id", MALFORMED_IDS)
@pytest.mark.parametrize("method,route", [("get", "status"), ("get", "results"), ("post", "cancel"),
                                          ("delete", "cleanup")])
def test_malformed_and_unknown_ids_are_404(app, client, bad_id, method, route):
    body = refused(app, getattr(client, method)(f"/api/v1/video/{route}/{bad_id}"), 404)
    assert bad_id not in body["error"] or len(bad_id) < 3


@pytest.mark.parametrize("method,path,allowed", [
    ("get", UPLOAD, "POST"),
    ("put", UPLOAD, "POST"),
    ("delete", UPLOAD, "POST"),
    ("post", "/api/v1/video/status/{id}", "GET"),
    ("delete", "/api/v1/video/status/{id}", "GET"),
    ("post", "/api/v1/video/results/{id}", "GET"),
    ("get", "/api/v1/video/cancel/{id}", "POST"),
    ("delete", "/api/v1/video/cancel/{id}", "POST"),
    ("get", "/api/v1/video/cleanup/{id}", "DELETE"),
    ("post", "/api/v1/video/cleanup/{id}", "DELETE"),
    ("get", "/analyze/highlights", "POST"),
    ("delete", "/analyze/workout", "POST"),
    ("post", "/health", "GET"),
    ("post", "/api/v1/openapi.json", "GET"),
    ("post", "/", "GET"),
])
def test_a_wrong_method_is_405_with_allow(app, client, method, path, allowed):
    response = getattr(client, method)(path.format(id=uuid.uuid4()))
    body = refused(app, response, 405)
    assert allowed in response.headers["Allow"].split(", ")
    assert allowed in body["error"]


# -- session states ------------------------------------------------------------------------------
def _long_job(client, videos):
    response = upload(client, videos["long"], segment_duration="1")
    assert response.status_code == 202
    return response.get_json()["sessionId"]


def test_results_before_completion(app, client, videos):
    session_id = _long_job(client, videos)
    body = refused(app, client.get(f"/api/v1/video/results/{session_id}"), 400, keep=[session_id])
    assert body["sessionStatus"] in ("pending", "processing")
    client.post(f"/api/v1/video/cancel/{session_id}")


def test_cancel_after_completion_is_409(app, client, videos):
    session_id = upload(client, videos["short"]).get_json()["sessionId"]
    assert wait_for_status(client, session_id)[-1]["status"] == "completed"
    body = refused(app, client.post(f"/api/v1/video/cancel/{session_id}"), 409, keep=[session_id])
    assert body["sessionStatus"] == "completed"


def test_double_cancel_is_200_twice_and_results_say_cancelled(app, client, videos):
    session_id = _long_job(client, videos)
    for _ in range(2):
        response = client.post(f"/api/v1/video/cancel/{session_id}")
        assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
    body = refused(app, client.get(f"/api/v1/video/results/{session_id}"), 400, keep=[session_id])
    assert body["sessionStatus"] == "cancelled"


def test_cleanup_twice(app, client, videos):
    session_id = upload(client, videos["short"]).get_json()["sessionId"]
    wait_for_status(client, session_id)
    assert client.delete(f"/api/v1/video/cleanup/{session_id}").status_code == 200
    refused(app, client.delete(f"/api/v1/video/cleanup/{session_id}"), 404)


def test_cleanup_while_processing(app, client, videos):
    session_id = _long_job(client, videos)
    wait_for_status(client, session_id, statuses=("processing",))
    assert client.delete(f"/api/v1/video/cleanup/{session_id}").status_code == 200
    assert app.extensions[EXTENSION_KEY].jobs.wait(session_id, 10)
    refused(app, client.get(f"/api/v1/video/status/{session_id}"), 404)


def test_every_route_on_an_expired_session_is_404(make_app, videos):
    app = make_app(SESSION_TTL_SECONDS=1, SWEEP_INTERVAL_SECONDS=0.05)
    client = app.test_client()
    session_id = upload(client, videos["short"]).get_json()["sessionId"]
    assert wait_for_status(client, session_id)[-1]["status"] == "completed"
    deadline = time.monotonic() + 10
    while stored_entries(app) and time.monotonic() < deadline:
        time.sleep(0.05)
    for method, route in (("get", "status"), ("get", "results"), ("post", "cancel"), ("delete", "cleanup")):
        refused(app, getattr(client, method)(f"/api/v1/video/{route}/{session_id}"), 404)


def test_a_legacy_jobs_id_is_not_reachable_through_the_async_routes(app, client, videos):
    """A legacy request's job has an internal session; its id must not open anything."""
    import threading

    svc = app.extensions[EXTENSION_KEY]
    seen = []
    thread = threading.Thread(target=lambda: seen.append(
        upload(app.test_client(), videos["long"], url=LEGACY, segment_duration="1")))
    thread.start()
    deadline = time.monotonic() + 10
    while not svc.sessions.list() and time.monotonic() < deadline:
        time.sleep(0.01)
    (legacy,) = svc.sessions.list()
    for method, route in (("get", "status"), ("get", "results"), ("post", "cancel"), ("delete", "cleanup")):
        assert_problem(getattr(client, method)(f"/api/v1/video/{route}/{legacy.session_id}"), 404)
    svc.jobs.cancel(legacy.session_id)
    thread.join(30)
    assert stored_entries(app) == []


def test_a_part_header_of_a_megabyte(app, live_server, media):
    body = multipart([(b"video", b"a" * (1024 * 1024) + b".mp4", media["mp4"])])
    response = raw_http(live_server, request_head(UPLOAD, len(body)), [body])
    refused(app, response, 413)
