"""Benchmarks of the service: every figure is a ratio of two things measured in this run.

    python -m bench.run            # `make bench`: tiny and full presets (~20-30 min here)
    python -m bench.run --quick    # `make bench-quick`: tiny only, shorter videos (< 3 min)

The CPU this runs on is shared, so no figure is an absolute time compared
with a constant: each is a ratio of two measurements taken side by side, on
the same generated video and the same checkpoint, and where it matters the
two sides are interleaved (A B A) so a change in background load hits both.

Figures (see bench/README.md for targets and the latest values; one module each in bench/figures/):
  P1 service overhead     HTTP job wall time (upload -> completed) / sum of pure generate times
  P2 vs reference         per-segment subprocess pipeline wall time / ours
  P3 status latency       p50/p99 of GET /status, 50 pollers, while a job runs
  P4 big upload           server RSS growth while receiving 1 GiB (quick: 256 MiB); MB/s
  P5 queued jobs          server RSS with 16 queued jobs / with 1
  P6 scaling              job time for 1/2/4/8 min of video: linear fit; sampling vs decoding all frames
  store                   durable sessions: job time with the state database / without, bytes per segment,
                          restart with 1,000 ended sessions
  BLAS                    one full-size segment on OpenBLAS vs mlx's bundled BLAS
  P8 vision efficiency    the full-size vision tower's GFLOP/s / this machine's float32 GEMM peak; where the rest goes
  P7 scene-aware sampling frame_selection "changes" vs "even": frames sent (marker model, static video), job wall
                          time (full model), slowdown on a busy video (tiny model)
  P9 throughput           cluster mode: videos per minute with 2 model workers / with 1 (tiny model, 8 videos)
  cluster P1, P3          P1 (full) and P3 with the service in cluster mode (redis, API, 1 model worker)
  cuts                    cut detection: F1 and frames/s, ours beside PySceneDetect's Content/AdaptiveDetector
  reel                    reels: render time / reel duration (60 s reel, 640x360 and 1280x720 H.264+AAC sources);
                          full: the rendering's share of a job on the full-size model (10-min video)

This module decides what runs in which order, on which server and video,
and writes the results: bench/results/<date>.json (quick: <date>-quick.json)
and the table in bench/README.md. Models come from
tools.make_tiny_model.cached_checkpoint (.cache/models); videos and server
logs live in bench/work (both gitignored).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from typing import Callable, List, Optional

from bench.client import run_job
from bench.figures.cut_detection import cut_detection
from bench.figures.durable_store import restart_with_ended_sessions, store_cost
from bench.figures.p1_overhead import p1_overhead
from bench.figures.p2_reference import p2_reference
from bench.figures.p3_status_latency import p3_status_latency
from bench.figures.p4_big_upload import p4_big_upload
from bench.figures.p5_queued_jobs import p5_queued
from bench.figures.p6_scaling import p6_scaling, sampling_vs_decode_all
from bench.figures.p8_vision_efficiency import p8_vision_efficiency
from bench.figures.p7_sampling import p7_sampling
from bench.figures.p9_throughput import p9_throughput
from bench.figures.reel_rendering import reel_rendering, share_of_full_job
from bench.figures.speedups import blas_matmul, segment_ab
from bench.results import finish, missing_keys
from bench.server import running_cluster, running_service
from bench.settings import FRAME_SELECTION, FRAMES, HEAVY_JOB, MAX_TOKENS, MIB, SEGMENT_SECONDS
from bench.system import ROOT, checkpoint, say
from bench.videos import WORK, bench_video

RESULTS = os.path.join(ROOT, "bench", "results")


def plan_for(quick: bool) -> dict:
    """Video lengths and repeats of each figure."""
    return {
        # seconds of video
        "p1_tiny_video": 60 if quick else 120,
        "p1_full_video": 20,
        "p1_tiny_rounds": 5,  # the tiny job is short: fewer rounds leave the median to chance
        "p1_full_rounds": 3,
        "p3_seconds": 6 if quick else 15,
        "p3_full_seconds": 10,
        "p4_bytes": (256 if quick else 1024) * MIB,
        "p6_durations": (15, 30, 60, 120) if quick else (60, 120, 240, 480),
        "long_video": 480 if quick else 960,  # P3's jobs must outlast their windows (tiny: ~20 segments/s)
        # P9: batches of 8 copies of a 320x240 10 fps video (1 worker: 20-30 s for the 600 s one, 16-25 s quick);
        # `make bench` also runs 2 workers with one core's worth of threads each (bench/figures/p9_throughput.py)
        "p9_video": 480 if quick else 600,
        "p9_videos": 8,
        "p9_rounds": 2 if quick else 3,
        "p9_sides": ("1", "2") if quick else ("1", "2", "2-unshared"),
        "cut_rounds": 1 if quick else 3,
        "reel_rounds": 1 if quick else 3,
    }


P9_VIDEO = dict(fps=10, size=(320, 240))


def tiny_figures(plan: dict, quick: bool, want: Callable[[str], bool], results: dict, details: dict) -> None:
    """Every figure on the tiny checkpoint: P1-P6 against one server, then sampling and the BLAS matmul."""
    tiny = checkpoint("tiny")
    say("videos (written once into bench/work)")
    p1_video = bench_video(plan["p1_tiny_video"])
    long_video = bench_video(plan["long_video"])
    short_video = bench_video(10)

    if any(want(name) for name in ("p1", "p2", "p3", "p4", "p5", "p6")):
        say("tiny server (serve.py: nginx + gunicorn, JOB_WORKERS=1, MAX_QUEUED_JOBS=32)")
        with running_service("tiny", tiny, JOB_WORKERS=1, MAX_QUEUED_JOBS=32) as server:
            run_job(server.base, short_video)  # warm: the first generate compiles kernels
            if want("p1") or want("p2"):
                say(f"P1 tiny: {plan['p1_tiny_rounds']} rounds on {os.path.basename(p1_video)}")
                p1 = p1_overhead(server, tiny, p1_video, plan["p1_tiny_rounds"])
                details["p1_tiny"] = p1
                results["p1_overhead_ratio_tiny"] = p1["ratio"]
                small_video = bench_video(60, fps=10, size=(320, 240))
                say(f"P1 tiny on a smaller video: 2 rounds on {os.path.basename(small_video)}")
                small = p1_overhead(server, tiny, small_video, 2)
                details["p1_tiny_320x240"] = small
                results["p1_overhead_ratio_tiny_320x240"] = small["ratio"]
                if want("p2"):
                    say("P2 tiny: reference pipeline (per-segment ffmpeg + python -m mlx_vlm generate)")
                    p2 = p2_reference(tiny, p1_video, statistics.median(p1["job_wall_seconds"]))
                    details["p2_tiny"] = p2
                    results["p2_speedup_vs_reference_tiny"] = p2["speedup"]
                    say("P2 tiny on the smaller video")
                    p2 = p2_reference(tiny, small_video, statistics.median(small["job_wall_seconds"]))
                    details["p2_tiny_320x240"] = p2
                    results["p2_speedup_vs_reference_tiny_320x240"] = p2["speedup"]
                    if not quick:
                        say("P2 tiny, reference on mlx's bundled BLAS (the plain CLI on Linux)")
                        plain = p2_reference(tiny, p1_video, statistics.median(p1["job_wall_seconds"]), blas="bundled")
                        details["p2_tiny_plain_cli"] = plain
                        results["p2_speedup_vs_plain_cli_tiny"] = plain["speedup"]
            if want("p3"):
                say(f"P3: 50 pollers for {plan['p3_seconds']} s while a job runs")
                p3 = p3_status_latency(server, long_video, short_video, plan["p3_seconds"])
                details["p3"] = p3
                results["p3_status_p50_ms"] = p3["p50_ms"]
                results["p3_status_p99_ms"] = p3["p99_ms"]
                results["p3_status_p99_ms_idle"] = p3["idle"]["p99_ms"]
                results["p3_status_p99_ms_threaded_client"] = p3["threaded_client"]["p99_ms"]
                say(f"P3 heavy: the same while a decode-heavy job runs ({HEAVY_JOB})")
                heavy = p3_status_latency(server, long_video, short_video, plan["p3_seconds"], **HEAVY_JOB)
                details["p3_heavy_job"] = heavy
                results["p3_status_p50_ms_heavy_job"] = heavy["p50_ms"]
                results["p3_status_p99_ms_heavy_job"] = heavy["p99_ms"]
            if want("p4"):
                say(f"P4: {plan['p4_bytes'] // MIB} MiB upload")
                p4 = p4_big_upload(server, plan["p4_bytes"])
                details["p4"] = p4
                results["p4_upload_rss_growth_mib"] = p4["rss_growth_mib"]
                results["p4_upload_mb_per_s"] = p4["mb_per_s"]
            if want("p5"):
                say("P5: RSS with 1 and with 16 jobs")
                p5 = p5_queued(server, long_video, short_video)
                details["p5"] = p5
                results["p5_rss_growth_ratio"] = p5["growth_ratio"]
            if want("p6"):
                say("P6: job time vs video length")
                p6 = p6_scaling(server, plan["p6_durations"])
                details["p6"] = p6
                results["p6_fit_slope_seconds_per_minute"] = p6["slope"]
                results["p6_fit_intercept_seconds"] = p6["intercept"]
                results["p6_fit_r2"] = p6["r2"]
    if want("store"):
        say(f"Durable sessions: {plan['p1_tiny_rounds']} tiny jobs each with and without the state database")
        cost = store_cost(tiny, "tiny", p1_video, plan["p1_tiny_rounds"])
        details["store_cost_tiny"] = cost
        results["store_cost_ratio_tiny"] = cost["ratio"]
        results["store_db_bytes_per_segment"] = cost["db_bytes_per_segment_wchar"]
        say("Durable sessions: a restart with 1,000 ended sessions")
        restart = restart_with_ended_sessions(tiny, short_video)
        details["store_restart"] = restart
        results["store_restart_load_seconds_1000"] = restart["load_seconds"]
        results["store_restart_ready_ratio_1000"] = restart["ready_ratio"]
    if want("p6"):
        say("P6: frame sampling vs decoding every frame")
        sampling = sampling_vs_decode_all(bench_video(plan["p6_durations"][-1]), repeats=2 if quick else 3)
        details["p6_sampling"] = sampling
        results["p6_sampling_vs_decode_all_ratio"] = sampling["ratio"]
    if want("blas"):
        say("BLAS: matmul, OpenBLAS vs bundled")
        matmul = blas_matmul()
        details["blas_matmul"] = matmul
        results["blas_matmul_speedup"] = matmul["speedup"]


def cluster_figures(plan: dict, want: Callable[[str], bool], results: dict, details: dict) -> None:
    """Cluster mode on the tiny checkpoint: P9 (1 worker vs 2) and P3 (the API with 1 worker)."""
    tiny = checkpoint("tiny")
    short_video = bench_video(10)
    if want("p9"):
        video = bench_video(plan["p9_video"], **P9_VIDEO)
        say(f"P9: {plan['p9_videos']} videos ({os.path.basename(video)}) a batch, on {', '.join(plan['p9_sides'])} "
            f"model workers, {plan['p9_rounds']} rounds")
        with running_cluster("p9", tiny, workers=0) as cluster:
            p9 = p9_throughput(cluster, video, bench_video(10, **P9_VIDEO), plan["p9_videos"], plan["p9_rounds"],
                               plan["p9_sides"])
        details["p9"] = p9
        results["p9_throughput_ratio_2_workers"] = p9["ratio"]
        results["p9_videos_per_minute_1_worker"] = p9["videos_per_minute_1_worker"]
        results["p9_videos_per_minute_2_workers"] = p9["videos_per_minute_2_workers"]
        if "2-unshared" in plan["p9_sides"]:
            results["p9_throughput_ratio_2_workers_unshared"] = p9["ratio_medians"]["2-unshared/1"]
    if want("p3-cluster"):
        long_video = bench_video(plan["long_video"])
        say("cluster, tiny: redis-server, the API (serve.py: nginx + gunicorn x WEB_PROCESSES), 1 model worker")
        with running_cluster("cluster-tiny", tiny, workers=1) as cluster:
            run_job(cluster.base, short_video)  # warm the worker
            say(f"P3 cluster: 50 pollers for {plan['p3_seconds']} s while a job runs")
            p3 = p3_status_latency(cluster, long_video, short_video, plan["p3_seconds"])
            details["p3_cluster"] = p3
            results["p3_status_p99_ms_cluster"] = p3["p99_ms"]
            say(f"P3 cluster heavy: the same while a decode-heavy job runs ({HEAVY_JOB})")
            heavy = p3_status_latency(cluster, long_video, short_video, plan["p3_seconds"], **HEAVY_JOB)
            details["p3_heavy_job_cluster"] = heavy
            results["p3_status_p99_ms_heavy_job_cluster"] = heavy["p99_ms"]


def cut_figures(plan: dict, want: Callable[[str], bool], results: dict, details: dict) -> None:
    """Cut detection (no model): our detector beside PySceneDetect's on the generated shot videos."""
    if want("cuts"):
        say(f"cuts: our detector, PySceneDetect's ContentDetector and AdaptiveDetector, {plan['cut_rounds']} round(s)")
        cuts = cut_detection(plan["cut_rounds"])
        details["cut_detection"] = cuts
        for name in ("ours", "content", "adaptive"):
            results[f"cuts_f1_{name}"] = cuts[name]["f1"]
            results[f"cuts_frames_per_second_{name}"] = cuts[name]["frames_per_second"]
            results[f"cuts_frames_per_cpu_second_{name}"] = cuts[name]["frames_per_cpu_second"]


