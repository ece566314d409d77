"""End-to-end checks of a running service over real HTTP.

Two ways to run the same checks:
- as a script against any running server (prints one line per check, exits
  non-zero on any failure):
      python test_async_api.py --base-url http://127.0.0.1:5000
- under pytest, which starts the app itself on the tiny model (`live_server`).

Each check is a function taking a `Context`; it raises AssertionError on failure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List

import pytest
import requests

from tools.synthetic_video import write_video

TERMINAL = ("completed", "failed", "cancelled")


@dataclass
class Context:
    base_url: str
    videos: Dict[str, str]
    timeout: float = 600.0
    say: Callable[[str], None] = lambda line: None
    http: requests.Session = field(default_factory=requests.Session)

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def upload(self, video: str, route: str = "/api/v1/video/upload", field_name: str = "video", headers=None,
               **fields):
        with open(self.videos[video], "rb") as handle:
            return self.http.post(self.url(route), files={field_name: (os.path.basename(self.videos[video]), handle)},
                                  data=fields, headers=headers, timeout=self.timeout)

    def poll(self, session_id: str, until=TERMINAL) -> List[dict]:
        seen, deadline = [], time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            response = self.http.get(self.url(f"/api/v1/video/status/{session_id}"), timeout=30)
            assert response.status_code == 200, f"status answered {response.status_code}"
            body = response.json()
            if not seen or body["progress"] != seen[-1]["progress"]:
                self.say(f"    {body['status']:<10} {body['progress']:5.1f}%  {body['message']}")
            seen.append(body)
            if body["status"] in until:
                return seen
            time.sleep(0.1)
        raise AssertionError(f"session {session_id} did not reach {until} in {self.timeout:.0f} s")


def make_videos(directory: str) -> Dict[str, str]:
    return {
        "short": write_video(os.path.join(directory, "check.mp4"), duration=8, fps=10),
        "long": write_video(os.path.join(directory, "long.mp4"), duration=120, fps=2, size=(96, 72)),
        "text": _write(os.path.join(directory, "notes.mp4"), b"this is not a video\n" * 64),
    }


def _write(path: str, content: bytes) -> str:
    with open(path, "wb") as handle:
        handle.write(content)
    return path


def _problem(response, status: int) -> dict:
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text[:200]}"
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["error"] == body["detail"] and body["status"] == status
    return body


# -- the checks ----------------------------------------------------------------------
def check_health(ctx: Context) -> None:
    body = ctx.http.get(ctx.url("/health"), timeout=30).json()
    assert body["status"] == "healthy", body
    assert body["model"]["loaded"] is True and {"pending", "processing"} <= set(body["queue"])


def check_upload_status_results(ctx: Context) -> None:
    response = ctx.upload("short", segment_duration="4", min_significance="1")
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["Location"] == body["statusUrl"]
    seen = ctx.poll(body["sessionId"])
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress), "progress went backwards"
    assert seen[-1]["status"] == "completed" and progress[-1] == 100, seen[-1]
    results = ctx.http.get(ctx.url(body["resultsUrl"]), timeout=30).json()
    assert results["data"] == results["results"]
    assert results["data"]["total_segments_analyzed"] == 2
    assert results["data"]["video"]["filename"] == "check.mp4"
    ctx.http.delete(ctx.url(f"/api/v1/video/cleanup/{body['sessionId']}"), timeout=30)


def check_cancel(ctx: Context) -> None:
    session_id = ctx.upload("long", segment_duration="1").json()["sessionId"]
    response = ctx.http.post(ctx.url(f"/api/v1/video/cancel/{session_id}"), timeout=30)
    assert response.status_code == 200 and response.json()["status"] == "cancelled", response.text
    assert ctx.poll(session_id)[-1]["status"] == "cancelled"
    body = _problem(ctx.http.get(ctx.url(f"/api/v1/video/results/{session_id}"), timeout=30), 400)
    assert body["sessionStatus"] == "cancelled"
    again = ctx.http.post(ctx.url(f"/api/v1/video/cancel/{session_id}"), timeout=30)
    assert again.status_code == 200, "a second cancel must be accepted"
    ctx.http.delete(ctx.url(f"/api/v1/video/cleanup/{session_id}"), timeout=30)


def check_cleanup(ctx: Context) -> None:
    session_id = ctx.upload("short", segment_duration="8").json()["sessionId"]
    ctx.poll(session_id)
    response = ctx.http.delete(ctx.url(f"/api/v1/video/cleanup/{session_id}"), timeout=30)
    assert response.status_code == 200, response.text
    _problem(ctx.http.get(ctx.url(f"/api/v1/video/status/{session_id}"), timeout=30), 404)
    _problem(ctx.http.delete(ctx.url(f"/api/v1/video/cleanup/{session_id}"), timeout=30), 404)


def check_partial_results(ctx: Context) -> None:
    session_id = ctx.upload("long", segment_duration="4").json()["sessionId"]
    url = ctx.url(f"/api/v1/video/results/{session_id}")
    counts = []
    while True:
        body = ctx.http.get(url + "?partial=true", timeout=30).json()
        if not body["partial"]:
            break
        counts.append(body["data"]["total_segments_analyzed"])
        assert len(body["data"]["all_analyses"]) == counts[-1]
        time.sleep(0.05)
    assert counts == sorted(counts), f"partial results shrank: {counts}"
    final = ctx.http.get(url, timeout=30).json()
    assert body == dict(final, partial=False)
    assert final["data"]["total_segments_analyzed"] == 30
    ctx.http.delete(ctx.url(f"/api/v1/video/cleanup/{session_id}"), timeout=30)


def check_idempotency_key(ctx: Context) -> None:
    key = {"Idempotency-Key": f"check-{time.time_ns()}"}
    first = ctx.upload("short", headers=key, segment_duration="8")
    again = ctx.upload("short", headers=key, segment_duration="8")
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert again.json()["sessionId"] == first.json()["sessionId"], "a retry made a second session"
    _problem(ctx.upload("short", headers=key, segment_duration="4"), 422)
    ctx.poll(first.json()["sessionId"])
    ctx.http.delete(ctx.url(f"/api/v1/video/cleanup/{first.json()['sessionId']}"), timeout=30)


def check_bad_upload(ctx: Context) -> None:
    body = _problem(ctx.upload("text"), 415)
    assert "video" in body["error"]
    _problem(ctx.upload("short", min_significance="eleven"), 400)


def check_legacy_highlights(ctx: Context) -> None:
    response = ctx.upload("short", route="/analyze/highlights", segment_duration="8", min_significance="1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["analysis_type"] == "highlights"
    assert "highlights" in body["data"] and body["data"]["total_segments_analyzed"] == 1


def check_legacy_workout(ctx: Context) -> None:
    response = ctx.upload("short", route="/analyze/workout", field_name="file", segment_duration="4")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["analysis_type"] == "workout_timestamps"
    assert len(body["data"]["segment_analyses"]) == 2 and "summary" in body["data"]


def check_thumbnails_and_reel(ctx: Context) -> None:
    response = ctx.upload("short", segment_duration="4", min_significance="1", reel="true")
    assert response.status_code == 202, response.text
    session_id = response.json()["sessionId"]
    final = ctx.poll(session_id)[-1]
    assert final["status"] == "completed", final
    data = ctx.http.get(ctx.url(f"/api/v1/video/results/{session_id}"), timeout=30).json()["data"]
    for n, highlight in enumerate(data["highlights"]):
        assert highlight["thumbnailUrl"] == f"/api/v1/video/thumbnail/{session_id}/{n}.jpg", highlight
        picture = ctx.http.get(ctx.url(highlight["thumbnailUrl"]), timeout=30)
        assert picture.status_code == 200 and picture.headers["Content-Type"] == "image/jpeg"
        assert picture.content[:2] == b"\xff\xd8" and picture.headers.get("ETag")  # a JPEG's first bytes
    if data["highlights"]:  # the tiny model may score nothing readable: then there is nothing for a reel
        assert data["reelUrl"] == f"/api/v1/video/reel/{session_id}.mp4" and data["reelDuration"] > 0, data
        first = ctx.http.get(ctx.url(data["reelUrl"]), headers={"Range": "bytes=0-99"}, timeout=30)
        assert first.status_code == 206 and len(first.content) == 100 and first.content[4:8] == b"ftyp"
        assert first.headers["Content-Range"] == f"bytes 0-99/{data['reelSize']}"
    else:
        assert data["reelUrl"] is None and "nothing to put in it" in final["message"], final
    ctx.http.delete(ctx.url(f"/api/v1/video/cleanup/{session_id}"), timeout=30)
    assert ctx.http.get(ctx.url(f"/api/v1/video/reel/{session_id}.mp4"), timeout=30).status_code == 404


CHECKS = [check_health, check_upload_status_results, check_partial_results, check_idempotency_key, check_cancel,
          check_cleanup, check_bad_upload, check_thumbnails_and_reel, check_legacy_highlights, check_legacy_workout]


# -- pytest ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def check_videos(tmp_path_factory):
    return make_videos(str(tmp_path_factory.mktemp("api-check-videos")))


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_check_against_a_live_server(live_server, check_videos, check):
    check(Context(live_server, check_videos, timeout=120))


# -- script ------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Check a running video analysis service end to end.")
    parser.add_argument("--base-url", default="http://127.0.0.1:5000")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for one analysis")
    args = parser.parse_args(argv)
    failures = 0
    with tempfile.TemporaryDirectory() as directory:
        ctx = Context(args.base_url, make_videos(directory), args.timeout, say=print)
        for check in CHECKS:
            started = time.monotonic()
            try:
                check(ctx)
            except (AssertionError, requests.RequestException, json.JSONDecodeError, KeyError) as error:
                failures += 1
                print(f"FAIL {check.__name__} ({time.monotonic() - started:.1f} s): {error}")
            else:
                print(f"PASS {check.__name__} ({time.monotonic() - started:.1f} s)")
    print(f"{len(CHECKS) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
