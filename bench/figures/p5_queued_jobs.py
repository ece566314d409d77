"""P5 queued jobs: the worker's RSS with 1 running + 15 queued jobs / with 1 running job."""
from __future__ import annotations

import os
import time

import requests

from bench.client import status, upload, wait_status
from bench.settings import MIB
from bench.system import median_rss_mib
from tools.service_process import ServiceProcess


def p5_queued(server: ServiceProcess, long_video: str, queued_video: str, total_jobs: int = 16) -> dict:
    """Worker RSS with 1 running job vs 1 running + 15 queued (JOB_WORKERS=1)."""
    pid = server.worker_pid()
    http = requests.Session()
    first = upload(http, server.base, long_video, segment_duration=1)
    wait_status(http, server.base, first, wanted=("processing",), poll=0.01)
    time.sleep(1.0)
    rss_one = median_rss_mib(pid, 2.0)
    others = [upload(http, server.base, queued_video) for _ in range(total_jobs - 1)]
    time.sleep(0.5)
    states = [status(http, server.base, sid)["status"] for sid in [first] + others]
    rss_many = median_rss_mib(pid, 2.0)
    states_after = [status(http, server.base, sid)["status"] for sid in [first] + others]
    for sid in others + [first]:
        http.post(f"{server.base}/api/v1/video/cancel/{sid}", timeout=30)
    for sid in [first] + others:
        wait_status(http, server.base, sid)
        http.delete(f"{server.base}/api/v1/video/cleanup/{sid}", timeout=30)
    return {
        "growth_ratio": (rss_many - rss_one) / rss_one,
        "rss_one_job_mib": rss_one,
        "rss_16_jobs_mib": rss_many,
        "jobs": total_jobs,
        "states_while_measured": {s: states.count(s) for s in set(states)},
        "states_after_measured": {s: states_after.count(s) for s in set(states_after)},
        "queued_video": os.path.basename(queued_video),
        "queued_video_mib": os.path.getsize(queued_video) / MIB,
    }
