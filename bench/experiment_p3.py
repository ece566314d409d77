"""P3 before/after: GET /status latency under a job, the product against variants of it, interleaved.

    python -m bench.experiment_p3 [--rounds 3] [--seconds 6] [--server-times] [--variants product,bare,nosplit]
    python -m bench.experiment_p3 --variants product,cluster,cluster-noaof   # cluster mode beside the embedded one
    python -m bench.experiment_p3 --variants cluster --heavy                 # during make bench's decode-heavy job

Each round starts one server per variant in turn (same tiny checkpoint, same
videos) and measures P3 exactly as `make bench` does
(bench/figures/p3_status_latency.py); rounds interleave the variants so
background load on the shared CPU hits them alike. Prints the
median p50/p99 per variant over the rounds and writes
bench/work/experiment-p3.json. A variant is the product started with a few
environment variables, behind nginx (serve.py) or not (`bare`), or the
service in cluster mode (`cluster*`: bench/server.py's running_cluster, a
redis-server of its own and one model worker).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys

from bench.client import run_job
from bench.figures.p3_status_latency import p3_status_latency
from bench.pollers import ONE_THREAD_AGENT, THREADED_AGENT, percentile
from bench.server import running_cluster, running_service
from bench.settings import HEAVY_JOB
from bench.system import checkpoint, say
from bench.videos import WORK, bench_video

# name: (the server's extra environment, how it is started: tools/service_process.py). The variants that
# patched the product through bench/gunicorn_experiment.conf.py are gone (bench/README.md, "Tools").
VARIANTS = {
    "product": ({}, "make run"),
    "nosplit": ({"PARALLEL_VISION": "0"}, "make run"),
    # the product without its state database (nothing written to disk): what durable sessions cost P3
    "nostore": ({"STATE_DB": ":memory:"}, "make run"),
    # the model's process in the normal CPU class instead of SCHED_IDLE (model/cpu_priority.py)
    "normalcpu": ({"MODEL_YIELDS_CPU": "0"}, "make run"),
    # gunicorn alone on the port, as `make run` served before serve.py put nginx in front
    "bare": ({}, "gunicorn"),
    # cluster mode (`make bench`'s p3_status_p99_ms_cluster): redis-server with its AOF fsynced at every write
    "cluster": ({}, "make run"),
    # the same with the AOF fsynced once a second (Redis's default once the AOF is on), and with no AOF
    "cluster-everysec": ({}, "make run"),
    "cluster-noaof": ({}, "make run"),
    # one gunicorn process instead of WEB_PROCESSES=2
    "cluster-1web": ({"WEB_PROCESSES": "1"}, "make run"),
    # the model worker given one core (MODEL_CORES=1): is the wait the cores the worker takes, or Redis itself?
    "cluster-1core": ({}, "make run"),
    # the model worker in the normal CPU class instead of SCHED_IDLE
    "cluster-normalcpu": ({}, "make run"),
}
_REDIS_OPTIONS = {"cluster": {}, "cluster-everysec": {"appendfsync": "everysec"}, "cluster-noaof": {"appendonly": False},
                  "cluster-1web": {}, "cluster-1core": {}, "cluster-normalcpu": {}}
_WORKER_ENV = {"cluster-1core": {"MODEL_CORES": "1"}, "cluster-normalcpu": {"MODEL_YIELDS_CPU": "0"}}


def _running(name: str, model: str, how: str, env: dict):
    """The variant's service: embedded (JOB_WORKERS=1, as P3 runs it) or a cluster with one model worker."""
    if name in _REDIS_OPTIONS:
        return running_cluster(f"exp-{name}", model, workers=1, how=how, redis_options=_REDIS_OPTIONS[name],
                               worker_env=_WORKER_ENV.get(name), **env)
    return running_service(f"exp-{name}", model, how=how, JOB_WORKERS=1, **env)


_ACCESS_MARK = "P3TIME"


