"""What a results file holds: the figures, their targets, the machine; and which figures a complete run has."""
from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import subprocess
from typing import List, Optional, Sequence

from bench.reference_pipeline import openblas_library
from bench.system import ROOT

TARGETS = {
    "p1_overhead_ratio_full": ("<=", 1.05),
    "p1_overhead_ratio_tiny": ("<=", 1.5),
    "p2_speedup_vs_reference_tiny": (">=", 20.0),
    "p2_speedup_vs_reference_full": (">=", 1.5),
    "p3_status_p99_ms": ("<=", 10.0),
    "p3_status_p99_ms_heavy_job": ("<=", 10.0),
    "p4_upload_rss_growth_mib": ("<=", 64.0),
    "p5_rss_growth_ratio": ("<=", 0.10),
    "store_cost_ratio_full": ("<=", 1.02),
    "p9_throughput_ratio_2_workers": (">=", 1.5),
    "p8_vision_fraction_of_peak": (">=", 0.5),
    "p1_overhead_ratio_full_cluster": ("<=", 1.05),
    "p3_status_p99_ms_cluster": ("<=", 10.0),
    "p3_status_p99_ms_heavy_job_cluster": ("<=", 10.0),
    "p7_frames_ratio_static": (">=", 3.0),
    "p7_wall_ratio_full_static": (">=", 2.5),
    "p7_busy_slowdown": ("<=", 1.05),
    "cuts_f1_ours": (">=", 0.95),
    "reel_share_of_job_full": ("<=", 0.03),
}

# Keys every results file has: every figure bench/README.md's table shows (bench/report.py ROWS),
# the machine and the targets; a `make bench` run (mode "full") also has FULL_KEYS.
REQUIRED_KEYS = (
    "p1_overhead_ratio_tiny", "p1_overhead_ratio_tiny_320x240",
    "p2_speedup_vs_reference_tiny", "p2_speedup_vs_reference_tiny_320x240",
    "p3_status_p50_ms", "p3_status_p99_ms", "p3_status_p99_ms_idle", "p3_status_p99_ms_threaded_client",
    "p3_status_p99_ms_heavy_job",
    "p4_upload_rss_growth_mib", "p4_upload_mb_per_s", "p5_rss_growth_ratio",
    "p6_fit_slope_seconds_per_minute", "p6_fit_intercept_seconds", "p6_fit_r2",
    "p6_sampling_vs_decode_all_ratio", "blas_matmul_speedup", "store_cost_ratio_tiny", "store_db_bytes_per_segment",
    "store_restart_load_seconds_1000", "store_restart_ready_ratio_1000",
    "p9_throughput_ratio_2_workers", "p9_videos_per_minute_1_worker", "p9_videos_per_minute_2_workers",
    "p3_status_p99_ms_cluster", "p3_status_p99_ms_heavy_job_cluster",
    "p7_frames_ratio_static", "p7_same_highlights", "p7_busy_slowdown",
    "cuts_f1_ours", "cuts_f1_content", "cuts_f1_adaptive", "cuts_frames_per_second_ours",
    "reel_render_ratio_640x360", "reel_render_ratio_1280x720",
    "cuts_frames_per_second_content", "cuts_frames_per_second_adaptive", "cuts_frames_per_cpu_second_ours",
    "cuts_frames_per_cpu_second_content", "cuts_frames_per_cpu_second_adaptive", "machine", "targets",
)
FULL_KEYS = ("p1_overhead_ratio_full", "p2_speedup_vs_reference_full", "p2_speedup_vs_plain_cli_tiny",
             "p3_status_p99_ms_full_job", "p3_status_p99_ms_full_job_threaded_client", "blas_speedup_full",
             "parallel_vision_speedup_full", "fast_activations_speedup_full", "store_cost_ratio_full",
             "p1_overhead_ratio_full_cluster", "p9_throughput_ratio_2_workers_unshared",
             "p7_wall_ratio_full_static", "p8_vision_fraction_of_peak", "p8_vision_gflops", "p8_gemm_peak_gflops",
             "p8_vision_gflop_per_frame", "p8_vision_seconds_per_frame", "p8_preprocess_seconds_per_frame",
             "p8_projection_mlp_gflops", "p8_attention_matmul_gflops", "p8_share_matmuls_below_peak",
             "p8_share_softmax", "p8_share_gelu", "p8_share_layernorm_residuals", "p8_share_step_overhead_and_split",
             "reel_share_of_job_full", "reel_share_of_job_full_worst")


def met(key: str, value) -> Optional[bool]:
    if key not in TARGETS or value is None:
        return None
    op, bound = TARGETS[key]
    return value <= bound if op == "<=" else value >= bound


def machine_info(argv: Sequence[str], load_at_start: Optional[Sequence[float]] = None) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def package(name: str) -> Optional[str]:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    memory = next((int(line.split()[1]) // 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal")), None)
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_mib": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mlx": package("mlx"),
        "mlx_vlm": package("mlx-vlm"),
        "opencv": package("opencv-python-headless") or package("opencv-python"),
        "gunicorn": package("gunicorn"),
        "openblas_library": openblas_library(),
        "ffmpeg": subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
        if shutil.which("ffmpeg") else None,
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),  # when the run finished
        "command": " ".join(["python"] + [os.path.relpath(argv[0], ROOT)] + list(argv[1:])),
        "load_average_at_start": list(load_at_start) if load_at_start else None,
        "load_average_at_end": list(os.getloadavg()),
    }


def finish(results: dict, argv: Sequence[str], load_at_start: Optional[Sequence[float]] = None) -> dict:
    """Add the machine and, for every figure with a target, the target and whether it was met."""
    results["machine"] = machine_info(argv, load_at_start)
    results["targets"] = {
        key: {"target": f"{op} {bound:g}", "value": results.get(key), "met": met(key, results.get(key))}
        for key, (op, bound) in TARGETS.items() if key in results
    }
    return results


def missing_keys(results: dict) -> List[str]:
    keys = list(REQUIRED_KEYS) + (list(FULL_KEYS) if results.get("mode") == "full" else [])
    return [key for key in keys if key not in results]
