"""P9 (cluster throughput) with other sides: worker counts and the workers' thread settings, interleaved.

    python -m bench.experiment_p9 --sides 1,2,1-one-thread,2-one-thread --rounds 3
    python -m bench.experiment_p9 --sides 1,2 --video 480 --size 640x360 --fps 25   # the other figures' video

One cluster (redis-server, the API, model workers: bench/server.py's
running_cluster) runs batches of `--videos` jobs for each side in turn, the
order reversed every round, exactly as `make bench`'s P9
(bench/figures/p9_throughput.py); each side after the first is compared with
the first in the same round. A side is a worker count, optionally with the
workers' settings (`WORKER_SETTINGS`): default (as `make worker` starts
one: workers on one machine split its cores), unshared (MODEL_CORES = every
core: each worker uses them all), one-thread (OPENBLAS_NUM_THREADS=1 and
PARALLEL_VISION=0), blas1 (OPENBLAS_NUM_THREADS=1), novision
(PARALLEL_VISION=0).
Writes bench/results/experiments/<date>-p9-<sides>.json (or --out).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

from bench.figures.p9_throughput import WORKER_SETTINGS, p9_throughput, side_setup
from bench.server import running_cluster
from bench.system import ROOT, checkpoint, say
from bench.videos import bench_video


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sides", default="1,2,2-unshared")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--video", type=float, default=600, help="seconds of video")
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--fps", type=float, default=10)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    sides = tuple(args.sides.split(","))
    for side in sides:
        try:
            side_setup(side)
        except (ValueError, KeyError):
            parser.error(f"a side is a worker count, optionally -SETTINGS ({', '.join(WORKER_SETTINGS)}): {side!r}")
    size = tuple(int(x) for x in args.size.split("x"))
    video = bench_video(args.video, fps=args.fps, size=size)
    warm_video = bench_video(10, fps=args.fps, size=size)
    tiny = checkpoint("tiny")
    load_at_start = os.getloadavg()
    with running_cluster("p9-experiment", tiny, workers=0) as cluster:
        found = p9_throughput(cluster, video, warm_video, args.videos, args.rounds, sides)
    found.update({
        "experiment": "p9 sides",
        "command": " ".join(["python -m bench.experiment_p9"] + list(sys.argv[1:] if argv is None else argv)),
        "load_average_at_start": list(load_at_start), "load_average_at_end": list(os.getloadavg()),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    })
    for side, row in found["sides"].items():
        say(f"{side:14s} {row['videos_per_minute']:5.1f} videos/min, workers used {row['worker_cores']:.2f} cores")
    for name, values in found["ratios"].items():
        say(f"{name:24s} median {found['ratio_medians'][name]:.2f} (rounds {', '.join(f'{v:.2f}' for v in values)})")
    out = args.out or os.path.join(ROOT, "bench", "results", "experiments",
                                   f"{dt.date.today().isoformat()}-p9-{'-'.join(sides)}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as handle:
        json.dump(found, handle, indent=2)
    say(f"wrote {os.path.relpath(out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