def reel_figures(plan: dict, want: Callable[[str], bool], results: dict, details: dict) -> None:
    """Rendering a 60 s reel (no model): its time over its duration, from a 640x360 and a 1280x720 source."""
    if want("reel"):
        say(f"reel: a 60 s reel from 120 s H.264+AAC sources, 640x360 and 1280x720, {plan['reel_rounds']} round(s)")
        reel = reel_rendering(plan["reel_rounds"])
        details["reel"] = reel
        for size, figure in reel.items():
            results[f"reel_render_ratio_{size}"] = figure["ratio"]


def full_figures(plan: dict, want: Callable[[str], bool], results: dict, details: dict) -> None:
    """The figures that need the full-size checkpoint (`make bench` only): P1-P3, BLAS, the vision speed-ups, P8."""
    full = checkpoint("full")
    full_video = bench_video(plan["p1_full_video"])
    if want("p1") or want("p2"):
        say("full server (serve.py: nginx + gunicorn)")
        with running_service("full", full) as server:
            run_job(server.base, bench_video(10), max_tokens=1, frames_per_segment=1)  # warm
            say(f"P1 full: pure, job, pure, job, pure on {os.path.basename(full_video)}")
            p1 = p1_overhead(server, full, full_video, plan["p1_full_rounds"])
            if want("p3"):
                say(f"P3 full: 50 pollers for {plan['p3_full_seconds']} s while a full-size job runs")
                p3 = p3_status_latency(server, full_video, bench_video(10), plan["p3_full_seconds"],
                                       idle_job=dict(frames_per_segment=1, max_tokens=1),
                                       segment_duration=SEGMENT_SECONDS)
                details["p3_full"] = p3
                results["p3_status_p99_ms_full_job"] = p3["p99_ms"]
                results["p3_status_p99_ms_full_job_threaded_client"] = p3["threaded_client"]["p99_ms"]
        details["p1_full"] = p1
        results["p1_overhead_ratio_full"] = p1["ratio"]
        if "reel" in details:  # the rendering beside the analysis it follows, both measured in this run
            per_segment = statistics.median(p1["job_wall_seconds"]) / p1["segments"]
            render = statistics.median(details["reel"]["1280x720"]["render_seconds"])
            details["reel_share"] = {"seconds_per_segment_full": per_segment, "render_seconds_1280x720": render,
                                     "video_minutes": 10, "worst_case": "a 60 s video, every segment a highlight"}
            results["reel_share_of_job_full"] = share_of_full_job(render, per_segment, 60)
            results["reel_share_of_job_full_worst"] = share_of_full_job(render, per_segment, 6)
        if want("p2"):
            say("P2 full: reference pipeline")
            p2 = p2_reference(full, full_video, statistics.median(p1["job_wall_seconds"]))
            details["p2_full"] = p2
            results["p2_speedup_vs_reference_full"] = p2["speedup"]
    if want("p1-cluster"):
        say("cluster, full: redis-server, the API (serve.py: nginx + gunicorn x WEB_PROCESSES), 1 model worker")
        with running_cluster("cluster-full", full, workers=1) as cluster:
            run_job(cluster.base, bench_video(10), max_tokens=1, frames_per_segment=1)  # warm the worker
            say(f"P1 full, cluster mode: pure, job, pure, job, pure on {os.path.basename(full_video)}")
            p1 = p1_overhead(cluster, full, full_video, plan["p1_full_rounds"])
        details["p1_full_cluster"] = p1
        results["p1_overhead_ratio_full_cluster"] = p1["ratio"]
    if want("store"):
        say(f"Durable sessions: {plan['p1_full_rounds']} full-size jobs each with and without the state database")
        cost = store_cost(full, "full", full_video, plan["p1_full_rounds"])
        details["store_cost_full"] = cost
        results["store_cost_ratio_full"] = cost["ratio"]
    if want("blas"):
        # A whole 8-frame, 32-token segment on the bundled BLAS would take ~20 min here
        # (matmul ~30x slower): measure 1 frame + 8 tokens, identical for both.
        say("BLAS: one full-size segment, OpenBLAS vs bundled")
        blas = segment_ab(full, full_video, "USE_OPENBLAS", frames=1, max_tokens=8)
        blas["workload"] = "reduced: 1 frame (512x512) + 8 tokens, one segment, identical for both"
        details["blas_full"] = blas
        results["blas_speedup_full"] = blas["speedup"]
    if want("vision"):
        say("Vision tower split across CPU streams: one full-size segment, on vs off")
        split = segment_ab(full, full_video, "PARALLEL_VISION", frames=None, max_tokens=MAX_TOKENS)
        split["workload"] = f"one segment, {FRAMES} frames (512x512) + {MAX_TOKENS} tokens"
        details["parallel_vision_full"] = split
        results["parallel_vision_speedup_full"] = split["speedup"]
        say("Vision tower's softmax and GELU with powers of two: one full-size segment, on vs off")
        base2 = segment_ab(full, full_video, "FAST_ACTIVATIONS", frames=None, max_tokens=MAX_TOKENS)
        base2["workload"] = split["workload"]
        details["fast_activations_full"] = base2
        results["fast_activations_speedup_full"] = base2["speedup"]
    if want("p8"):
        say(f"P8: the vision tower's GFLOP/s vs the GEMM peak, {FRAMES} frames (a fresh process)")
        p8 = p8_vision_efficiency(full, bench_video(10), FRAMES)
        details["p8"] = p8
        gap = p8["gap_share_of_product"]
        results.update({
            "p8_vision_fraction_of_peak": p8["fraction_of_peak"],
            "p8_vision_gflops": p8["vision_gflops"],
            "p8_gemm_peak_gflops": p8["gemm_peak_gflops"],
            "p8_gemm_two_streams_gflops": p8["gemm_two_streams_gflops"],
            "p8_vision_gflop_per_frame": p8["flops_per_frame"]["total"] / 1e9,
            "p8_vision_seconds_per_frame": p8["vision_seconds_per_frame"],
            "p8_preprocess_seconds_per_frame": p8["preprocess_seconds_per_frame"],
            "p8_matmul_gflops": p8["matmul_gflops"],
            "p8_projection_mlp_gflops": (p8["flops_per_frame"]["qkv_out_projections"] +
                                         p8["flops_per_frame"]["mlp_matmuls"]) /
                                        (p8["part_seconds_per_frame"]["qkv_out_projections"] +
                                         p8["part_seconds_per_frame"]["mlp_matmuls"]) / 1e9,
            "p8_attention_matmul_gflops": p8["part_gflops"]["attention_matmuls"],
            "p8_share_flops_at_peak": gap["flops_at_peak"],
            "p8_share_matmuls_below_peak": gap["matmuls_below_peak"],
            "p8_share_softmax": gap["softmax"],
            "p8_share_gelu": gap["gelu"],
            "p8_share_layernorm_residuals": gap["layernorm"] + gap["residuals_and_copies"],
            "p8_share_step_overhead_and_split": gap["step_by_step_overhead"] + gap["stream_split"],
        })


