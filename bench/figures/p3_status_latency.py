"""P3 status latency: p50/p99 of GET /status from 50 pollers while a job runs (clients in bench/pollers.py)."""
from __future__ import annotations

from typing import Optional

import requests

from bench.client import status, upload, wait_status
from bench.pollers import combine_windows, poll_one_thread, poll_threads
from bench.system import say
from tools.service_process import ServiceProcess


def p3_status_latency(server: ServiceProcess, long_video: str, short_video: str, seconds: float, pollers: int = 50,
                      interval: float = 0.25, idle_job: Optional[dict] = None, **job) -> dict:
    """GET /status latency: 50 pollers every `interval` s, first with the server idle, then while a job runs.

    The job is an ordinary highlights job (8 frames, 32 tokens per segment)
    with 1 s segments, so it is still running when both windows end; it is
    cancelled afterwards. The figure comes from the one-thread client; the
    thread-per-poller client polls the same job for as long
    (`threaded_client`; bench/pollers.py says why both). The two take turns,
    two windows of half the time each, so both see the same phases of the job.
    """
    http = requests.Session()
    done = upload(http, server.base, short_video, **(idle_job or {}))
    wait_status(http, server.base, done)
    idle = poll_one_thread(f"{server.base}/api/v1/video/status/{done}", pollers, interval, seconds)
    http.delete(f"{server.base}/api/v1/video/cleanup/{done}", timeout=30)
    sid = upload(http, server.base, long_video, **(job or {"segment_duration": 1}))
    # (the idle window above polled a finished 1-segment job; these poll the running job)
    wait_status(http, server.base, sid, wanted=("processing",), poll=0.01)
    url = f"{server.base}/api/v1/video/status/{sid}"
    one_thread, threads = [], []
    for _ in range(2):
        one_thread.append(poll_one_thread(url, pollers, interval, seconds / 2, keep_latencies=True))
        threads.append(poll_threads(url, pollers, interval, seconds / 2, keep_latencies=True))
    busy, threaded = combine_windows(one_thread), combine_windows(threads)
    for name, result in (("idle", idle), ("one-thread", busy), ("thread-per-poller", threaded)):
        if result["errors"]:
            say(f"  P3 {name} client: {result['errors']} failed polls {result['error_kinds']} (not in the percentiles)")
    after = status(http, server.base, sid)
    if after["status"] != "processing":
        say(f"  P3: the job ended ({after['status']}) before the windows did: part of the figure is an idle server")
    http.post(f"{server.base}/api/v1/video/cancel/{sid}", timeout=30)
    wait_status(http, server.base, sid, poll=0.1)
    http.delete(f"{server.base}/api/v1/video/cleanup/{sid}", timeout=30)
    return {
        **busy,
        "idle": idle,
        "threaded_client": threaded,
        "pollers": pollers,
        "interval_seconds": interval,
        "window_seconds": seconds,
        "job_still_running_at_end": after["status"] == "processing",
        "job_segments_done_at_end": after["segmentsDone"],
    }
