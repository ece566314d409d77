"""Large bodies are read in 1 MiB pieces, never past Content-Length, and arrive unchanged."""
import io
import os

import pytest
import requests

from tests.support.api import serve, wait_for_status
from tools.synthetic_video import write_video
from video_analysis.video import probe_video
from video_analysis.web.request_body import PIECE_BYTES, LargeBodyReads


class _SocketLikeBody:
    """A request body on a keep-alive connection: asking for more than is left is a bug (it would block)."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)
        self._left = len(data)
        self.asked = []

    def read(self, size):
        assert 0 < size <= self._left, f"asked for {size} bytes with {self._left} left"
        self.asked.append(size)
        chunk = self._data.read(min(size, 300_000))  # a socket gives what has arrived
        self._left -= len(chunk)
        return chunk


def _read_through_middleware(body: bytes, content_length: str, piece: int = 64 * 1024, **headers):
    socket_body = _SocketLikeBody(body)
    seen = {}

    def app(environ, start_response):
        stream, parts = environ["wsgi.input"], []
        remaining = len(body)
        while remaining:  # the way werkzeug's parser reads: fixed pieces, up to the length
            chunk = stream.read(min(piece, remaining))
            assert chunk
            parts.append(chunk)
            remaining -= len(chunk)
        seen["data"], seen["stream"] = b"".join(parts), stream
        return []

    LargeBodyReads(app)({"CONTENT_LENGTH": content_length, "wsgi.input": socket_body, **headers}, None)
    return seen, socket_body


def test_a_large_body_arrives_unchanged_in_1_mib_reads_and_never_past_its_length():
    body = os.urandom(3 * PIECE_BYTES + 12345)
    seen, socket_body = _read_through_middleware(body, str(len(body)))
    assert seen["data"] == body
    assert max(socket_body.asked) == PIECE_BYTES  # not the parser's 64 KiB
    assert sum(1 for size in socket_body.asked if size < 64 * 1024) <= 2  # only the tail is small


@pytest.mark.parametrize("content_length", ["1000", "", "not a number"])
def test_small_or_unsized_bodies_are_left_alone(content_length):
    body = os.urandom(1000)
    seen, socket_body = _read_through_middleware(body, content_length, piece=100)
    assert seen["data"] == body and seen["stream"] is socket_body


def test_a_chunked_body_is_left_alone_whatever_content_length_says():
    body = os.urandom(2 * PIECE_BYTES)
    seen, socket_body = _read_through_middleware(body, str(PIECE_BYTES + 1), HTTP_TRANSFER_ENCODING="chunked")
    assert seen["data"] == body and seen["stream"] is socket_body


def test_an_upload_over_1_mib_through_a_real_http_server_arrives_whole(make_app, tmp_path):
    video = write_video(str(tmp_path / "big.mp4"), duration=8, fps=25, size=(640, 360))
    assert os.path.getsize(video) > 2 * PIECE_BYTES
    app = make_app()
    with serve(app) as base, open(video, "rb") as handle:
        answer = requests.post(f"{base}/api/v1/video/upload", files={"video": handle},
                               data={"analysis_type": "highlights", "segment_duration": "60"}, timeout=60)
    assert answer.status_code == 202, answer.text
    session_id = answer.json()["sessionId"]
    client = app.test_client()  # the same app and session store, without another socket
    assert wait_for_status(client, session_id)[-1]["status"] == "completed"
    analysed = client.get(f"/api/v1/video/results/{session_id}").get_json()["data"]["video"]
    # A body cut short or shifted by a byte would not probe to the same video.
    assert {key: analysed[key] for key in ("frame_count", "width", "height", "fps")} == \
        {key: getattr(probe_video(video), key) for key in ("frame_count", "width", "height", "fps")}