def run(quick: bool, only: Optional[set], skip_full: bool) -> dict:
    want = (lambda name: only is None or name in only)
    results: dict = {"mode": "quick" if quick else "full"}
    details: dict = {}
    plan = plan_for(quick)
    results["settings"] = {"segment_duration": SEGMENT_SECONDS, "frames_per_segment": FRAMES,
                           "frame_selection": FRAME_SELECTION,
                           "max_tokens": MAX_TOKENS, "video": "synthetic 640x360, 25 fps, mpeg4 (mp4v), GOP 12",
                           **{k: v for k, v in plan.items() if k != "p4_bytes"}, "p4_mib": plan["p4_bytes"] // MIB}
    tiny_figures(plan, quick, want, results, details)
    cut_figures(plan, want, results, details)
    reel_figures(plan, want, results, details)
    if want("p7"):
        p7_sampling(quick, not quick and not skip_full, results, details)
    cluster_figures(plan, want, results, details)
    if not quick and not skip_full:
        full_figures(plan, want, results, details)
    results["details"] = details
    return results


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description="Benchmarks of the video-analysis service (ratios only).")
    parser.add_argument("--quick", action="store_true", help="tiny preset only, shorter videos, fewer repeats")
    parser.add_argument("--only", help="comma-separated subset: p1,p2,p3,p4,p5,p6,p7,store,blas,vision,p8,p9,"
                                       "p1-cluster,p3-cluster,cuts,reel (default --out then: bench/results/experiments/"
                                       "<date>-only-<subset>"
                                       ".json, so a partial run never takes the place of a complete one)")
    parser.add_argument("--skip-full", action="store_true", help="full mode without the full-size checkpoint")
    parser.add_argument("--out", help="results file (default bench/results/<date>[-quick].json)")
    parser.add_argument("--no-readme", action="store_true", help="do not update the table in bench/README.md")
    args = parser.parse_args(argv[1:])
    only = set(args.only.split(",")) if args.only else None
    os.makedirs(WORK, exist_ok=True)
    started, load_at_start = time.perf_counter(), os.getloadavg()
    results = run(args.quick, only, args.skip_full)
    results["bench_seconds"] = time.perf_counter() - started
    finish(results, argv, load_at_start)
    date = dt.date.today().isoformat()
    name = f"{date}{'-quick' if args.quick else ''}"
    if only is not None:
        name = f"experiments/{name}-only-{'-'.join(sorted(only))}"
    out = args.out or os.path.join(RESULTS, f"{name}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as handle:
        json.dump(results, handle, indent=2)
    say(f"wrote {os.path.relpath(out, ROOT)} in {results['bench_seconds']:.0f} s")
    if not args.no_readme and only is None:
        from bench.report import update_readme

        update_readme()
        say("updated the table in bench/README.md")
    for key, target in results["targets"].items():
        state = {True: "met", False: "MISSED", None: "-"}[target["met"]]
        say(f"  {key:34s} {target['value']:10.3f}  target {target['target']:8s} {state}")
    missing = missing_keys(results) if only is None else []
    if missing:
        say(f"missing keys: {', '.join(missing)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
