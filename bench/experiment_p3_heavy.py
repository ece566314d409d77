"""P3 while a decode-heavy job runs, for two checkouts side by side (issue 14, item 9).

    python -m bench.experiment_p3_heavy --old DIR [--rounds 3] [--seconds 6] [--size 1280x720] [--fps 30]

Each round starts the tiny-model service of this checkout and of `--old`
(a worktree of an earlier commit) in turn, both as plain gunicorn with
their own gunicorn.conf.py (so the only difference is the code: where the
job's work runs), uploads one decode-heavy job (1 s segments, 64 frames per
segment: every frame decoded and sent to the model) and measures status
latency exactly as `make bench`'s P3 does (bench/figures/p3_status_latency.py:
one-thread and thread-per-poller clients, taking turns). Prints the median p99 per checkout and writes
bench/results/experiments/<date>-p3-heavy.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys

from bench.figures.p3_status_latency import p3_status_latency
from bench.server import running_service
from bench.settings import HEAVY_JOB
from bench.system import ROOT, checkpoint, say
from bench.videos import bench_video


def _commit(root: str) -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                          text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="a checkout of the code to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="P3 window per client (two halves each)")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of video (must outlast the windows)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    model = checkpoint("tiny")
    video = bench_video(args.duration, fps=args.fps, size=(width, height))
    short = bench_video(10)
    roots = {"new": ROOT, "old": os.path.abspath(args.old)}
    runs = {label: [] for label in roots}
    for round_number in range(1, args.rounds + 1):
        for label, root in roots.items():
            # gunicorn alone serving `root`'s code with its own gunicorn.conf.py
            with running_service(f"p3-heavy-{label}", model, how="gunicorn", root=root, timeout=120,
                                 JOB_WORKERS=1, MAX_QUEUED_JOBS=32) as server:
                say(f"round {round_number}: {label} ({_commit(root)})")
                result = p3_status_latency(server, video, short, args.seconds, **HEAVY_JOB)
            runs[label].append({"p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
                                "threaded_p99_ms": result["threaded_client"]["p99_ms"],
                                "idle_p99_ms": result["idle"]["p99_ms"],
                                "job_still_running_at_end": result["job_still_running_at_end"],
                                "segments_done": result["job_segments_done_at_end"]})
            say(f"  p99 {result['p99_ms']:.1f} ms (thread per poller {result['threaded_client']['p99_ms']:.1f} ms), "
                f"{result['job_segments_done_at_end']} segments done, still running: "
                f"{result['job_still_running_at_end']}")
    summary = {label: {key: statistics.median(run[key] for run in rounds)
                       for key in ("p50_ms", "p99_ms", "threaded_p99_ms", "idle_p99_ms")}
               for label, rounds in runs.items()}
    for label, figures in summary.items():
        say(f"{label} ({_commit(roots[label])}): median p99 {figures['p99_ms']:.1f} ms, "
            f"thread per poller {figures['threaded_p99_ms']:.1f} ms, idle {figures['idle_p99_ms']:.1f} ms")
    out_dir = os.path.join(ROOT, "bench", "results", "experiments")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, f"{dt.date.today().isoformat()}-p3-heavy.json")
    with open(out, "w") as handle:
        json.dump({"video": os.path.basename(video), "job": HEAVY_JOB, "seconds": args.seconds,
                   "commits": {label: _commit(root) for label, root in roots.items()},
                   "load_average": os.getloadavg(), "runs": runs, "median": summary}, handle, indent=2)
    say(f"wrote {os.path.relpath(out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
