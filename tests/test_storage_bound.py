"""The storage bound (`MAX_STORAGE_MB`): what DATA_DIR keeps for sessions, plus what is being received, stays
under it. An upload that would pass it is a 507 with a sentence; whatever it wrote is deleted; cleanup and
expiry give the room back at once. Real files, and real HTTP servers where the wire matters.
"""
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.api import data_dir_entries, serve, stored_entries, upload
from video_analysis.config import STATE_DB_NAME
from tests.support.http import RawResponse, multipart, raw_http, request_head
from tests.support.problems import assert_problem
from tools.synthetic_video import write_video
from video_analysis.web.services import EXTENSION_KEY

MB = 1024 * 1024
UPLOAD = "/api/v1/video/upload"
LEGACY = "/analyze/highlights"


def held_bytes(data_dir: str) -> int:
    """The bytes of every file under DATA_DIR but the state database right now (files may vanish while it looks)."""
    total = 0
    for directory, _, names in os.walk(data_dir):
        for name in names:
            if directory == data_dir and name.startswith(STATE_DB_NAME):
                continue  # the state database: not uploads, not under MAX_STORAGE_MB
            try:
                total += os.path.getsize(os.path.join(directory, name))
            except FileNotFoundError:
                pass
    return total


def assert_storage_full(response, legacy=False):
    """A 507 problem whose sentence says what happened and what to do."""
    if isinstance(response, requests.Response):
        response = RawResponse(response.status_code, dict(response.headers), response.content)
    body = assert_problem(response, 507)
    assert "MAX_STORAGE_MB" in body["error"] and "cleanup" in body["error"], body
    if legacy:
        assert body["success"] is False
    return body


class Peak:
    """Samples what DATA_DIR holds, over and over, until stopped; keeps the largest figure."""

    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.002):
            self.most = max(self.most, held_bytes(self.data_dir))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join(10)


def test_uploads_cancelled_at_once_stop_at_the_bound_with_507_and_cleanup_makes_room_again(start_service, tmp_path):
    """Issue 14 #8, against a real gunicorn: 48 uploads by 4 clients, each cancelled at once, with a 2 MB bound."""
    video = write_video(str(tmp_path / "clip.mp4"), duration=24, fps=10)
    with open(video, "rb") as handle:
        blob = handle.read()
    assert 200_000 < len(blob) < 400_000  # about 7 fit in 2 MB
    server = start_service(env={"MAX_STORAGE_MB": "2", "MAX_QUEUED_JOBS": "64"})
    data_dir = server.data_dir

    def upload_and_cancel(_):
        response = requests.post(server.base + UPLOAD, files={"video": ("clip.mp4", blob)}, timeout=60)
        if response.status_code == 202:
            session_id = response.json()["sessionId"]
            assert requests.post(f"{server.base}/api/v1/video/cancel/{session_id}", timeout=30).status_code == 200
            return session_id, response
        return None, response

    with Peak(data_dir) as peak, ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(upload_and_cancel, range(48)))
    statuses = sorted({response.status_code for _, response in outcomes})
    assert statuses == [202, 507], [r.text for _, r in outcomes if r.status_code not in (202, 507)]
    for _, response in outcomes:
        if response.status_code == 507:
            assert_storage_full(response)
            assert data_dir not in response.text
    kept = [session_id for session_id, _ in outcomes if session_id]
    assert peak.most <= 2 * MB, f"DATA_DIR held {peak.most} bytes"
    assert data_dir_entries(data_dir) == sorted(kept)
    assert held_bytes(data_dir) == len(kept) * len(blob) <= 2 * MB

    # Full: the legacy route says so the same way, and a declared length is refused before any body is sent.
    response = requests.post(server.base + LEGACY, files={"video": ("clip.mp4", blob)}, timeout=60)
    assert_storage_full(response, legacy=True)
    head_only = raw_http(server.base, request_head(UPLOAD, len(blob) + 500), timeout=20)
    assert_storage_full(head_only)
    assert data_dir_entries(data_dir) == sorted(kept)

    # Cleaning up one session makes room for the next upload at once.
    assert requests.delete(f"{server.base}/api/v1/video/cleanup/{kept[0]}", timeout=30).status_code == 200
    again, response = upload_and_cancel(0)
    assert response.status_code == 202, response.text
    assert data_dir_entries(data_dir) == sorted(kept[1:] + [again])
    assert held_bytes(data_dir) <= 2 * MB
    assert "Traceback" not in server.log()


def chunked(payload: bytes, piece: int = 65536) -> list:
    return [b"%x\r\n" % len(payload[i:i + piece]) + payload[i:i + piece] + b"\r\n"
            for i in range(0, len(payload), piece)] + [b"0\r\n\r\n"]


