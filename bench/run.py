"""Benchmarks of the service: every figure is a ratio of two things measured in this run.

    python -m bench.run            # `make bench`: tiny and full presets (~20-30 min here)
    python -m bench.run --quick    # `make bench-quick`: tiny only, shorter videos (< 3 min)

The CPU this runs on is shared, so no figure is an absolute time compared
with a constant: each is a ratio of two measurements taken side by side, on
the same generated video and the same checkpoint, and where it matters the
two sides are interleaved (A B A) so a change in background load hits both.

Figures (see bench/README.md for targets and the latest values):
  P1 service overhead     HTTP job wall time (upload -> completed) / sum of pure generate times
  P2 vs reference         per-segment subprocess pipeline wall time / ours
  P3 status latency       p50/p99 of GET /status, 50 pollers, while a job runs
  P4 big upload           server RSS growth while receiving 1 GiB (quick: 256 MiB); MB/s
  P5 queued jobs          server RSS with 16 queued jobs / with 1
  P6 scaling              job time for 1/2/4/8 min of video: linear fit; sampling vs decoding all frames
  BLAS                    one full-size segment on OpenBLAS vs mlx's bundled BLAS

Results go to bench/results/<date>.json (quick: <date>-quick.json) and the
table in bench/README.md. Models come from tools.make_tiny_model.cached_checkpoint
(.cache/models); videos and server logs live in bench/work (both gitignored).
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import requests

from bench.pollers import combine_windows, percentile, poll_one_thread, poll_threads
from bench.reference_pipeline import openblas_library, run_reference
from bench.videos import WORK, bench_video

BENCH = os.path.join(ROOT, "bench")
RESULTS = os.path.join(BENCH, "results")
MODELS = os.path.join(ROOT, ".cache", "models")
PY = sys.executable
MIB = 1024 * 1024

# Fixed analysis settings for every figure (the service's form fields).
SEGMENT_SECONDS = 10
FRAMES = 8
MAX_TOKENS = 32

TARGETS = {
    "p1_overhead_ratio_full": ("<=", 1.05),
    "p1_overhead_ratio_tiny": ("<=", 1.5),
    "p2_speedup_vs_reference_tiny": (">=", 20.0),
    "p2_speedup_vs_reference_full": (">=", 1.5),
    "p3_status_p99_ms": ("<=", 10.0),
    "p3_status_p99_ms_heavy_job": ("<=", 10.0),
    "p4_upload_rss_growth_mib": ("<=", 64.0),
    "p5_rss_growth_ratio": ("<=", 0.10),
}

# P3's second job: every frame of 1 s segments decoded and sent to the model (issue 14, item 9).
HEAVY_JOB = {"segment_duration": 1, "frames_per_segment": 64}

# Keys every results file has (quick runs skip the `full` ones).
REQUIRED_KEYS = (
    "p1_overhead_ratio_tiny", "p2_speedup_vs_reference_tiny", "p3_status_p50_ms", "p3_status_p99_ms",
    "p4_upload_rss_growth_mib", "p4_upload_mb_per_s", "p5_rss_growth_ratio",
    "p6_fit_slope_seconds_per_minute", "p6_fit_intercept_seconds", "p6_fit_r2",
    "p6_sampling_vs_decode_all_ratio", "blas_matmul_speedup", "machine", "targets",
)
FULL_KEYS = ("p1_overhead_ratio_full", "p2_speedup_vs_reference_full", "blas_speedup_full",
             "parallel_vision_speedup_full", "fast_activations_speedup_full")


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- small statistics ------------------------------------------------------------
def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> Dict[str, float]:
    """Least-squares y = slope * x + intercept, with r²."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    return {"slope": slope, "intercept": intercept, "r2": 1 - ss_res / ss_tot if ss_tot else 1.0}


def met(key: str, value) -> Optional[bool]:
    if key not in TARGETS or value is None:
        return None
    op, bound = TARGETS[key]
    return value <= bound if op == "<=" else value >= bound


