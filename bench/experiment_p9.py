"""P9 (cluster throughput, 2 model workers ÷ 1) for several worker settings side by side, interleaved.

    python -m bench.experiment_p9 --variants default,onethread --pairs 3
    python -m bench.experiment_p9 --variants default --video 480 --size 640x360 --fps 25   # the other figures' video

Each variant is a cluster of its own (redis-server, API, workers started with
the variant's environment), all up at once; the pairs of batches (1 worker,
2 workers) take turns between variants, so a change in the machine's other
load falls on all of them. Variants (the workers' environment):
  default     as `make worker` starts a worker
  onethread   OPENBLAS_NUM_THREADS=1 and PARALLEL_VISION=0: one core's worth of threads per worker
  blas1       OPENBLAS_NUM_THREADS=1 only
  novision    PARALLEL_VISION=0 only
Writes bench/results/experiments/<date>-p9-<variants>.json (or --out).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys

from bench.figures.p9_throughput import p9_pair, summary
from bench.server import running_cluster
from bench.system import ROOT, checkpoint, say
from bench.videos import bench_video

VARIANTS = {
    "default": {},
    "onethread": {"OPENBLAS_NUM_THREADS": "1", "PARALLEL_VISION": "0"},
    "blas1": {"OPENBLAS_NUM_THREADS": "1"},
    "novision": {"PARALLEL_VISION": "0"},
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default="default,onethread")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--video", type=float, default=600, help="seconds of video")
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--fps", type=float, default=10)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    size = tuple(int(x) for x in args.size.split("x"))
    video = bench_video(args.video, fps=args.fps, size=size)
    warm_video = bench_video(10, fps=args.fps, size=size)
    tiny = checkpoint("tiny")
    load_at_start = os.getloadavg()
    pairs = {name: [] for name in names}
    with contextlib.ExitStack() as stack:
        clusters = {name: stack.enter_context(running_cluster(f"p9-{name}", tiny, workers=1,
                                                              worker_env=VARIANTS[name])) for name in names}
        warmed = {name: set() for name in names}
        for index in range(args.pairs):
            for name in names:
                order = (1, 2) if index % 2 == 0 else (2, 1)
                pairs[name].append(p9_pair(clusters[name], video, warm_video, args.videos, order, warmed[name],
                                           f" {name} pair {index + 1}"))
    results = {
        "experiment": "p9 worker settings",
        "command": " ".join(["python -m bench.experiment_p9"] + list(sys.argv[1:] if argv is None else argv)),
        "video": os.path.basename(video), "videos": args.videos,
        "load_average_at_start": list(load_at_start), "load_average_at_end": list(os.getloadavg()),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "variants": {name: {"worker_env": VARIANTS[name], **summary(pairs[name])} for name in names},
    }
    for name in names:
        found = results["variants"][name]
        say(f"{name:10s} ratio {found['ratio']:.2f} (pairs {', '.join(f'{r:.2f}' for r in found['ratios'])}); "
            f"videos/min 1 worker {found['videos_per_minute_1_worker']:.1f}, 2 workers "
            f"{found['videos_per_minute_2_workers']:.1f}; worker cores {found['worker_cores_1_worker']:.2f} / "
            f"{found['worker_cores_2_workers']:.2f}")
    out = args.out or os.path.join(ROOT, "bench", "results", "experiments",
                                   f"{dt.date.today().isoformat()}-p9-{'-'.join(names)}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as handle:
        json.dump(results, handle, indent=2)
    say(f"wrote {os.path.relpath(out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
