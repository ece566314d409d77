"""Slow and stalled clients against a serving set-up: do /health and status polls still get answers?

    python -m bench.experiment_slow_clients                       # gunicorn, nginx (serve.py), gunicorn-256
    python -m bench.experiment_slow_clients --setups nginx,nginx+quiet --seconds 15

Each set-up serves the tiny checkpoint with one job running (a 600 s video
in 1 s segments). Then, all from this process:

- 64 connections send `GET /health HTTP/1.1\\r\\nHost: x\\r\\n` and stop
  (stalled mid-header); 64 connect and send nothing (silent); 16 POST an
  upload and trickle its body at 1 KiB/s (with `--drip N`, N more send a
  header one byte a second, never ending it). An attacker keeps the pressure
  on: a stalled or silent connection the server closes is opened again at
  once. How long the server let each stalled connection live is recorded
  (the header timeout at work). (bench/slow_clients/attack.py)
- every 0.1 s a probe opens a new connection and GETs /health or the job's
  status, alternately, with `--probe-timeout` (10 s) to get its answer;
  latency p50/p99/max of the answered ones, and the failures.
  (bench/slow_clients/probes.py)
- every 0.25 s the threads and RSS of gunicorn's worker (the process that
  answers requests; the analysis child is not counted) and of nginx's
  processes are sampled.

Set-ups (bench/slow_clients/setups.py, started by tools/service_process.py):
  gunicorn      `gunicorn --config gunicorn.conf.py` alone (as before: 16 threads)
  gunicorn-256  the same with HTTP_THREADS=256
  nginx         serve.py (`make run`): nginx in front, gunicorn on a unix socket; HEADER_TIMEOUT_SECONDS=10
  <name>+quiet  the same without the attack (the control)

Results: printed, and written to bench/results/slow-clients/<date>.json.
Loopback only; every loop is bounded in time.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import threading
import time
from typing import List, Optional

import requests

from bench.slow_clients.attack import Attack
from bench.slow_clients.probes import latency_summary, probe_window
from bench.slow_clients.setups import HEADER_TIMEOUT, process_groups, sample, serving
from bench.system import ROOT, checkpoint
from bench.videos import bench_video

# A folder of its own: bench/report.py and the smoke tests read every bench/results/*.json as a bench run.
RESULTS = os.path.join(ROOT, "bench", "results", "slow-clients")


def say(message: str) -> None:
    print(f"[slow-clients {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_setup(name: str, model: str, video: str, args) -> dict:
    quiet = name.endswith("+quiet")  # the same set-up and probes without the attack: the control
    say(f"{name}: starting")
    result: dict = {"setup": name, "attack_connections": not quiet}
    with serving(name.replace("+quiet", ""), model) as setup:
        groups = process_groups(setup)
        with open(video, "rb") as handle:
            answer = requests.post(setup.base + "/api/v1/video/upload", data={"segment_duration": "1"},
                                   files={"video": ("long.mp4", handle, "video/mp4")}, timeout=60)
        answer.raise_for_status()
        sid = answer.json()["sessionId"]
        before = sample(groups)
        samples = []
        sampling = threading.Event()

        def sampler():
            while not sampling.is_set():
                samples.append(sample(groups))
                sampling.wait(0.25)

        sample_thread = threading.Thread(target=sampler, daemon=True)
        sample_thread.start()
        counts = (0, 0, 0, 0) if quiet else (args.stalled, args.silent, args.trickle, args.drip)
        say(f"{name}: {counts[0]} stalled + {counts[1]} silent + {counts[2]} trickling"
            f"{f' + {counts[3]} dripping' if counts[3] else ''} connections")
        attack = Attack(setup.port, *counts).start()
        time.sleep(1.0)  # let them take what they can
        say(f"{name}: probing /health and status for {args.seconds:.0f} s")
        results = probe_window(setup.port, ["/health", f"/api/v1/video/status/{sid}"], args.seconds, args.every,
                               args.probe_timeout)
        result["attack"] = attack.finish()
        sampling.set()
        sample_thread.join()
        result["probes"] = [[r["path"] == "/health", r["ms"], r["error"]] for r in results]  # for pooling rounds
        result["health"] = latency_summary([r for r in results if r["path"] == "/health"], args.probe_timeout)
        result["status"] = latency_summary([r for r in results if r["path"] != "/health"], args.probe_timeout)
        result["all"] = latency_summary(results, args.probe_timeout)
        result["resources"] = {
            group: {"before": before[group],
                    "max_rss_mib": max(s[group]["rss_kib"] for s in samples) / 1024,
                    "max_threads": max(s[group]["threads"] for s in samples),
                    "after_rss_mib": samples[-1][group]["rss_kib"] / 1024,
                    "after_threads": samples[-1][group]["threads"]}
            for group in before
        }
        try:
            job = requests.get(f"{setup.base}/api/v1/video/status/{sid}", timeout=5).json()
            result["job_status_at_end"] = job.get("status")
            requests.post(f"{setup.base}/api/v1/video/cancel/{sid}", timeout=5)
        except requests.RequestException as error:
            result["job_status_at_end"] = f"no answer ({type(error).__name__})"
        stopping = time.monotonic()
    result["exit_status"] = setup.process.returncode
    result["stop_seconds"] = time.monotonic() - stopping
    return result


def show(result: dict) -> None:
    def ms(value):
        return "-" if value is None else f"{value:.1f}"

    for kind in ("health", "status"):
        s = result[kind]
        say(f"  {result['setup']:12s} {kind:7s} p50 {ms(s['p50_ms'])} ms  p99 {ms(s['p99_ms'])} ms  "
            f"max {ms(s['max_ms'])} ms  answered {s['answered_200']}/{s['requests']}  failures {s['failure_kinds']}")
    attack = result["attack"]

    def closed(kind: str) -> str:
        values = attack["closed_by_server"][kind]
        return "none" if not values else f"{values['n']} after {values['min_s']:.1f}-{values['max_s']:.1f} s"

    say(f"  {result['setup']:12s} closed by the server: stalled {closed('stalled')}, silent {closed('silent')}, "
        f"trickling {closed('trickle')}, dripping {closed('drip')}; still open at end {attack['still_open_at_end']}")
    for group, values in result["resources"].items():
        say(f"  {result['setup']:12s} {group}: threads {values['before']['threads']} -> max {values['max_threads']}, "
            f"RSS {values['before']['rss_kib'] / 1024:.0f} -> max {values['max_rss_mib']:.0f} MiB")


def pool(results: List[dict], timeout: float) -> dict:
    """One set-up's rounds together: /health and status probes pooled; the extremes of the rest."""
    probes = [{"path": "/health" if health else "status", "ms": ms, "error": error}
              for result in results for health, ms, error in result["probes"]]
    summary = latency_summary(probes, timeout)
    stalled = [r["attack"]["closed_by_server"]["stalled"] for r in results]
    resources = [r["resources"] for r in results]

    def rounded(value, digits=1):
        return None if value is None else round(value, digits)

    return {
        "rounds": len(results),
        "requests": summary["requests"],
        "failures": summary["failures"],
        "p50_ms": rounded(summary["p50_ms"]),
        "p99_ms": rounded(summary["p99_ms"]),
        "max_ms": rounded(summary["max_ms"]),
        "p99_ms_failures_as_timeout": rounded(summary["p99_ms_failures_as_timeout"]),
        "stalled_closed_s": None if not all(stalled) else
        [rounded(min(s["min_s"] for s in stalled)), rounded(max(s["max_s"] for s in stalled))],
        "app_threads_max": max(r["app"]["max_threads"] for r in resources),
        "app_rss_max_mib": rounded(max(r["app"]["max_rss_mib"] for r in resources), 0),
        "app_rss_before_mib": rounded(min(r["app"]["before"]["rss_kib"] for r in resources) / 1024, 0),
        "nginx_rss_max_mib": rounded(max(r["nginx"]["max_rss_mib"] for r in resources), 0)
        if all("nginx" in r for r in resources) else None,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setups", default="gunicorn,nginx,gunicorn-256",
                        help="comma-separated: gunicorn, gunicorn-<threads>, nginx, each optionally +quiet")
    parser.add_argument("--seconds", type=float, default=15.0, help="probing window")
    parser.add_argument("--rounds", type=int, default=1, help="the set-ups in turn, this many times")
    parser.add_argument("--every", type=float, default=0.1, help="seconds between probes")
    parser.add_argument("--probe-timeout", type=float, default=10.0)
    parser.add_argument("--stalled", type=int, default=64)
    parser.add_argument("--silent", type=int, default=64)
    parser.add_argument("--trickle", type=int, default=16)
    parser.add_argument("--drip", type=int, default=0,
                        help="connections whose header never ends: one more byte every second")
    parser.add_argument("--out", help="default bench/results/slow-clients/<date>.json")
    args = parser.parse_args(argv)

    model = checkpoint("tiny")
    video = bench_video(600, fps=1, size=(96, 72))
    load_at_start = os.getloadavg()
    results = []
    names = [name.strip() for name in args.setups.split(",")]
    for index in range(args.rounds):  # set-ups in turn, so a change in background load hits them all
        for name in names:
            result = run_setup(name, model, video, args)
            result["round"] = index + 1
            show(result)
            results.append(result)
    pooled = {name: pool([r for r in results if r["setup"] == name], args.probe_timeout) for name in names}
    say(f"all rounds ({args.rounds}), load average {load_at_start[0]:.1f} -> {os.getloadavg()[0]:.1f}:")
    for name, summary in pooled.items():
        say(f"  {name:12s} p50 {summary['p50_ms']} ms  p99 {summary['p99_ms']} ms  max {summary['max_ms']} ms  "
            f"failures {summary['failures']}/{summary['requests']}  "
            f"stalled closed after {summary['stalled_closed_s']}  "
            f"app threads max {summary['app_threads_max']}  app RSS max {summary['app_rss_max_mib']} MiB  "
            f"nginx RSS max {summary['nginx_rss_max_mib']} MiB")
    out = args.out or os.path.join(RESULTS, f"{dt.date.today().isoformat()}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    document = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "header_timeout_seconds": HEADER_TIMEOUT,
        "load_average_at_start": list(load_at_start),
        "load_average_at_end": list(os.getloadavg()),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "pooled": pooled,
        "results": results,
    }
    with open(out, "w") as handle:
        json.dump(document, handle, indent=2)
    say(f"wrote {os.path.relpath(out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