@pytest.mark.parametrize("url", [UPLOAD, LEGACY])
def test_a_chunked_upload_over_the_bound_is_cut_off_with_507_and_leaves_no_file(make_app, videos, url):
    app = make_app(MAX_STORAGE_MB=1)
    payload = multipart([(b"video", b"big.mp4", os.urandom(3 * MB))])
    with serve(app) as base:
        head = request_head(url, None, extra=b"Transfer-Encoding: chunked\r\n")
        response = raw_http(base, head, chunked(payload))
    assert_storage_full(response, legacy=url == LEGACY)
    assert stored_entries(app) == []
    # What it had taken is given back: a video that fits is accepted.
    assert upload(app.test_client(), videos["short"]).status_code == 202


def test_a_declared_length_over_what_is_left_is_refused_before_the_body_is_sent(make_app, videos):
    """The request's head alone is sent: a server that waited for the body would never answer."""
    app = make_app(MAX_STORAGE_MB=1)
    with serve(app) as base:
        response = raw_http(base, request_head(UPLOAD, MB + 1), timeout=20)
        assert_storage_full(response)
        assert stored_entries(app) == []
        # A request that fits is still accepted.
        body = multipart([(b"video", b"clip.mp4", open(videos["short"], "rb").read())])
        response = raw_http(base, request_head(UPLOAD, len(body)), [body])
        assert response.status_code == 202, response.get_data(as_text=True)


def test_expiry_gives_the_room_back(make_app, videos):
    app = make_app(MAX_STORAGE_MB=1)
    client = app.test_client()
    svc = app.extensions[EXTENSION_KEY]
    kept = []
    for _ in range(40):
        response = upload(client, videos["short"])
        if response.status_code != 202:
            break
        kept.append(response.get_json()["sessionId"])
        assert client.post(f"/api/v1/video/cancel/{kept[-1]}").status_code == 200
    assert_storage_full(response)
    assert 10 <= len(kept) < 40 and stored_entries(app) == sorted(kept)
    for session_id in kept:  # cancelled sessions end at once; their TTL passes
        svc.jobs.wait(session_id, 30)
    svc.sessions.ttl_seconds = 0
    assert svc.sweeper.sweep() == len(kept)
    assert stored_entries(app) == []
    for _ in range(len(kept)):
        assert upload(client, videos["short"]).status_code == 202


def test_the_bound_counts_uploads_kept_by_sessions_not_the_requests_form_fields(make_app, videos, tmp_path):
    """After a refusal, DATA_DIR and the bound agree: what the sessions keep is exactly their files."""
    size = os.path.getsize(videos["short"])
    app = make_app(MAX_STORAGE_MB=1)
    client = app.test_client()
    accepted = 0
    for _ in range(40):
        response = upload(client, videos["short"], user_prompt="x" * 4000)
        if response.status_code != 202:
            break
        accepted += 1
        client.post(f"/api/v1/video/cancel/{response.get_json()['sessionId']}")
    assert_storage_full(response)
    # 4 KB of prompt per request is never stored: the count is what the files alone allow, give or take one.
    assert accepted in (MB // size - 1, MB // size)
    assert held_bytes(app.extensions[EXTENSION_KEY].storage.root) == accepted * size


# -- configuration -----------------------------------------------------------------------------------
def test_max_storage_mb_is_read_from_the_environment_and_checked(monkeypatch):
    from video_analysis.config import Config

    monkeypatch.delenv("MAX_STORAGE_MB", raising=False)
    assert Config.from_env().MAX_STORAGE_MB is None  # half the free space at start
    for raw, value in (("", None), ("0", 0), ("512", 512)):
        monkeypatch.setenv("MAX_STORAGE_MB", raw)
        assert Config.from_env().MAX_STORAGE_MB == value
    for raw in ("-1", "lots", "1.5"):
        monkeypatch.setenv("MAX_STORAGE_MB", raw)
        with pytest.raises(SystemExit, match="MAX_STORAGE_MB"):
            Config.from_env()


def test_the_default_bound_is_half_the_free_space_at_start_and_zero_means_none(tmp_path):
    from video_analysis.jobs.storage import Storage

    default = Storage(str(tmp_path / "default"))
    default.prepare()
    free = shutil.disk_usage(default.root).free
    assert abs(default.limit - free // 2) < free // 20  # other processes write to this disk too
    unbounded = Storage(str(tmp_path / "unbounded"), 0)
    unbounded.prepare()
    assert unbounded.limit is None
    bounded = Storage(str(tmp_path / "bounded"), 3)
    bounded.prepare()
    assert bounded.limit == 3 * MB
