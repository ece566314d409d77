"""Where a job's time goes in the real server: py-spy samples the gunicorn worker during jobs.

    .venv/bin/pip install py-spy       # not in requirements.txt: only this script needs it
    python -m bench.profile_job [--preset tiny] [--seconds 60] [--jobs 3] [--top 25]

Starts the service (bench/server.py, as `make bench` does), runs the same highlights job a few
times under `py-spy record --threads --idle` and prints, per thread, the share
of samples by the innermost project/library frame, plus the collapsed stacks
file (bench/work/profile-*.txt) for a flame graph.
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import time

from bench.client import run_job
from bench.server import running_service
from bench.system import ROOT, checkpoint, say
from bench.videos import WORK, bench_video

_BORING = ("threading.py", "concurrent/futures", "queue.py", "selectors.py", "socketserver.py")


def summarise(collapsed: str, top: int, focus: str = "") -> str:
    by_thread = collections.defaultdict(collections.Counter)
    totals = collections.Counter()
    with open(collapsed) as handle:
        for line in handle:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            thread = frames[0]
            if focus and focus not in stack:
                continue
            # innermost frame that is ours or a library we call (not stdlib plumbing)
            leaf = next((f for f in reversed(frames[1:]) if not any(b in f for b in _BORING)), frames[-1])
            by_thread[thread][leaf] += int(count)
            totals[thread] += int(count)
    out = []
    for thread, total in totals.most_common():
        out.append(f"== {thread}: {total} samples")
        for leaf, count in by_thread[thread].most_common(top):
            out.append(f"  {100 * count / total:5.1f}%  {leaf}")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seconds", type=float, default=60, help="video length")
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(py_spy):
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    model = checkpoint(args.preset)
    video = bench_video(args.seconds)
    out = os.path.join(WORK, f"profile-{args.preset}-{args.seconds:g}s.txt")
    with running_service(f"profile-{args.preset}", model, JOB_WORKERS=1) as server:
        run_job(server.base, bench_video(10))  # warm
        spy = subprocess.Popen([py_spy, "record", "--pid", str(server.worker_pid()), "--threads", "--idle",
                                "--rate", str(args.rate), "--format", "raw", "--output", out, "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)
        for _ in range(args.jobs):
            job = run_job(server.base, video)
            say(f"job {job['wall_seconds']:.2f} s (upload {job['upload_seconds']:.2f} s, "
                f"engine {job['engine_seconds']:.2f} s)")
        spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
        spy.wait(60)
    print(summarise(out, args.top))
    print(f"\ncollapsed stacks: {os.path.relpath(out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
