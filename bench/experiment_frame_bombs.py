"""Issue 14 item 3: the gunicorn worker's memory while 16 frame-bomb uploads arrive at once.

    python -m bench.experiment_frame_bombs [--root DIR] [--label NAME] [--bomb last|ten|middle] [--uploads 16]

The bomb is the reported one: an MJPEG AVI (1.5 MB) whose headers and first
19 frames are 160x120 and whose frame 20 is a valid 16000x16000 JPEG
(`--bomb ten`: frames 11-20 are; `--bomb middle`: frame 11 only, which the
probe does not look at, so each upload becomes a job that meets it; uploads
ask for 1 s segments, so that jobs sample it). The real service (`gunicorn.conf.py`,
tiny checkpoint, `--root`'s code: by default this checkout; a worktree of an
older commit measures that commit) first runs one normal job, then gets the
uploads concurrently. The worker's VmRSS is read before, its peak (VmHWM,
reset just before the uploads) once every upload is answered and again once
every accepted job has ended. Prints the figures and writes them to
bench/results/experiments/frame-bombs-<label>.json (a subdirectory: report.py
reads the newest *.json of bench/results itself as a `make bench` run).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import requests

from bench.server import running_service
from bench.system import ROOT, checkpoint, reset_peak_rss, rss_kib, say
from bench.videos import WORK
from tools.hostile_media import flat_jpeg, mjpeg_avi
from tools.synthetic_video import background

RESULTS = os.path.join(ROOT, "bench", "results", "experiments")


def make_bombs(directory: str) -> dict:
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    small = [cv2.imencode(".jpg", background(i, 160, 120, rng))[1].tobytes() for i in range(20)]
    huge = flat_jpeg(16000, 16000)
    return {
        "normal": mjpeg_avi(os.path.join(directory, "normal.avi"), small),
        "last": mjpeg_avi(os.path.join(directory, "last.avi"), small[:19] + [huge]),
        "ten": mjpeg_avi(os.path.join(directory, "ten.avi"), small[:10] + [huge] * 10),
        "middle": mjpeg_avi(os.path.join(directory, "middle.avi"), small[:10] + [huge] + small[11:]),
    }


def wait_ended(base: str, session_id: str, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = requests.get(f"{base}/api/v1/video/status/{session_id}", timeout=30).json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        time.sleep(0.2)
    raise RuntimeError(f"session {session_id} did not end in {timeout:.0f} s")


def mib(pid: int, field: str) -> float:
    return rss_kib(pid, field) / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=ROOT, help="the checkout whose service runs (default: this one)")
    parser.add_argument("--label", default=None, help="names the results file (default: the root's commit)")
    parser.add_argument("--bomb", choices=("last", "ten", "middle"), default="last")
    parser.add_argument("--uploads", type=int, default=16)
    args = parser.parse_args(argv)
    root = os.path.abspath(args.root)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                            text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True).stdout.strip())
    label = args.label or commit + ("-dirty" if dirty else "")
    model = checkpoint("tiny")
    bombs = make_bombs(os.path.join(WORK, "frame-bombs"))
    # gunicorn alone serving `root`'s code; its log is bench/work/server-frame-bombs-<label>.log.
    with running_service(f"frame-bombs-{label}", model, how="gunicorn", root=root, timeout=300) as server:
        base, worker = server.base, server.worker_pid()
        say(f"server of {root} ({commit}) up, worker {worker}; one normal job first")
        with open(bombs["normal"], "rb") as handle:
            warm = requests.post(base + "/api/v1/video/upload", files={"video": handle}, timeout=120)
        warm_status = wait_ended(base, warm.json()["sessionId"])["status"]
        time.sleep(1.0)
        rss_before = mib(worker, "VmRSS")
        hwm_before = mib(worker, "VmHWM")
        reset = reset_peak_rss(worker)
        answers = []

        def send():
            with open(bombs[args.bomb], "rb") as handle:
                # 1 s segments: a job samples every second frame or so, frame 11 included.
                response = requests.post(base + "/api/v1/video/upload", files={"video": (f"{args.bomb}.avi", handle)},
                                         data={"segment_duration": "1"}, timeout=600)
            answers.append(response)

        started = time.perf_counter()
        threads = [threading.Thread(target=send) for _ in range(args.uploads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        answered_seconds = time.perf_counter() - started
        rss_answered, hwm_answered = mib(worker, "VmRSS"), mib(worker, "VmHWM")
        accepted = [r.json()["sessionId"] for r in answers if r.status_code == 202]
        ended = [wait_ended(base, sid) for sid in accepted]
        rss_ended, hwm_ended = mib(worker, "VmRSS"), mib(worker, "VmHWM")
        statuses = [r.status_code for r in answers]
        results = {
            "root": root, "commit": commit, "dirty": dirty, "bomb": args.bomb, "uploads": args.uploads,
            "bomb_bytes": os.path.getsize(bombs[args.bomb]), "warm_up_job": warm_status,
            "answers": {str(code): statuses.count(code) for code in sorted(set(statuses))},
            "refusals": sorted({r.json().get("error", "") for r in answers if r.status_code != 202}),
            "jobs": {s: [e["status"] for e in ended].count(s) for s in sorted({e["status"] for e in ended})},
            "job_errors": sorted({e.get("error") or "" for e in ended}),
            "answered_seconds": round(answered_seconds, 2),
            "hwm_reset": reset,
            "rss_before_mib": round(rss_before, 1),
            "hwm_before_mib": round(hwm_before, 1),
            "rss_after_answers_mib": round(rss_answered, 1),
            "hwm_after_answers_mib": round(hwm_answered, 1),
            "rss_after_jobs_mib": round(rss_ended, 1),
            "hwm_after_jobs_mib": round(hwm_ended, 1),
            # The growth the issue asks about: the worker's peak during the uploads (and their jobs) over its RSS before.
            "peak_growth_mib": round(max(hwm_answered, hwm_ended) - rss_before, 1),
            "rss_growth_after_mib": round(rss_ended - rss_before, 1),
        }
    os.makedirs(RESULTS, exist_ok=True)
    out = os.path.join(RESULTS, f"frame-bombs-{label}.json")
    with open(out, "w") as handle:
        json.dump(results, handle, indent=2)
        handle.write("\n")
    say(f"{args.uploads} x {args.bomb}.avi ({results['bomb_bytes'] / 1e6:.1f} MB): answers {results['answers']}, "
        f"jobs {results['jobs']}")
    say(f"worker RSS {rss_before:.0f} MiB before; peak {max(hwm_answered, hwm_ended):.0f} MiB "
        f"(+{results['peak_growth_mib']:.0f}); RSS {rss_ended:.0f} MiB after (+{results['rss_growth_after_mib']:.0f})")
    say(f"written to {os.path.relpath(out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
