"""P9 throughput in cluster mode: videos per minute with 2 model workers ÷ with 1, on the same machine.

A batch is what a busy cluster sees: one client uploads `videos` copies of
the same video one after the other, as fast as the API takes them (the
first jobs start while the rest upload), then polls every session after the
Retry-After the server sends until all have ended. Its time runs from the
first upload's start to the last job's `finishedAt` (the worker's clock,
this machine's), so polling does not round it. The sides take turns, the
order reversed every round (1, 2, 2, 1, 1, 2, ... workers; a worker is
started or stopped between them, and every worker has run a job since it
started before its batch counts); each round gives one ratio, and the figure
is their median. A side may also start its workers with other settings
(`WORKER_SETTINGS`: "2-unshared" is 2 workers each told to use every core,
`MODEL_CORES`, as every worker did before workers on one machine split its
cores; "2-one-thread" is 2 workers with one core's worth of threads each
through the environment). Each batch also
counts the CPU time its parts used (the workers, the API node's processes,
redis-server, this client): with every part on the same 2 cores, that says
how far from 2x the machine itself allows.
"""
from __future__ import annotations

import collections
import os
import statistics
import time
from typing import Dict

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


# The workers' settings a side may name ("2-one-thread": 2 workers with ONE_THREAD's environment).
WORKER_SETTINGS = {
    "default": {},  # as `make worker` starts a worker: workers on one machine split its cores
    # each worker told to use every core, as before workers on one machine split them (2026-11-29)
    "unshared": {"MODEL_CORES": str(len(os.sched_getaffinity(0)))},
    # one core's worth of threads per worker: OpenBLAS's pool and the vision tower's streams (usable cores each)
    "one-thread": {"OPENBLAS_NUM_THREADS": "1", "PARALLEL_VISION": "0"},
    "blas1": {"OPENBLAS_NUM_THREADS": "1"},
    "novision": {"PARALLEL_VISION": "0"},
}


def side_setup(side: str) -> tuple:
    """"2" -> (2, {}); "2-unshared" -> (2, WORKER_SETTINGS["unshared"])."""
    count, _, settings = side.partition("-")
    return int(count), WORKER_SETTINGS[settings or "default"]


def run_side(cluster: ClusterService, side: str, video: str, warm_video: str, videos: int, warmed: set,
             label: str = "") -> dict:
    """One batch with the side's workers (started or stopped first, and warmed)."""
    count, env = side_setup(side)
    cluster.set_workers(count, env)
    _warm(cluster, warm_video, warmed)
    load = os.getloadavg()[0]
    result = batch(cluster, video, videos)
    result["load_average_before"] = load
    if len(result["jobs_per_worker"]) != count:
        say(f"  P9: {count} worker(s) running, but the jobs ran on {result['jobs_per_worker']}")
    say(f"  P9{label} {side}: {result['seconds']:.1f} s, {result['videos_per_minute']:.1f} videos/min "
        f"(uploads {result['upload_seconds']:.1f} s; jobs per worker {sorted(result['jobs_per_worker'].values())}; "
        f"workers used {result['worker_cores']:.2f} cores; CPU s per video "
        f"{', '.join(f'{k} {v:.2f}' for k, v in result['cpu_seconds_per_video'].items())}; load {load:.1f})")
    return result


def p9_throughput(cluster: ClusterService, video: str, warm_video: str, videos: int = 8, pairs: int = 3,
                  sides=("1", "2")) -> dict:
    """Batches of `videos` jobs on each side in turn, the order reversed every round (1, 2, 2, 1, ...); each
    side after the first is compared with the first in the same round, and the figure is the median ratio.

    A side is a worker count with, optionally, the workers' settings (`WORKER_SETTINGS`): "1", "2",
    "2-one-thread". `ratio` is "2" ÷ "1" when both are there.
    """
    warmed: set = set()
    rounds = []
    for index in range(pairs):
        order = sides if index % 2 == 0 else tuple(reversed(sides))
        rounds.append({side: run_side(cluster, side, video, warm_video, videos, warmed, f" round {index + 1}")
                       for side in order})
    first = sides[0]
    found = {
        "sides": {side: {"workers": side_setup(side)[0], "worker_env": side_setup(side)[1],
                         "videos_per_minute": statistics.median(r[side]["videos_per_minute"] for r in rounds),
                         "worker_cores": statistics.median(r[side]["worker_cores"] for r in rounds),
                         "batches": [r[side] for r in rounds]} for side in sides},
        "ratios": {f"{side}/{first}": [r[side]["videos_per_minute"] / r[first]["videos_per_minute"] for r in rounds]
                   for side in sides[1:]},
        "videos": videos,
        "video": os.path.basename(video),
    }
    found["ratio_medians"] = {name: statistics.median(values) for name, values in found["ratios"].items()}
    if "1" in sides and "2" in sides:
        found["ratio"] = statistics.median(r["2"]["videos_per_minute"] / r["1"]["videos_per_minute"] for r in rounds)
        found["videos_per_minute_1_worker"] = found["sides"]["1"]["videos_per_minute"]
        found["videos_per_minute_2_workers"] = found["sides"]["2"]["videos_per_minute"]
    return found
