"""P1 before/after: why a job in the server costs more than pure generate, by client poll interval and server variant.

    python -m bench.experiment_p1 [--preset full] [--frames 2] [--max-tokens 8] [--rounds 3]
        [--polls 0.02,1.0] [--variants product,nosplit,bare]

One server per variant (experiment_p3.VARIANTS) and one pure-inference
worker, both warm; then, per round and per client poll interval: pure pass,
job, pure pass. The job's wall time comes from the server's finishedAt, so
the poll interval changes only how often the server is asked, not the
precision. Prints job/pure ratios; writes bench/work/experiment-p1.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from bench.client import run_job
from bench.experiment_p3 import VARIANTS
from bench.server import PureWorker, running_service
from bench.settings import SEGMENT_SECONDS
from bench.system import checkpoint, say
from bench.videos import WORK, bench_video


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--video-seconds", type=float, default=10)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--polls", default="0.02,1.0")
    parser.add_argument("--variants", default="product")
    args = parser.parse_args(argv)
    model = checkpoint(args.preset)
    video = bench_video(args.video_seconds)
    polls = [float(p) for p in args.polls.split(",")]
    params = dict(frames_per_segment=args.frames, max_tokens=args.max_tokens)
    request = dict(video=video, segment_duration=SEGMENT_SECONDS, frames_per_segment=args.frames,
                   max_tokens=args.max_tokens, warmup=False)
    rows = []
    worker = PureWorker(model)
    try:
        worker.run(**dict(request, warmup=True))
        for variant in args.variants.split(","):
            env, how = VARIANTS[variant]
            with running_service(f"exp1-{variant}", model, how=how, **env) as server:
                run_job(server.base, video, **params)  # warm, same shapes
                for round_index in range(args.rounds):
                    for poll in polls:
                        before = worker.run(**request)["sum_generate_seconds"]
                        time.sleep(0.5)
                        job = run_job(server.base, video, poll=poll, **params)
                        time.sleep(0.5)
                        after = worker.run(**request)["sum_generate_seconds"]
                        ratio = job["wall_seconds"] / ((before + after) / 2)
                        rows.append({"variant": variant, "poll": poll, "round": round_index + 1, "ratio": ratio,
                                     "job": job["wall_seconds"], "engine": job["engine_seconds"],
                                     "pure": [before, after], "load": os.getloadavg()[0]})
                        say(f"{variant} poll {poll:5.2f} s: job {job['wall_seconds']:.2f} s, pure "
                            f"{before:.2f}/{after:.2f} s -> {ratio:.3f} (load {rows[-1]['load']:.1f})")
    finally:
        worker.close()
    with open(os.path.join(WORK, "experiment-p1.json"), "w") as handle:
        json.dump(rows, handle, indent=2)
    for variant in args.variants.split(","):
        for poll in polls:
            ratios = [r["ratio"] for r in rows if r["variant"] == variant and r["poll"] == poll]
            print(f"{variant:9s} poll {poll:5.2f} s: median job/pure {statistics.median(ratios):.3f}  {['%.3f' % r for r in ratios]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
