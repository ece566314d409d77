"""The results table of bench/README.md, rebuilt from the newest files in bench/results.

    python -m bench.report          # print the table
    python -m bench.report --write  # and put it in bench/README.md (between the results markers)
"""
from __future__ import annotations

import glob
import json
import os
import sys
from typing import Optional

BENCH = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(BENCH, "results")
README = os.path.join(BENCH, "README.md")
START, END = "<!-- results:start -->", "<!-- results:end -->"

# key, label, unit/format, target text
ROWS = (
    ("p1_overhead_ratio_full", "P1 service overhead, full", "{:.3f}x", "<= 1.05"),
    ("p1_overhead_ratio_tiny", "P1 service overhead, tiny", "{:.2f}x", "<= 1.5"),
    ("p1_overhead_ratio_tiny_320x240", "P1 service overhead, tiny, 320x240 10 fps video", "{:.2f}x", ""),
    ("p2_speedup_vs_reference_full", "P2 speed-up vs reference, full", "{:.2f}x", ">= 1.5"),
    ("p2_speedup_vs_reference_tiny", "P2 speed-up vs reference, tiny", "{:.1f}x", ">= 20"),
    ("p2_speedup_vs_reference_tiny_320x240", "P2 speed-up vs reference, tiny, 320x240 10 fps video", "{:.1f}x", ""),
    ("p2_speedup_vs_plain_cli_tiny", "P2 vs plain CLI (bundled BLAS), tiny", "{:.1f}x", ""),
    ("p3_status_p50_ms", "P3 GET /status p50, 50 pollers", "{:.1f} ms", ""),
    ("p3_status_p99_ms", "P3 GET /status p99, 50 pollers", "{:.1f} ms", "<= 10 ms"),
    ("p3_status_p99_ms_threaded_client", "P3 same job, a thread per poller (the old client)", "{:.1f} ms", ""),
    ("p3_status_p99_ms_idle", "P3 same, server idle (baseline)", "{:.1f} ms", ""),
    ("p3_status_p99_ms_heavy_job", "P3 same, during a decode-heavy job (64 frames a second of video)", "{:.1f} ms",
     "<= 10 ms"),
    ("p3_status_p99_ms_full_job", "P3 same, during a full-size job", "{:.1f} ms", ""),
    ("p3_status_p99_ms_full_job_threaded_client", "P3 full-size job, a thread per poller", "{:.1f} ms", ""),
    ("p4_upload_rss_growth_mib", "P4 RSS growth during big upload", "{:.1f} MiB", "<= 64 MiB"),
    ("p4_upload_mb_per_s", "P4 upload rate over loopback", "{:.0f} MiB/s", ""),
    ("p5_rss_growth_ratio", "P5 RSS growth, 16 jobs vs 1", "{:+.1%}", "<= +10%"),
    ("p6_fit_slope_seconds_per_minute", "P6 job time slope (tiny)", "{:.2f} s/min", ""),
    ("p6_fit_intercept_seconds", "P6 job time intercept (tiny)", "{:.2f} s", ""),
    ("p6_fit_r2", "P6 linear fit r²", "{:.4f}", ""),
    ("p6_sampling_vs_decode_all_ratio", "P6 frame sampling / decoding every frame", "{:.2f}", ""),
    ("store_cost_ratio_full", "Durable sessions: job time with the state database / without, full", "{:.3f}x",
     "<= 1.02"),
    ("store_cost_ratio_tiny", "Durable sessions: job time with the state database / without, tiny", "{:.3f}x", ""),
    ("store_db_bytes_per_segment", "Durable sessions: bytes written to the database per segment", "{:.0f} B", ""),
    ("store_restart_load_seconds_1000", "Durable sessions: reading back 1,000 ended sessions", "{:.3f} s", ""),
    ("store_restart_ready_ratio_1000", "Durable sessions: start to ready with 1,000 ended sessions / with none",
     "{:.2f}x", ""),
    ("p7_frames_ratio_static", "P7 frames sent, even / changes, 10-min static video with planted events",
     "{:.1f}x", ">= 3"),
    ("p7_same_highlights", "P7 same highlights with changes and even, one per event (marker model)", "{}", ""),
    ("p7_wall_ratio_full_static", "P7 job wall time, even / changes, full model, 2-min static video", "{:.2f}x",
     ">= 2.5"),
    ("p7_busy_slowdown", "P7 job wall time on a busy video, changes / even (tiny)", "{:.3f}x", "<= 1.05"),
    ("p9_throughput_ratio_2_workers", "P9 cluster throughput, 2 model workers / 1 (tiny, 8 videos)", "{:.2f}x",
     ">= 1.5"),
    ("p9_throughput_ratio_2_workers_unshared",
     "P9 same, each of the 2 workers told to use every core (MODEL_CORES=2, as before they split them)",
     "{:.2f}x", ""),
    ("p9_videos_per_minute_1_worker", "P9 videos per minute, 1 worker", "{:.1f}", ""),
    ("p9_videos_per_minute_2_workers", "P9 videos per minute, 2 workers", "{:.1f}", ""),
    ("p1_overhead_ratio_full_cluster", "P1 service overhead, full, cluster mode (1 worker)", "{:.3f}x", "<= 1.05"),
    ("p3_status_p99_ms_cluster", "P3 GET /status p99, 50 pollers, cluster mode", "{:.1f} ms", "<= 10 ms"),
    ("p3_status_p99_ms_heavy_job_cluster", "P3 same, decode-heavy job, cluster mode", "{:.1f} ms", "<= 10 ms"),
    ("cuts_f1_ours", "Cut detection F1, ours (57 cuts, 3 files + a static shot)", "{:.3f}", ">= 0.95"),
    ("cuts_f1_content", "Cut detection F1, PySceneDetect ContentDetector", "{:.3f}", ""),
    ("cuts_f1_adaptive", "Cut detection F1, PySceneDetect AdaptiveDetector", "{:.3f}", ""),
    ("cuts_frames_per_second_ours", "Cut detection frames/s, ours (one decoding thread)", "{:.0f}", ""),
    ("cuts_frames_per_second_content", "Cut detection frames/s, ContentDetector (OpenCV backend)", "{:.0f}", ""),
    ("cuts_frames_per_second_adaptive", "Cut detection frames/s, AdaptiveDetector (OpenCV backend)", "{:.0f}", ""),
    ("cuts_frames_per_cpu_second_ours", "Cut detection frames per CPU second, ours", "{:.0f}", ""),
    ("cuts_frames_per_cpu_second_content", "Cut detection frames per CPU second, ContentDetector", "{:.0f}", ""),
    ("cuts_frames_per_cpu_second_adaptive", "Cut detection frames per CPU second, AdaptiveDetector", "{:.0f}", ""),
    ("reel_render_ratio_640x360", "Reel rendering time / reel duration, 60 s reel, 640x360 H.264+AAC source",
     "{:.3f}", ""),
    ("reel_render_ratio_1280x720", "Reel rendering time / reel duration, 60 s reel, 1280x720 source", "{:.3f}", ""),
    ("reel_share_of_job_full", "Reel rendering's share of the whole job, full model, 60 s reel of a 10-min 720p video",
     "{:.2%}", "<= 3%"),
    ("reel_share_of_job_full_worst", "Same, worst case: a 60 s video whose every segment is a highlight", "{:.1%}",
     ""),
    ("blas_speedup_full", "BLAS: OpenBLAS speed-up, full-size segment*", "{:.1f}x", ""),
    ("blas_matmul_speedup", "BLAS: OpenBLAS speed-up, 1024x960x2560 matmul", "{:.1f}x", ""),
    ("parallel_vision_speedup_full", "Vision tower split across CPU streams, full-size segment (on vs off)",
     "{:.2f}x", ""),
    ("fast_activations_speedup_full", "Vision softmax and GELU with powers of two, full-size segment (on vs off)",
     "{:.2f}x", ""),
    ("p8_vision_fraction_of_peak", "P8 vision tower's GFLOP/s / float32 GEMM peak (full, 8 frames of 512²)",
     "{:.0%}", ">= 50%"),
    ("p8_vision_gflops", "P8 vision tower, achieved (FLOPs counted from the config ÷ time)", "{:.1f} GFLOP/s", ""),
    ("p8_gemm_peak_gflops", "P8 float32 GEMM peak, same BLAS, same run", "{:.1f} GFLOP/s", ""),
    ("p8_vision_gflop_per_frame", "P8 FLOPs per frame (tower + connector)", "{:.1f} GFLOP", ""),
    ("p8_vision_seconds_per_frame", "P8 vision tower per frame, as the product runs it", "{:.2f} s", ""),
    ("p8_preprocess_seconds_per_frame", "P8 image preprocessing per frame", "{:.3f} s", ""),
    ("p8_projection_mlp_gflops", "P8 projections + MLP matmuls, step by step on one stream", "{:.1f} GFLOP/s", ""),
    ("p8_attention_matmul_gflops", "P8 attention matmuls (QKᵀ, ×V), step by step", "{:.1f} GFLOP/s", ""),
    ("p8_share_matmuls_below_peak", "P8 where the time goes: matmuls beyond their time at peak", "{:.0%}", ""),
    ("p8_share_softmax", "P8 where the time goes: softmax", "{:.0%}", ""),
    ("p8_share_gelu", "P8 where the time goes: GELU", "{:.0%}", ""),
    ("p8_share_layernorm_residuals", "P8 where the time goes: layer norms, residuals, copies", "{:.0%}", ""),
    ("p8_share_step_overhead_and_split", "P8 where the time goes: stream split and step-by-step difference",
     "{:+.0%}", ""),
)


