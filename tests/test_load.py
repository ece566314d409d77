"""Load: hundreds of mixed requests from 32 concurrent clients against a real gunicorn on the tiny model.

Run with `make test-load` (`pytest -m load`). Passes when: no response is a
5xx; every session ends as asked (cancelled ones `cancelled`, the others
`completed`); every completed job's results belong to its own upload (its
file name, its segment count); and once every session is cleaned up,
DATA_DIR is empty. The figures are printed at the end.
"""
import math
import os
import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.api import data_dir_entries

pytestmark = pytest.mark.load

CONCURRENCY = 32
POLL_SECONDS = 0.1
SCENARIO_TIMEOUT = 120.0


class Recorder:
    """Every request made, by status; a thread-local HTTP session per client thread."""

    def __init__(self, base: str):
        self.base = base
        self.statuses = Counter()
        self.server_errors = []
        self._lock = threading.Lock()
        self._local = threading.local()

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        http = getattr(self._local, "http", None)
        if http is None:
            http = self._local.http = requests.Session()
        response = http.request(method, self.base + path, timeout=60, **kwargs)
        with self._lock:
            self.statuses[response.status_code] += 1
            if response.status_code >= 500:
                self.server_errors.append((method, path, response.status_code, response.text[:300]))
        return response

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


def _upload(rec, video, name, **fields):
    with open(video, "rb") as handle:
        return rec.request("POST", "/api/v1/video/upload", files={"video": (name, handle)}, data=fields)


def _poll(rec, session_id):
    deadline = time.monotonic() + SCENARIO_TIMEOUT
    while time.monotonic() < deadline:
        body = rec.request("GET", f"/api/v1/video/status/{session_id}").json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"{session_id} did not finish in {SCENARIO_TIMEOUT} s")


def complete(rec, video, index):
    """Upload, poll to the end, check the results are this upload's."""
    segment = random.Random(index).choice([2, 3, 6])
    name = f"clip-{index}.mp4"
    response = _upload(rec, video, name, segment_duration=str(segment), min_significance="1")
    assert response.status_code == 202, response.text
    session_id = response.json()["sessionId"]
    final = _poll(rec, session_id)
    assert final["status"] == "completed", final
    data = rec.request("GET", f"/api/v1/video/results/{session_id}").json()["data"]
    expected = math.ceil(6 / segment)
    assert data["video"]["filename"] == name and data["video"]["frame_count"] == 60
    assert data["settings"]["segment_duration"] == segment
    assert data["total_segments_analyzed"] == len(data["all_analyses"]) == expected
    assert [a["segment"] for a in data["all_analyses"]] == list(range(1, expected + 1))
    return ("keep", session_id)


def cancel(rec, video, index):
    response = _upload(rec, video, f"long-{index}.mp4", segment_duration="1")
    assert response.status_code == 202, response.text
    session_id = response.json()["sessionId"]
    for _ in range(2):  # idempotent
        answer = rec.request("POST", f"/api/v1/video/cancel/{session_id}")
        assert answer.status_code == 200 and answer.json()["status"] == "cancelled", answer.text
    assert _poll(rec, session_id)["status"] == "cancelled"
    assert rec.request("GET", f"/api/v1/video/results/{session_id}").status_code == 400
    return ("keep", session_id)


def cleanup_early(rec, video, index):
    response = _upload(rec, video, f"gone-{index}.mp4")
    assert response.status_code == 202, response.text
    session_id = response.json()["sessionId"]
    assert rec.request("DELETE", f"/api/v1/video/cleanup/{session_id}").status_code == 200
    assert rec.request("GET", f"/api/v1/video/status/{session_id}").status_code == 404
    return ("gone", session_id)


def legacy(rec, video, index):
    workout = index % 3 == 0
    url = "/analyze/workout" if workout else "/analyze/highlights"
    with open(video, "rb") as handle:
        response = rec.request("POST", url, files={"file": (f"legacy-{index}.mp4", handle)},
                               data={"segment_duration": "3"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["data"]["total_segments_analyzed"] == 2
    assert body["data"]["video"]["filename"] == f"legacy-{index}.mp4"
    return ("legacy", None)


def junk(rec, _video, index):
    response = rec.request("POST", "/api/v1/video/upload",
                           files={"video": (f"junk-{index}.mp4", os.urandom(8192))})
    assert response.status_code == 415, response.text
    return ("refused", None)


def glance(rec, _video, _index):
    assert rec.request("GET", "/health").json()["status"] == "healthy"
    assert rec.request("GET", f"/api/v1/video/status/{uuid.uuid4()}").status_code == 404
    assert rec.request("GET", "/api/v1/openapi.json").status_code == 200
    return ("glance", None)


def test_mixed_load_leaves_no_error_and_no_file(start_service, videos):
    server = start_service(env={"MAX_QUEUED_JOBS": "256", "HTTP_THREADS": str(CONCURRENCY + 8), "JOB_WORKERS": "2"})
    plan = ([(complete, videos["short"])] * 48 + [(cancel, videos["long"])] * 16
            + [(cleanup_early, videos["short"])] * 12 + [(legacy, videos["short"])] * 12
            + [(junk, None)] * 12 + [(glance, None)] * 20)
    random.Random(5).shuffle(plan)
    rec = Recorder(server.base)
    started = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        futures = [pool.submit(kind, rec, video, index) for index, (kind, video) in enumerate(plan)]
        outcomes = [future.result(timeout=SCENARIO_TIMEOUT + 60) for future in futures]
    kept = [session_id for what, session_id in outcomes if what == "keep"]
    for session_id in kept:
        assert rec.request("DELETE", f"/api/v1/video/cleanup/{session_id}").status_code == 200
    wall = time.monotonic() - started
    health = rec.request("GET", "/health").json()
    left = data_dir_entries(server.data_dir)
    print(f"\nload: {rec.total} requests ({len(plan)} scenarios) from {CONCURRENCY} concurrent clients "
          f"in {wall:.1f} s; statuses {dict(sorted(rec.statuses.items()))}; "
          f"5xx: {len(rec.server_errors)}; sessions {len(kept) + 12}; files left: {len(left)}")
    assert rec.server_errors == []
    assert rec.total >= 200
    assert left == []
    assert health["queue"] == {"pending": 0, "processing": 0}
    server.stop()
    assert "Traceback" not in server.log()  # nor while it stopped