# -- processes -----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found for pid {pid}")


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM (Linux: write 5 to clear_refs); False when not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples a process's VmRSS in a thread until stopped."""

    def __init__(self, pid: int, every: float = 0.01):
        self.pid, self.every = pid, every
        self.samples: List[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_kib(self.pid))
            self._stop.wait(self.every)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def median_rss_mib(pid: int, seconds: float, every: float = 0.05) -> float:
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(rss_kib(pid))
        time.sleep(every)
    return statistics.median(samples) / 1024


class Server:
    """The real service as `make run` starts it, in a subprocess: serve.py, nginx in front of gunicorn.

    Clients reach it through nginx's port (`base`, `port`); `worker_pid` is
    gunicorn's one worker, the process that holds the model. `config` names
    the gunicorn configuration (GUNICORN_CONFIG; the experiments' variants).
    `front=False` starts gunicorn alone on the port, as `make run` did before
    serve.py (experiment_p3.py's `bare` variant compares the two).
    """

    def __init__(self, name: str, model: str, config: str = "gunicorn.conf.py", front: bool = True, **env):
        self.name, self.model, self.config, self.front = name, model, config, front
        self.extra_env = {k: str(v) for k, v in env.items()}
        self.process: Optional[subprocess.Popen] = None
        self.port = 0
        self.worker_pid = 0
        self.nginx_pids: List[int] = []
        self.data_dir = ""
        self.log_path = os.path.join(WORK, f"server-{name}.log")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 600) -> "Server":
        self.port = free_port()
        self.data_dir = os.path.join(WORK, f"data-{self.name}")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if k not in ("USE_OPENBLAS", "LD_PRELOAD")}
        env.update(MODEL=self.model, DATA_DIR=self.data_dir, PORT=str(self.port), HOST="127.0.0.1",
                   LOG_LEVEL="warning", GUNICORN_CONFIG=self.config, **self.extra_env)
        log = open(self.log_path, "w")
        started = time.perf_counter()
        command = ([PY, "-m", "video_analysis.serve"] if self.front else
                   [PY, "-m", "gunicorn", "--config", self.config, "app:create_app()"])
        self.process = subprocess.Popen(
            command,
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server {self.name} exited; see {self.log_path}")
            try:
                health = requests.get(self.base + "/health", timeout=2).json()
                if health["model"]["loaded"]:
                    break
                if health.get("status") == "degraded":
                    raise RuntimeError(f"server {self.name}: {health.get('reason')}")
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"server {self.name} not ready in {timeout:.0f} s")
        self.ready_seconds = time.perf_counter() - started
        self.worker_pid = self._worker()
        return self

    def _worker(self) -> int:
        """gunicorn's worker: the one child of the launcher's child that is not nginx (gunicorn's arbiter)."""
        def children(pid: int) -> List[int]:
            with open(f"/proc/{pid}/task/{pid}/children") as handle:
                return [int(p) for p in handle.read().split()]

        def is_nginx(pid: int) -> bool:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                return handle.read().startswith(b"nginx")

        if not self.front:
            workers = children(self.process.pid)
            if len(workers) != 1:
                raise RuntimeError(f"expected one gunicorn worker, found {workers}")
            return workers[0]
        started = children(self.process.pid)
        nginx = [pid for pid in started if is_nginx(pid)]
        arbiters = [pid for pid in started if pid not in nginx]
        self.nginx_pids = nginx + [child for pid in nginx for child in children(pid)]
        workers = [child for pid in arbiters for child in children(pid)]
        if len(nginx) != 1 or len(workers) != 1:
            raise RuntimeError(f"expected nginx and one gunicorn worker, found nginx {nginx}, workers {workers}")
        return workers[0]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group this script created for it
            self.process.wait(10)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class PureWorker:
    """bench/pure_inference.py --serve in a subprocess: the model loaded once, passes on request."""

    def __init__(self, model: str, env: Optional[dict] = None):
        environment = {k: v for k, v in os.environ.items() if k not in ("USE_OPENBLAS", "LD_PRELOAD")}
        environment.update(env or {})
        self.process = subprocess.Popen(
            [PY, "-m", "bench.pure_inference", "--model", model, "--serve"],
            cwd=ROOT, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.ready = self._answer()

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("pure inference worker exited")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def run(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


# -- HTTP jobs -----------------------------------------------------------------------
def job_params(**overrides) -> dict:
    params = {"analysis_type": "highlights", "segment_duration": SEGMENT_SECONDS, "frames_per_segment": FRAMES,
              "max_tokens": MAX_TOKENS, "min_significance": 1}
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


def wait_status(http, base, sid, wanted=("completed", "failed", "cancelled"), poll=0.02, timeout=3600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = status(http, base, sid)
        if body["status"] in wanted:
            return body
        time.sleep(poll)
    raise RuntimeError(f"session {sid} did not reach {wanted} in {timeout:.0f} s")


def iso_seconds(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc).timestamp()


def wait_as_told(http: requests.Session, base: str, sid: str, timeout: float = 7200) -> dict:
    """Poll as a well-behaved client does: again after the Retry-After the server sends (1 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = http.get(f"{base}/api/v1/video/status/{sid}", timeout=30)
        response.raise_for_status()
        body = response.json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        time.sleep(float(response.headers.get("Retry-After", "1")))
    raise RuntimeError(f"session {sid} did not finish in {timeout:.0f} s")


def run_job(base: str, video: str, **params) -> dict:
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
        body = wait_as_told(http, base, sid)
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
    }


# -- the figures -------------------------------------------------------------------
def p1_overhead(server: Server, model: str, video: str, rounds: int) -> dict:
    """Service job vs pure generate, interleaved: pure, job, pure, job, ..., pure."""
    worker = PureWorker(model)
    try:
        request = dict(video=video, segment_duration=SEGMENT_SECONDS, frames_per_segment=FRAMES,
                       max_tokens=MAX_TOKENS, warmup=False)
        # Warm once, as the server was warmed (1 frame, 1 token: compiles mlx's kernels).
        pures, jobs = [worker.run(**dict(request, warmup=True, warmup_frames=1, warmup_tokens=1))], []
        for index in range(rounds):
            # Pauses let the other process's OpenBLAS threads stop spinning (they busy-wait ~0.1 s after work).
            time.sleep(0.5)
            jobs.append(run_job(server.base, video))
            time.sleep(0.5)
            pures.append(worker.run(**request))
            say(f"  P1 round {index + 1}: job {jobs[-1]['wall_seconds']:.2f} s, "
                f"pure {pures[-2]['sum_generate_seconds']:.2f}/{pures[-1]['sum_generate_seconds']:.2f} s")
    finally:
        worker.close()
    ratios = [job["wall_seconds"] / ((before["sum_generate_seconds"] + after["sum_generate_seconds"]) / 2)
              for job, before, after in zip(jobs, pures, pures[1:])]
    pure_texts = [s["text"] for s in pures[0]["segments"]]
    sample_seconds = statistics.median(p["sample_seconds"] for p in pures)
    pure_sum = statistics.median(p["sum_generate_seconds"] for p in pures)
    return {
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "job_wall_seconds": [j["wall_seconds"] for j in jobs],
        "job_upload_seconds": [j["upload_seconds"] for j in jobs],
        "job_engine_seconds": [j["engine_seconds"] for j in jobs],
        "pure_sum_generate_seconds": [p["sum_generate_seconds"] for p in pures],
        "pure_segment_seconds": [[round(s["generate_seconds"], 4) for s in p["segments"]] for p in pures],
        # Reading every segment's frames once (no model), the work the service adds per job.
        "frame_sampling_seconds": sample_seconds,
        "sampling_to_generate_ratio": sample_seconds / pure_sum,
        "segments": jobs[0]["segments"],
        "answers_identical": all(j["texts"] == pure_texts for j in jobs),
        "video": os.path.basename(video),
    }


def p2_reference(model: str, video: str, ours_seconds: float, blas: str = "openblas") -> dict:
    reference = run_reference(video, model, SEGMENT_SECONDS, FRAMES, MAX_TOKENS, blas=blas)
    segments = reference["segments"]
    return {
        "speedup": reference["wall_seconds"] / ours_seconds,
        "reference_wall_seconds": reference["wall_seconds"],
        "ours_wall_seconds": ours_seconds,
        "reference_segments": len(segments),
        "reference_process_seconds": [round(s["process_seconds"], 3) for s in segments],
        "reference_cut_seconds": [round(s["cut_seconds"], 3) for s in segments],
        "reference_frames_sent": [s["cli_notice"].split("sending ")[1].split(" ")[0] if s["cli_notice"] else None
                                  for s in segments],
        "reference_blas": blas,
        "reference_ld_preload": reference["ld_preload"],
        "sleep_seconds_total": reference["sleep_seconds"] * (len(segments) - 1),
        "video": os.path.basename(video),
    }


def p3_status_latency(server: Server, long_video: str, short_video: str, seconds: float, pollers: int = 50,
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


def _send_zeros_upload(port: int, size: int) -> tuple:
    """POST a multipart upload of `size` zero bytes, streamed from one 1 MiB buffer."""
    boundary = "bench" + uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"zeros.mp4\"\r\n"
            f"Content-Type: video/mp4\r\n\r\n").encode()
    tail = (f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"analysis_type\"\r\n\r\nhighlights"
            f"\r\n--{boundary}--\r\n").encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    connection.putrequest("POST", "/api/v1/video/upload")
    connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    connection.putheader("Content-Length", str(len(head) + size + len(tail)))
    connection.endheaders()
    connection.send(head)
    chunk = bytes(MIB)
    sent = 0
    while sent < size:
        piece = chunk if size - sent >= MIB else chunk[: size - sent]
        connection.send(piece)
        sent += len(piece)
    connection.send(tail)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


def p4_big_upload(server: Server, size: int) -> dict:
    """Worker RSS while it receives `size` bytes of zeros (stored, then refused with 415: not a video)."""
    pid = server.worker_pid
    baseline = median_rss_mib(pid, 1.0)
    peak_reset = reset_peak_rss(pid)
    with RssSampler(pid) as sampler:
        started = time.perf_counter()
        code, body = _send_zeros_upload(server.port, size)
        elapsed = time.perf_counter() - started
    peak_sampled = max(sampler.samples) / 1024
    peak_hwm = rss_kib(pid, "VmHWM") / 1024 if peak_reset else None
    peak = max(peak_sampled, peak_hwm or 0)
    after = median_rss_mib(pid, 0.5)
    return {
        "rss_growth_mib": peak - baseline,
        "mb_per_s": size / MIB / elapsed,
        "bytes": size,
        "seconds": elapsed,
        "http_status": code,
        "answer": json.loads(body).get("title") if body.startswith(b"{") else body[:100].decode("latin-1"),
        "baseline_rss_mib": baseline,
        "peak_rss_mib_sampled": peak_sampled,
        "peak_rss_mib_hwm": peak_hwm,
        "rss_after_mib": after,
        "samples": len(sampler.samples),
        "content": "zeros (a multipart upload named zeros.mp4: stored to DATA_DIR, probed, refused 415, deleted)",
    }


def p5_queued(server: Server, long_video: str, queued_video: str, total_jobs: int = 16) -> dict:
    """Worker RSS with 1 running job vs 1 running + 15 queued (JOB_WORKERS=1)."""
    pid = server.worker_pid
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


def p6_scaling(server: Server, durations_s: Sequence[float]) -> dict:
    minutes, seconds = [], []
    for duration in durations_s:
        video = bench_video(duration)
        job = run_job(server.base, video)
        minutes.append(duration / 60)
        seconds.append(job["wall_seconds"])
        say(f"  P6 {duration / 60:g} min: {job['wall_seconds']:.2f} s ({job['segments']} segments)")
    fit = linear_fit(minutes, seconds)
    return {"minutes": minutes, "job_seconds": seconds, **fit}


def sampling_vs_decode_all(video: str, repeats: int = 3) -> dict:
    """video_frames sampling (8 frames per 10 s segment) vs decoding every frame, same video, in a subprocess."""
    code = f"""
import json, sys, time
import cv2
from video_analysis.video import FrameReader, plan_segments, probe_video
video = {video!r}
def sample():
    info = probe_video(video)
    with FrameReader(video, info, max_edge=512) as reader:
        for segment in plan_segments(info.duration_seconds, {SEGMENT_SECONDS}):
            reader.read_segment(segment, {FRAMES})
def decode_all():
    capture = cv2.VideoCapture(video)
    while capture.read()[0]:
        pass
    capture.release()
def grab_all():
    capture = cv2.VideoCapture(video)
    while capture.grab():
        pass
    capture.release()
times = {{"sample": [], "decode_all": [], "grab_all": []}}
for _ in range({repeats}):
    for name, work in (("sample", sample), ("decode_all", decode_all), ("grab_all", grab_all)):
        started = time.perf_counter(); work(); times[name].append(time.perf_counter() - started)
print(json.dumps(times))
"""
    times = json.loads(subprocess.run([PY, "-c", code], check=True, capture_output=True, text=True).stdout)
    ratios = [s / d for s, d in zip(times["sample"], times["decode_all"])]
    return {
        "ratio": statistics.median(ratios),
        "sample_seconds": statistics.median(times["sample"]),
        "decode_all_seconds": statistics.median(times["decode_all"]),
        "grab_all_seconds": statistics.median(times["grab_all"]),
        "video": os.path.basename(video),
    }


_MATMUL = """
import json, os, sys, time
from video_analysis.model.openblas import preload_openblas
_openblas_path = preload_openblas()  # None when USE_OPENBLAS=0
import mlx.core as mx
a = mx.random.normal((1024, 960)); b = mx.random.normal((960, 2560)); mx.eval(a, b)
mx.eval(a @ b)
runs = []
for _ in range(5):
    started = time.perf_counter(); mx.eval(a @ b); runs.append(time.perf_counter() - started)
runs.sort()
print(json.dumps({{"seconds": runs[2], "gflops": 2 * 1024 * 960 * 2560 / runs[2] / 1e9, "openblas": _openblas_path}}))
"""


def blas_matmul() -> dict:
    """A (1024x960)·(960x2560) float32 matmul (one MLP projection's shape) in two subprocesses."""
    out = {}
    for name, flag in (("openblas", "1"), ("bundled", "0")):
        env = dict(os.environ, USE_OPENBLAS=flag)
        env.pop("LD_PRELOAD", None)
        done = subprocess.run([PY, "-c", _MATMUL.format(root=ROOT)], check=True, capture_output=True,
                              text=True, env=env, cwd=ROOT)
        out[name] = json.loads(done.stdout)
    return {"speedup": out["bundled"]["seconds"] / out["openblas"]["seconds"],
            "openblas_gflops": out["openblas"]["gflops"], "bundled_gflops": out["bundled"]["gflops"],
            "openblas_library": out["openblas"]["openblas"]}


def segment_ab(model: str, video: str, variable: str, frames: Optional[int], max_tokens: int) -> dict:
    """One segment through pure_inference twice, `variable`=1 then `variable`=0 (fresh processes).

    No warm-up pass (a bundled-BLAS warm-up would double a long run), so
    MLX_DISABLE_COMPILE=1 in both keeps the first call's compile time out.
    """
    out = {}
    for flag in ("1", "0"):
        env = dict(os.environ, MLX_DISABLE_COMPILE="1", **{variable: flag})
        env.pop("LD_PRELOAD", None)
        command = [PY, "-m", "bench.pure_inference", "--model", model, "--video", video,
                   "--max-segments", "1", "--max-tokens", str(max_tokens), "--no-warmup"]
        if frames:
            command += ["--max-frames", str(frames)]
        say(f"  {variable}={flag}: one segment, {frames or FRAMES} frame(s), {max_tokens} tokens")
        done = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=ROOT)
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        out[flag] = {"seconds": answer["sum_generate_seconds"], "openblas": answer["openblas"],
                     "frames": answer["segments"][0]["frames"], "text": answer["segments"][0]["text"]}
    return {
        "speedup": out["0"]["seconds"] / out["1"]["seconds"],
        "on_seconds": out["1"]["seconds"],
        "off_seconds": out["0"]["seconds"],
        "openblas": out["1"]["openblas"],
        "frames": out["1"]["frames"],
        "max_tokens": max_tokens,
        "same_answer": out["1"]["text"] == out["0"]["text"],
    }


# -- machine ---------------------------------------------------------------------------
def machine_info(argv: Sequence[str], load_at_start: Optional[Sequence[float]] = None) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def package(name: str) -> Optional[str]:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    memory = next((int(line.split()[1]) // 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal")), None)
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_mib": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mlx": package("mlx"),
        "mlx_vlm": package("mlx-vlm"),
        "opencv": package("opencv-python-headless") or package("opencv-python"),
        "gunicorn": package("gunicorn"),
        "openblas_library": openblas_library(),
        "ffmpeg": subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
        if shutil.which("ffmpeg") else None,
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),  # when the run finished
        "command": " ".join(["python"] + [os.path.relpath(argv[0], ROOT)] + list(argv[1:])),
        "load_average_at_start": list(load_at_start) if load_at_start else None,
        "load_average_at_end": list(os.getloadavg()),
    }


# -- the run ---------------------------------------------------------------------------
def checkpoint(preset: str) -> str:
    from tools.make_tiny_model import cached_checkpoint

    say(f"checkpoint {preset} (built once into .cache/models)")
    return str(cached_checkpoint(MODELS, preset, 0))


def run(quick: bool, only: Optional[set], skip_full: bool) -> dict:
    want = (lambda name: only is None or name in only)
    results: dict = {"mode": "quick" if quick else "full"}
    details: dict = {}
    plan = {
        # seconds of video
        "p1_tiny_video": 60 if quick else 120,
        "p1_full_video": 20,
        "p1_tiny_rounds": 5,  # the tiny job is short: fewer rounds leave the median to chance
        "p1_full_rounds": 3,
        "p3_seconds": 6 if quick else 15,
        "p3_full_seconds": 10,
        "p4_bytes": (256 if quick else 1024) * MIB,
        "p6_durations": (15, 30, 60, 120) if quick else (60, 120, 240, 480),
        "long_video": 480 if quick else 960,  # P3's jobs must outlast their windows (tiny: ~20 segments/s)
    }
    results["settings"] = {"segment_duration": SEGMENT_SECONDS, "frames_per_segment": FRAMES,
                           "max_tokens": MAX_TOKENS, "video": "synthetic 640x360, 25 fps, mpeg4 (mp4v), GOP 12",
                           **{k: v for k, v in plan.items() if k != "p4_bytes"}, "p4_mib": plan["p4_bytes"] // MIB}

    tiny = checkpoint("tiny")
    say("videos (written once into bench/work)")
    p1_video = bench_video(plan["p1_tiny_video"])
    long_video = bench_video(plan["long_video"])
    short_video = bench_video(10)

    say("tiny server (serve.py: nginx + gunicorn, JOB_WORKERS=1, MAX_QUEUED_JOBS=32)")
    with Server("tiny", tiny, JOB_WORKERS=1, MAX_QUEUED_JOBS=32) as server:
        run_job(server.base, short_video)  # warm: the first generate compiles kernels
        if want("p1") or want("p2"):
            say(f"P1 tiny: {plan['p1_tiny_rounds']} rounds on {os.path.basename(p1_video)}")
            p1 = p1_overhead(server, tiny, p1_video, plan["p1_tiny_rounds"])
            details["p1_tiny"] = p1
            results["p1_overhead_ratio_tiny"] = p1["ratio"]
            small_video = bench_video(60, fps=10, size=(320, 240))
            say(f"P1 tiny on a smaller video: 2 rounds on {os.path.basename(small_video)}")
            small = p1_overhead(server, tiny, small_video, 2)
            details["p1_tiny_320x240"] = small
            results["p1_overhead_ratio_tiny_320x240"] = small["ratio"]
            if want("p2"):
                say("P2 tiny: reference pipeline (per-segment ffmpeg + python -m mlx_vlm generate)")
                p2 = p2_reference(tiny, p1_video, statistics.median(p1["job_wall_seconds"]))
                details["p2_tiny"] = p2
                results["p2_speedup_vs_reference_tiny"] = p2["speedup"]
                say("P2 tiny on the smaller video")
                p2 = p2_reference(tiny, small_video, statistics.median(small["job_wall_seconds"]))
                details["p2_tiny_320x240"] = p2
                results["p2_speedup_vs_reference_tiny_320x240"] = p2["speedup"]
                if not quick:
                    say("P2 tiny, reference on mlx's bundled BLAS (the plain CLI on Linux)")
                    plain = p2_reference(tiny, p1_video, statistics.median(p1["job_wall_seconds"]), blas="bundled")
                    details["p2_tiny_plain_cli"] = plain
                    results["p2_speedup_vs_plain_cli_tiny"] = plain["speedup"]
        if want("p3"):
            say(f"P3: 50 pollers for {plan['p3_seconds']} s while a job runs")
            p3 = p3_status_latency(server, long_video, short_video, plan["p3_seconds"])
            details["p3"] = p3
            results["p3_status_p50_ms"] = p3["p50_ms"]
            results["p3_status_p99_ms"] = p3["p99_ms"]
            results["p3_status_p99_ms_idle"] = p3["idle"]["p99_ms"]
            results["p3_status_p99_ms_threaded_client"] = p3["threaded_client"]["p99_ms"]
            say(f"P3 heavy: the same while a decode-heavy job runs ({HEAVY_JOB})")
            heavy = p3_status_latency(server, long_video, short_video, plan["p3_seconds"], **HEAVY_JOB)
            details["p3_heavy_job"] = heavy
            results["p3_status_p50_ms_heavy_job"] = heavy["p50_ms"]
            results["p3_status_p99_ms_heavy_job"] = heavy["p99_ms"]
        if want("p4"):
            say(f"P4: {plan['p4_bytes'] // MIB} MiB upload")
            p4 = p4_big_upload(server, plan["p4_bytes"])
            details["p4"] = p4
            results["p4_upload_rss_growth_mib"] = p4["rss_growth_mib"]
            results["p4_upload_mb_per_s"] = p4["mb_per_s"]
        if want("p5"):
            say("P5: RSS with 1 and with 16 jobs")
            p5 = p5_queued(server, long_video, short_video)
            details["p5"] = p5
            results["p5_rss_growth_ratio"] = p5["growth_ratio"]
        if want("p6"):
            say("P6: job time vs video length")
            p6 = p6_scaling(server, plan["p6_durations"])
            details["p6"] = p6
            results["p6_fit_slope_seconds_per_minute"] = p6["slope"]
            results["p6_fit_intercept_seconds"] = p6["intercept"]
            results["p6_fit_r2"] = p6["r2"]
    if want("p6"):
        say("P6: frame sampling vs decoding every frame")
        sampling = sampling_vs_decode_all(bench_video(plan["p6_durations"][-1]), repeats=2 if quick else 3)
        details["p6_sampling"] = sampling
        results["p6_sampling_vs_decode_all_ratio"] = sampling["ratio"]
    if want("blas"):
        say("BLAS: matmul, OpenBLAS vs bundled")
        matmul = blas_matmul()
        details["blas_matmul"] = matmul
        results["blas_matmul_speedup"] = matmul["speedup"]

    if not quick and not skip_full:
        full = checkpoint("full")
        full_video = bench_video(plan["p1_full_video"])
        if want("p1") or want("p2"):
            say("full server (serve.py: nginx + gunicorn)")
            with Server("full", full) as server:
                run_job(server.base, bench_video(10), max_tokens=1, frames_per_segment=1)  # warm
                say(f"P1 full: pure, job, pure, job, pure on {os.path.basename(full_video)}")
                p1 = p1_overhead(server, full, full_video, plan["p1_full_rounds"])
                if want("p3"):
                    say(f"P3 full: 50 pollers for {plan['p3_full_seconds']} s while a full-size job runs")
                    p3 = p3_status_latency(server, full_video, bench_video(10), plan["p3_full_seconds"],
                                           idle_job=dict(frames_per_segment=1, max_tokens=1),
                                           segment_duration=SEGMENT_SECONDS)
                    details["p3_full"] = p3
                    results["p3_status_p99_ms_full_job"] = p3["p99_ms"]
                    results["p3_status_p99_ms_full_job_threaded_client"] = p3["threaded_client"]["p99_ms"]
            details["p1_full"] = p1
            results["p1_overhead_ratio_full"] = p1["ratio"]
            if want("p2"):
                say("P2 full: reference pipeline")
                p2 = p2_reference(full, full_video, statistics.median(p1["job_wall_seconds"]))
                details["p2_full"] = p2
                results["p2_speedup_vs_reference_full"] = p2["speedup"]
        if want("blas"):
            # A whole 8-frame, 32-token segment on the bundled BLAS would take ~20 min here
            # (matmul ~30x slower): measure 1 frame + 8 tokens, identical for both.
            say("BLAS: one full-size segment, OpenBLAS vs bundled")
            blas = segment_ab(full, full_video, "USE_OPENBLAS", frames=1, max_tokens=8)
            blas["workload"] = "reduced: 1 frame (512x512) + 8 tokens, one segment, identical for both"
            details["blas_full"] = blas
            results["blas_speedup_full"] = blas["speedup"]
        if want("vision"):
            say("Vision tower split across CPU streams: one full-size segment, on vs off")
            split = segment_ab(full, full_video, "PARALLEL_VISION", frames=None, max_tokens=MAX_TOKENS)
            split["workload"] = f"one segment, {FRAMES} frames (512x512) + {MAX_TOKENS} tokens"
            details["parallel_vision_full"] = split
            results["parallel_vision_speedup_full"] = split["speedup"]
            say("Vision tower's softmax and GELU with powers of two: one full-size segment, on vs off")
            base2 = segment_ab(full, full_video, "FAST_ACTIVATIONS", frames=None, max_tokens=MAX_TOKENS)
            base2["workload"] = split["workload"]
            details["fast_activations_full"] = base2
            results["fast_activations_speedup_full"] = base2["speedup"]

    results["details"] = details
    return results


def finish(results: dict, argv: Sequence[str], load_at_start: Optional[Sequence[float]] = None) -> dict:
    results["machine"] = machine_info(argv, load_at_start)
    results["targets"] = {
        key: {"target": f"{op} {bound:g}", "value": results.get(key), "met": met(key, results.get(key))}
        for key, (op, bound) in TARGETS.items() if key in results
    }
    return results


def missing_keys(results: dict) -> List[str]:
    keys = list(REQUIRED_KEYS) + (list(FULL_KEYS) if results.get("mode") == "full" else [])
    return [key for key in keys if key not in results]


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description="Benchmarks of the video-analysis service (ratios only).")
    parser.add_argument("--quick", action="store_true", help="tiny preset only, shorter videos, fewer repeats")
    parser.add_argument("--only", help="comma-separated subset: p1,p2,p3,p4,p5,p6,blas,vision")
    parser.add_argument("--skip-full", action="store_true", help="full mode without the full-size checkpoint")
    parser.add_argument("--out", help="results file (default bench/results/<date>[-quick].json)")
    parser.add_argument("--no-readme", action="store_true", help="do not update the table in bench/README.md")
    args = parser.parse_args(argv[1:])
    only = set(args.only.split(",")) if args.only else None
    os.makedirs(WORK, exist_ok=True)
    started, load_at_start = time.perf_counter(), os.getloadavg()
    results = run(args.quick, only, args.skip_full)
    results["bench_seconds"] = time.perf_counter() - started
    finish(results, argv, load_at_start)
    date = dt.date.today().isoformat()
    out = args.out or os.path.join(RESULTS, f"{date}{'-quick' if args.quick else ''}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as handle:
        json.dump(results, handle, indent=2)
    say(f"wrote {os.path.relpath(out, ROOT)} in {results['bench_seconds']:.0f} s")
    if not args.no_readme and only is None:
        from bench.report import update_readme

        update_readme()
        say("updated the table in bench/README.md")
    for key, target in results["targets"].items():
        state = {True: "met", False: "MISSED", None: "-"}[target["met"]]
        say(f"  {key:34s} {target['value']:10.3f}  target {target['target']:8s} {state}")
    missing = missing_keys(results) if only is None else []
    if missing:
        say(f"missing keys: {', '.join(missing)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