def latest(kind: str) -> Optional[dict]:
    """The newest quick (`*-quick.json`) or full (`YYYY-MM-DD.json`) results file."""
    files = sorted(glob.glob(os.path.join(RESULTS, "*.json")))
    files = [f for f in files if f.endswith("-quick.json") == (kind == "quick")]
    if not files:
        return None
    # By name (the run's date), then time: a fresh checkout gives every file the same mtime.
    path = max(files, key=lambda f: (os.path.basename(f), os.path.getmtime(f)))
    with open(path) as handle:
        results = json.load(handle)
    results["_file"] = os.path.relpath(path, os.path.dirname(BENCH))
    return results


def _cell(results: Optional[dict], key: str, fmt: str) -> str:
    if not results or results.get(key) is None:
        return "–"
    text = fmt.format(results[key])
    verdict = results.get("targets", {}).get(key, {}).get("met")
    return text + {True: " ✅", False: " ❌", None: ""}[verdict]


def table() -> str:
    quick, full = latest("quick"), latest("full")
    lines = ["| Figure | Target | `make bench` | `make bench-quick` |", "|---|---|---|---|"]
    for key, label, fmt, target in ROWS:
        lines.append(f"| {label} (`{key}`) | {target or '—'} | {_cell(full, key, fmt)} | {_cell(quick, key, fmt)} |")
    notes = []
    for name, results in (("make bench", full), ("make bench-quick", quick)):
        if results:
            machine = results["machine"]
            load = "/".join(f"{x:.1f}" for x in (machine.get("load_average_at_start") or [])[:1] +
                            (machine.get("load_average_at_end") or [])[:1])
            notes.append(f"- `{name}`: `{results['_file']}`, finished {machine['date']}, {machine['cpu_model']} × "
                         f"{machine['cores']} cores, mlx {machine['mlx']}, mlx-vlm {machine['mlx_vlm']}, "
                         f"1-min load average at start/end {load} (other work shares the CPU), "
                         f"took {results.get('bench_seconds', 0) / 60:.1f} min.")
    lengths = {name: results.get("settings", {}).get("p1_tiny_video") for name, results in
               (("make bench", full), ("make bench-quick", quick)) if results}
    if len(set(lengths.values()) - {None}) > 1:
        notes.append("- P1/P2 tiny: " + ", ".join(f"{seconds:g} s of video in `{name}`" for name, seconds in
                                                  lengths.items()) +
                     "; a shorter job weighs its fixed costs (upload, the reader's set-up, the first segment's "
                     "frames) more.")
    if full and "blas_full" in full.get("details", {}):
        notes.append(f"- \\* {full['details']['blas_full']['workload']}.")
    return "\n".join(lines + [""] + notes)


def update_readme() -> None:
    with open(README) as handle:
        text = handle.read()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    with open(README, "w") as handle:
        handle.write(f"{head}{START}\n{table()}\n{END}{tail}")


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        update_readme()
    print(table())
