"""P5 before/after: worker RSS with 16 jobs vs 1, glibc's default malloc arenas vs at most 2.

    python -m bench.experiment_p5 [--rounds 4] [--variants default,arena2,mallopt2]

arena2 starts the server with MALLOC_ARENA_MAX=2; mallopt2 sets the same limit
from inside the worker (bench/gunicorn_experiment.conf.py, EXP_MALLOPT=2).

glibc gives each thread that allocates concurrently its own arena (up to
8 x cores); memory freed in an arena stays in the process. Every upload is
received, stored and probed (OpenCV decodes frames) on one of gunicorn's 16
request threads, so queueing jobs through many threads can leave many
arenas holding freed memory. Rounds interleave the two variants; prints the
growth ratio of each run and the medians; writes bench/work/experiment-p5.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from bench.run import Server, checkpoint, p5_queued, run_job, say
from bench.videos import WORK, bench_video

VARIANTS = {
    "default": ("gunicorn.conf.py", {}),
    "arena2": ("gunicorn.conf.py", {"MALLOC_ARENA_MAX": "2"}),
    "mallopt2": ("bench/gunicorn_experiment.conf.py", {"EXP_MALLOPT": "2"}),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--long-video-seconds", type=float, default=120)
    parser.add_argument("--variants", default="default,arena2,mallopt2")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    tiny = checkpoint("tiny")
    long_video, short_video = bench_video(args.long_video_seconds), bench_video(10)
    runs = {name: [] for name in names}
    for round_index in range(args.rounds):
        for name in names:
            config, env = VARIANTS[name]
            with Server(f"exp5-{name}", tiny, config=config, JOB_WORKERS=1, MAX_QUEUED_JOBS=32, **env) as server:
                run_job(server.base, short_video)
                result = p5_queued(server, long_video, short_video)
            runs[name].append(result)
            say(f"round {round_index + 1} {name:8s} growth {result['growth_ratio']:+.1%} "
                f"({result['rss_one_job_mib']:.1f} -> {result['rss_16_jobs_mib']:.1f} MiB) "
                f"{result['states_while_measured']}")
    with open(os.path.join(WORK, "experiment-p5.json"), "w") as handle:
        json.dump(runs, handle, indent=2)
    for name, results in runs.items():
        print(f"{name:8s} median growth {statistics.median(r['growth_ratio'] for r in results):+.1%}, "
              f"median RSS with 1 job {statistics.median(r['rss_one_job_mib'] for r in results):.1f} MiB, "
              f"runs {['%+.1f%%' % (100 * r['growth_ratio']) for r in results]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
