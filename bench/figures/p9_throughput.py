"""P9 throughput in cluster mode: videos per minute with 2 model workers ÷ with 1, on the same machine.

A batch is what a busy cluster sees: one client uploads `videos` copies of
the same video one after the other, as fast as the API takes them (the
first jobs start while the rest upload), then polls every session after the
Retry-After the server sends until all have ended. Its time runs from the
first upload's start to the last job's `finishedAt` (the worker's clock,
this machine's), so polling does not round it. The two sides alternate
1, 2, 2, 1, 1, 2, ... workers (a worker is started or stopped between them,
and every worker has run a job since it started before its batch counts);
each pair gives one ratio, and the figure is their median. Each batch also
counts the CPU time its parts used (the workers, the API node's processes,
redis-server, this client): with every part on the same 2 cores, that says
how far from 2x the machine itself allows.
"""
from __future__ import annotations

import collections
import os
import statistics
import time
from typing import Dict, List, Optional

import requests

from bench.client import FINISHED, iso_seconds, upload, wait_status
from bench.server import ClusterService
from bench.system import cpu_seconds, say


def _warm(cluster: ClusterService, video: str, warmed: set, tries: int = 5) -> None:
    """Until every running worker has run a job since it started (the first generate compiles mlx's kernels).

    As many short jobs as there are workers go in at once, so an idle worker takes each; which worker ran a job
    is in its status ("worker").
    """
    names = {worker.name for worker in cluster.workers}
    with requests.Session() as http:
        for _ in range(tries):
            if names <= warmed:
                return
            sids = [upload(http, cluster.base, video) for _ in cluster.workers]
            for sid in sids:
                body = wait_status(http, cluster.base, sid, poll=0.05)
                if body["status"] != "completed":
                    raise RuntimeError(f"warm-up job {sid} {body['status']}: {body.get('error')}")
                warmed.add(body["worker"])
                http.delete(f"{cluster.base}/api/v1/video/cleanup/{sid}", timeout=60)
    if not names <= warmed:
        raise RuntimeError(f"workers {sorted(names - warmed)} took no warm-up job in {tries} tries")


def _cpu(cluster: ClusterService) -> Dict[str, float]:
    """CPU seconds used so far by each part of the cluster, and by this process (the client)."""
    mine = os.times()
    return {
        "workers": sum(cpu_seconds(worker.process.pid) for worker in cluster.workers),
        "api": sum(cpu_seconds(pid) for pid in [cluster.api.process.pid, *cluster.api.descendants()]),
        "redis": cpu_seconds(cluster.redis.process.pid),
        "client": mine.user + mine.system,
    }


def batch(cluster: ClusterService, video: str, videos: int) -> dict:
    """`videos` jobs uploaded back to back; their time from the first upload's start to the last `finishedAt`."""
    base = cluster.base
    with requests.Session() as http:
        cpu_before = _cpu(cluster)
        started_wall, started = time.time(), time.perf_counter()
        sids = [upload(http, base, video) for _ in range(videos)]
        uploaded = time.perf_counter() - started
        ended: Dict[str, dict] = {}
        while len(ended) < len(sids):
            wait = 1.0
            for sid in sids:
                if sid not in ended:
                    response = http.get(f"{base}/api/v1/video/status/{sid}", timeout=30)
                    response.raise_for_status()
                    if response.json()["status"] in FINISHED:
                        ended[sid] = response.json()
                    wait = float(response.headers.get("Retry-After", "1"))
            if len(ended) < len(sids):
                time.sleep(wait)
        failed = {sid: body for sid, body in ended.items() if body["status"] != "completed"}
        if failed:
            raise RuntimeError(f"{len(failed)} of {videos} jobs did not complete: "
                               f"{[(b['status'], b.get('error')) for b in failed.values()]}")
        bodies = [ended[sid] for sid in sids]
        cpu_after = _cpu(cluster)
        for sid in sids:
            http.delete(f"{base}/api/v1/video/cleanup/{sid}", timeout=60)
    seconds = max(iso_seconds(body["finishedAt"]) for body in bodies) - started_wall
    cpu = {part: cpu_after[part] - cpu_before[part] for part in cpu_before}
    return {
        "seconds": seconds,
        "videos_per_minute": videos * 60.0 / seconds,
        "upload_seconds": uploaded,
        # each job from its start on a worker (fetching the upload, then the analysis) to its end
        "job_seconds": [iso_seconds(b["finishedAt"]) - iso_seconds(b["startedAt"]) for b in bodies],
        "jobs_per_worker": dict(collections.Counter(body["worker"] for body in bodies)),
        "segments": bodies[0]["segmentsTotal"],
        # per video; the 1-second polls are in "client" and "api" too
        "cpu_seconds_per_video": {part: used / videos for part, used in cpu.items()},
        # the cores the workers had on average: below the worker count, the rest went to other work
        "worker_cores": cpu["workers"] / seconds,
    }


def p9_pair(cluster: ClusterService, video: str, warm_video: str, videos: int, order=(1, 2),
            warmed: Optional[set] = None, label: str = "") -> Dict[int, dict]:
    """One batch on 1 worker and one on 2, in `order`; `warmed`: the workers that have run a job already."""
    warmed = set() if warmed is None else warmed
    pair = {}
    for count in order:
        cluster.set_workers(count)
        _warm(cluster, warm_video, warmed)
        load = os.getloadavg()[0]
        result = batch(cluster, video, videos)
        result["load_average_before"] = load
        if len(result["jobs_per_worker"]) != count:
            say(f"  P9: {count} worker(s) running, but the jobs ran on {result['jobs_per_worker']}")
        pair[count] = result
        say(f"  P9{label}, {count} worker(s): {result['seconds']:.1f} s, {result['videos_per_minute']:.1f} videos/min "
            f"(uploads {result['upload_seconds']:.1f} s; jobs per worker {sorted(result['jobs_per_worker'].values())}"
            f"; workers used {result['worker_cores']:.2f} cores; CPU s per video "
            f"{', '.join(f'{k} {v:.2f}' for k, v in result['cpu_seconds_per_video'].items())}; load {load:.1f})")
    return pair


def summary(pairs: List[Dict[int, dict]]) -> dict:
    """The figure from the pairs: the median of their ratios, and each side's median rate."""
    ratios = [pair[2]["videos_per_minute"] / pair[1]["videos_per_minute"] for pair in pairs]
    return {
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "videos_per_minute_1_worker": statistics.median(pair[1]["videos_per_minute"] for pair in pairs),
        "videos_per_minute_2_workers": statistics.median(pair[2]["videos_per_minute"] for pair in pairs),
        "worker_cores_1_worker": statistics.median(pair[1]["worker_cores"] for pair in pairs),
        "worker_cores_2_workers": statistics.median(pair[2]["worker_cores"] for pair in pairs),
        "batches_1_worker": [pair[1] for pair in pairs],
        "batches_2_workers": [pair[2] for pair in pairs],
    }


def p9_throughput(cluster: ClusterService, video: str, warm_video: str, videos: int = 8, pairs: int = 3) -> dict:
    """Batches of `videos` jobs on 1 worker and on 2, alternated (1, 2, 2, 1, ...); median of the pairs' ratios."""
    warmed: set = set()
    done = [p9_pair(cluster, video, warm_video, videos, (1, 2) if index % 2 == 0 else (2, 1), warmed,
                    f" pair {index + 1}") for index in range(pairs)]
    return {**summary(done), "videos": videos, "video": os.path.basename(video), "worker_env": cluster.worker_env}
