"""A benchmark job over HTTP, as a client of the async API does it: upload, poll, results, cleanup."""
from __future__ import annotations

import datetime as dt
import os
import time
from typing import Optional

import requests

from bench.settings import FRAME_SELECTION, FRAMES, MAX_TOKENS, SEGMENT_SECONDS

FINISHED = ("completed", "failed", "cancelled")


def job_params(**overrides) -> dict:
    params = {"analysis_type": "highlights", "segment_duration": SEGMENT_SECONDS, "frames_per_segment": FRAMES,
              "max_tokens": MAX_TOKENS, "min_significance": 1, "frame_selection": FRAME_SELECTION}
    params.update(overrides)
    return {k: str(v) for k, v in params.items()}


def upload(http: requests.Session, base: str, video: str, **params) -> str:
    with open(video, "rb") as handle:
        response = http.post(base + "/api/v1/video/upload", data=job_params(**params),
                             files={"video": (os.path.basename(video), handle, "video/mp4")}, timeout=600)
    if response.status_code != 202:
        raise RuntimeError(f"upload answered {response.status_code}: {response.text[:300]}")
    return response.json()["sessionId"]


def status(http: requests.Session, base: str, sid: str) -> dict:
    response = http.get(f"{base}/api/v1/video/status/{sid}", timeout=30)
    response.raise_for_status()
    return response.json()


def wait_status(http, base, sid, wanted=FINISHED, poll=0.02, timeout=3600) -> dict:
    """Poll every `poll` s until the session's status is one of `wanted` (the figures' own waits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = status(http, base, sid)
        if body["status"] in wanted:
            return body
        time.sleep(poll)
    raise RuntimeError(f"session {sid} did not reach {wanted} in {timeout:.0f} s")


def wait_finished(http: requests.Session, base: str, sid: str, poll: Optional[float] = None,
                  timeout: float = 7200) -> dict:
    """Poll until the job ends: after the Retry-After the server sends (1 s), as a well-behaved client does,
    or every `poll` s when given (experiment_p1.py compares the two)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = http.get(f"{base}/api/v1/video/status/{sid}", timeout=30)
        response.raise_for_status()
        body = response.json()
        if body["status"] in FINISHED:
            return body
        time.sleep(poll if poll is not None else float(response.headers.get("Retry-After", "1")))
    raise RuntimeError(f"session {sid} did not finish in {timeout:.0f} s")


def iso_seconds(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc).timestamp()


def run_job(base: str, video: str, poll: Optional[float] = None, **params) -> dict:
    """Upload, wait until completed; wall = server's finishedAt - the moment the upload started.

    The client polls every Retry-After (1 s), as the API asks: polling at
    50 Hz measurably slows a full-size job (bench/experiment_p1.py), and the
    server's finishedAt keeps the wall time exact to the millisecond anyway.
    """
    with requests.Session() as http:
        started_wall = time.time()
        started = time.perf_counter()
        sid = upload(http, base, video, **params)
        uploaded = time.perf_counter() - started
        body = wait_finished(http, base, sid, poll)
        observed = time.perf_counter() - started
        if body["status"] != "completed":
            raise RuntimeError(f"job {sid} {body['status']}: {body.get('error')}")
        result = http.get(f"{base}/api/v1/video/results/{sid}", timeout=60).json()["data"]
        http.delete(f"{base}/api/v1/video/cleanup/{sid}", timeout=60)
    return {
        "wall_seconds": iso_seconds(body["finishedAt"]) - started_wall,
        "observed_seconds": observed,
        "upload_seconds": uploaded,
        "engine_seconds": result["processing_time_seconds"],
        "segments": result["total_segments_analyzed"],
        "texts": [a["analysis"] for a in result["all_analyses"]],
        "analyses": result["all_analyses"],
        "highlights": result["highlights"],
    }
