"""A tiny job's wall time on two checkouts of the service, alternated on one video: what a change costs.

    git worktree add /tmp/old <rev>
    python -m bench.experiment_p1_versions --old /tmp/old [--rounds 7] [--video-seconds 60]

Both services run at once (gunicorn behind nginx, as `make run`), each
importing its own checkout (PYTHONPATH), warmed by two jobs; then jobs
alternate old, new, new, old, ... Prints the median of the new/old ratios
of each round and writes bench/work/experiment-p1-versions.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from bench.client import run_job
from bench.server import running_service
from bench.system import ROOT, checkpoint, say
from bench.videos import WORK, bench_video


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="a checkout of the code to compare with (git worktree)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--video-seconds", type=float, default=60)
    args = parser.parse_args(argv)
    tiny = checkpoint("tiny")
    video = bench_video(args.video_seconds)
    old_root = os.path.abspath(args.old)
    with running_service("versions-old", tiny, root=old_root, JOB_WORKERS=1, PYTHONPATH=old_root) as old, \
            running_service("versions-new", tiny, root=ROOT, JOB_WORKERS=1, PYTHONPATH=ROOT) as new:
        servers = {"old": old, "new": new}
        for server in servers.values():
            run_job(server.base, video)
            run_job(server.base, video)
        walls = {"old": [], "new": []}
        for index in range(args.rounds):
            for name in (("old", "new") if index % 2 == 0 else ("new", "old")):
                time.sleep(0.5)  # the other process's OpenBLAS threads stop spinning
                walls[name].append(run_job(servers[name].base, video)["wall_seconds"])
            say(f"round {index + 1}: old {walls['old'][-1]:.3f} s, new {walls['new'][-1]:.3f} s")
    ratios = [new_wall / old_wall for new_wall, old_wall in zip(walls["new"], walls["old"])]
    summary = {"new_over_old": statistics.median(ratios), "old_median_seconds": statistics.median(walls["old"]),
               "new_median_seconds": statistics.median(walls["new"]), "rounds": args.rounds,
               "video": os.path.basename(video)}
    say(f"new/old {summary['new_over_old']:.3f} (median of {args.rounds} rounds)")
    with open(os.path.join(WORK, "experiment-p1-versions.json"), "w") as handle:
        json.dump({"summary": summary, "walls": walls, "ratios": ratios}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
