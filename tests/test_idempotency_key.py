"""`Idempotency-Key` on POST /api/v1/video/upload (issue 16 #5), on a real app and the tiny model.

Same key + same bytes and fields: the first answer again, no second job or file. Same key while the
first is still arriving: 409. Same key, other file or fields: 422. Malformed: 400.
"""
import socket
import time
import uuid

import pytest
import requests

from tests.support.api import serve, stored_entries, upload, wait_for_status
from tests.support.http import host_port, multipart, raw_http, request_head
from tests.support.problems import assert_problem
from tools.synthetic_video import write_video
from video_analysis.web.services import EXTENSION_KEY


def send(client, video, key, **fields):
    return upload(client, video, headers={"Idempotency-Key": key}, **fields)


def test_the_same_upload_again_gets_the_first_answer_and_no_second_job(app, client, videos):
    key = str(uuid.uuid4())
    first = send(client, videos["short"], key, segment_duration="3")
    assert first.status_code == 202
    again = send(client, videos["short"], key, segment_duration="3")
    assert again.status_code == 202
    assert again.get_json()["sessionId"] == first.get_json()["sessionId"]
    assert again.headers["Location"] == first.headers["Location"]
    assert stored_entries(app) == [first.get_json()["sessionId"]]  # one file, no second
    assert len(app.extensions[EXTENSION_KEY].sessions.list()) == 1  # one job
    wait_for_status(client, first.get_json()["sessionId"])
    once_done = send(client, videos["short"], key, segment_duration="3")  # also after it has finished
    assert once_done.status_code == 202 and once_done.get_json()["sessionId"] == first.get_json()["sessionId"]
    assert once_done.get_json() == first.get_json()  # the first answer again, word for word


def test_the_key_quoted_as_the_draft_writes_it_is_the_same_key(client, videos):
    first = send(client, videos["short"], "order-7")
    again = send(client, videos["short"], '"order-7"')
    assert again.get_json()["sessionId"] == first.get_json()["sessionId"]


@pytest.mark.parametrize("change", ["file", "field", "extra field"])
def test_the_same_key_with_another_file_or_fields_is_a_422(app, client, videos, change):
    key = str(uuid.uuid4())
    first = send(client, videos["short"], key, segment_duration="3")
    assert first.status_code == 202
    if change == "file":
        response = send(client, videos["long"], key, segment_duration="3")
    elif change == "field":
        response = send(client, videos["short"], key, segment_duration="4")
    else:
        response = send(client, videos["short"], key, segment_duration="3", max_highlights="2")
    problem = assert_problem(response, 422)
    assert problem["field"] == "Idempotency-Key" and "new key" in problem["error"]
    assert stored_entries(app) == [first.get_json()["sessionId"]]  # the refused retry left nothing


@pytest.mark.parametrize("key", ["", "é", "a" * 256, "tab\there", '""', '"a2", "a3"', '"a4", b4', '"a\\x"',
                                 '"unclosed'])
def test_a_malformed_key_is_a_400_and_nothing_is_stored(app, client, videos, key):
    problem = assert_problem(send(client, videos["short"], key), 400)
    assert problem["field"] == "Idempotency-Key" and "printable ASCII" in problem["error"]
    assert stored_entries(app) == []


def test_two_key_headers_in_one_request_are_a_400(app, videos):
    with open(videos["short"], "rb") as handle:
        body = multipart([(b"video", b"clip.mp4", handle.read())])
    with serve(app) as base:
        head = request_head("/api/v1/video/upload", len(body), extra=b"Idempotency-Key: a\r\nIdempotency-Key: b\r\n")
        reply = raw_http(base, head, [body])
    problem = assert_problem(reply, 400)
    assert problem["field"] == "Idempotency-Key" and "sent once" in problem["error"]
    assert stored_entries(app) == []


def test_the_same_key_while_the_first_upload_is_still_arriving_is_a_409(app, tmp_path):
    key = str(uuid.uuid4())
    # Half of it must be more than the form parser reads at once (64 KiB), or nothing is spooled yet to wait for.
    video = write_video(str(tmp_path / "clip.mp4"), duration=6, fps=10, size=(320, 240))
    with open(video, "rb") as handle:
        data = handle.read()
    body = multipart([(b"video", b"clip.mp4", data)])
    with serve(app) as base:
        connection = socket.create_connection(host_port(base), timeout=10)
        try:
            head = request_head("/api/v1/video/upload", len(body), extra=f"Idempotency-Key: {key}\r\n".encode())
            connection.sendall(head + body[: len(body) // 2])  # the first upload, half sent
            deadline = time.monotonic() + 10
            while not stored_entries(app) and time.monotonic() < deadline:  # its spool exists once its key is held
                time.sleep(0.02)
            assert stored_entries(app), "the half-sent upload was never spooled"
            second = requests.post(base + "/api/v1/video/upload", files={"video": ("clip.mp4", data)},
                                   headers={"Idempotency-Key": key}, timeout=30)
            assert second.status_code == 409, second.text
            assert "still being received" in second.json()["error"]
            connection.sendall(body[len(body) // 2:])  # the first one ends, and is accepted
            reply = connection.recv(65536)
            assert reply.startswith(b"HTTP/1.1 202"), reply[:200]
        finally:
            connection.close()
        third = requests.post(base + "/api/v1/video/upload", files={"video": ("clip.mp4", data)},
                              headers={"Idempotency-Key": key}, timeout=30)
    assert third.status_code == 202
    assert stored_entries(app) == [third.json()["sessionId"]]


def test_a_key_is_forgotten_with_its_session(client, videos):
    key = str(uuid.uuid4())
    first = send(client, videos["short"], key).get_json()["sessionId"]
    wait_for_status(client, first)
    assert client.delete(f"/api/v1/video/cleanup/{first}").status_code == 200
    second = send(client, videos["short"], key)
    assert second.status_code == 202 and second.get_json()["sessionId"] != first


def test_legacy_routes_ignore_the_header(client, videos):
    for _ in range(2):
        response = send(client, videos["short"], "same", url="/analyze/highlights")
        assert response.status_code == 200 and response.get_json()["success"] is True
