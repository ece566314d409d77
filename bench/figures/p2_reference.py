"""P2 vs reference: the per-segment subprocess pipeline's wall time / our job's (bench/reference_pipeline.py)."""
from __future__ import annotations

import os

from bench.reference_pipeline import run_reference
from bench.settings import FRAMES, MAX_TOKENS, SEGMENT_SECONDS


def p2_reference(model: str, video: str, ours_seconds: float, blas: str = "openblas") -> dict:
    reference = run_reference(video, model, SEGMENT_SECONDS, FRAMES, MAX_TOKENS, blas=blas)
    segments = reference["segments"]
    return {
        "speedup": reference["wall_seconds"] / ours_seconds,
        "reference_wall_seconds": reference["wall_seconds"],
        "ours_wall_seconds": ours_seconds,
        "reference_segments": len(segments),
        "reference_process_seconds": [round(s["process_seconds"], 3) for s in segments],
        "reference_cut_seconds": [round(s["cut_seconds"], 3) for s in segments],
        "reference_frames_sent": [s["cli_notice"].split("sending ")[1].split(" ")[0] if s["cli_notice"] else None
                                  for s in segments],
        "reference_blas": blas,
        "reference_ld_preload": reference["ld_preload"],
        "sleep_seconds_total": reference["sleep_seconds"] * (len(segments) - 1),
        "video": os.path.basename(video),
    }