def _server_side_p99(log_path: str) -> dict:
    """p99 of gunicorn's own request time (from parsing to the last byte written), per client, in the busy windows.

    Each client names itself in User-Agent. The busy job's status URL is the
    last one the one-thread client polled (its idle window polled another).
    """
    pattern = re.compile(_ACCESS_MARK + r" GET (/api/v1/video/status/\S+) HTTP/1.1 (\d+) \"([^\"]*)\"")
    with open(log_path) as handle:
        entries = pattern.findall(handle.read())
    busy_path = [path for path, _, agent in entries if agent == ONE_THREAD_AGENT][-1]
    return {
        client: percentile([int(micros) / 1000 for path, micros, agent in entries
                            if path == busy_path and agent == user_agent], 99)
        for client, user_agent in (("one_thread", ONE_THREAD_AGENT), ("threads", THREADED_AGENT))
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--variants", default="product,bare")
    parser.add_argument("--video-seconds", type=float, default=480)
    parser.add_argument("--heavy", action="store_true", help="during make bench's decode-heavy job (HEAVY_JOB)")
    parser.add_argument("--server-times", action="store_true",
                        help="also read each status request's time inside gunicorn from its access log (%%(D)s)")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    tiny = checkpoint("tiny")
    long_video, short_video = bench_video(args.video_seconds), bench_video(10)
    runs = {name: [] for name in names}
    for round_index in range(args.rounds):
        for name in names:
            env, how = VARIANTS[name]
            if args.server_times:
                env = dict(env, GUNICORN_CMD_ARGS=f"--access-logformat '{_ACCESS_MARK} %(r)s %(D)s \"%(a)s\"' --log-level info")
            with _running(name, tiny, how, env) as server:
                run_job(server.base, short_video)
                redis = getattr(server, "redis", None)
                if redis is not None:  # Redis's own record of its stalls of 2 ms or more (LATENCY LATEST)
                    with redis.client() as client:
                        client.config_set("latency-monitor-threshold", 2)
                        client.execute_command("LATENCY", "RESET")
                result = p3_status_latency(server, long_video, short_video, args.seconds, interval=args.interval,
                                           **(HEAVY_JOB if args.heavy else {}))
                if redis is not None:
                    with redis.client() as client:
                        result["redis_worst_ms"] = {event.decode(): worst for event, _when, _last, worst
                                                    in client.execute_command("LATENCY", "LATEST")}
                if args.server_times:
                    result["server_p99_ms"] = _server_side_p99(getattr(server, "api", server).log_path)
            result["load_average"] = os.getloadavg()
            runs[name].append(result)
            inside = (f" (inside gunicorn {result['server_p99_ms']['one_thread']:.1f} / "
                      f"{result['server_p99_ms']['threads']:.1f})" if args.server_times else "")
            say(f"round {round_index + 1} {name:9s} idle p99 {result['idle']['p99_ms']:6.1f} ms | job p50 "
                f"{result['p50_ms']:5.1f} p99 {result['p99_ms']:6.1f} ms{inside}, thread per poller p99 "
                f"{result['threaded_client']['p99_ms']:5.1f} | running "
                f"{result['job_still_running_at_end']} | load {result['load_average'][0]:.1f}"
                + (f" | Redis's worst stalls {result['redis_worst_ms']} ms" if "redis_worst_ms" in result else ""))
    summary = {
        name: {
            "job_p50_ms": statistics.median(r["p50_ms"] for r in results),
            "job_p99_ms": statistics.median(r["p99_ms"] for r in results),
            "job_p99_ms_threaded_client": statistics.median(r["threaded_client"]["p99_ms"] for r in results),
            "idle_p99_ms": statistics.median(r["idle"]["p99_ms"] for r in results),
            "rounds": len(results),
        }
        for name, results in runs.items()
    }
    with open(os.path.join(WORK, "experiment-p3.json"), "w") as handle:
        json.dump({"summary": summary, "runs": runs}, handle, indent=2)
    for name, row in summary.items():
        print(f"{name:9s} job p50 {row['job_p50_ms']:6.1f} ms  job p99 {row['job_p99_ms']:6.1f} ms  "
              f"(thread per poller {row['job_p99_ms_threaded_client']:6.1f} ms)  idle p99 {row['idle_p99_ms']:6.1f} ms  "
              f"({row['rounds']} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
