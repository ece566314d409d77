"""P1 service overhead: a job over HTTP / the sum of pure generate times for the same frames and prompts."""
from __future__ import annotations

import os
import statistics
import time

from bench.client import run_job
from bench.server import PureWorker
from bench.settings import FRAMES, MAX_TOKENS, SEGMENT_SECONDS
from bench.system import say
from tools.service_process import ServiceProcess


def p1_overhead(server: ServiceProcess, model: str, video: str, rounds: int) -> dict:
    """Service job vs pure generate, interleaved: pure, job, pure, job, ..., pure."""
    worker = PureWorker(model)
    try:
        request = dict(video=video, segment_duration=SEGMENT_SECONDS, frames_per_segment=FRAMES,
                       max_tokens=MAX_TOKENS, warmup=False)
        # Warm once, as the server was warmed (1 frame, 1 token: compiles mlx's kernels).
        pures, jobs = [worker.run(**dict(request, warmup=True, warmup_frames=1, warmup_tokens=1))], []
        for index in range(rounds):
            # Pauses let the other process's OpenBLAS threads stop spinning (they busy-wait ~0.1 s after work).
            time.sleep(0.5)
            jobs.append(run_job(server.base, video))
            time.sleep(0.5)
            pures.append(worker.run(**request))
            say(f"  P1 round {index + 1}: job {jobs[-1]['wall_seconds']:.2f} s, "
                f"pure {pures[-2]['sum_generate_seconds']:.2f}/{pures[-1]['sum_generate_seconds']:.2f} s")
    finally:
        worker.close()
    ratios = [job["wall_seconds"] / ((before["sum_generate_seconds"] + after["sum_generate_seconds"]) / 2)
              for job, before, after in zip(jobs, pures, pures[1:])]
    pure_texts = [s["text"] for s in pures[0]["segments"]]
    sample_seconds = statistics.median(p["sample_seconds"] for p in pures)
    pure_sum = statistics.median(p["sum_generate_seconds"] for p in pures)
    return {
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "job_wall_seconds": [j["wall_seconds"] for j in jobs],
        "job_upload_seconds": [j["upload_seconds"] for j in jobs],
        "job_engine_seconds": [j["engine_seconds"] for j in jobs],
        "pure_sum_generate_seconds": [p["sum_generate_seconds"] for p in pures],
        "pure_segment_seconds": [[round(s["generate_seconds"], 4) for s in p["segments"]] for p in pures],
        # Reading every segment's frames once (no model), the work the service adds per job.
        "frame_sampling_seconds": sample_seconds,
        "sampling_to_generate_ratio": sample_seconds / pure_sum,
        "segments": jobs[0]["segments"],
        "answers_identical": all(j["texts"] == pure_texts for j in jobs),
        "video": os.path.basename(video),
    }
