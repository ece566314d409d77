"""P6 scaling: job time against video length (a least-squares line), and frame sampling / decoding every frame."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
from typing import Dict, Sequence

from bench.client import run_job
from bench.settings import FRAMES, SEGMENT_SECONDS
from bench.system import PY, say
from bench.videos import bench_video
from tools.service_process import ServiceProcess


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> Dict[str, float]:
    """Least-squares y = slope * x + intercept, with r²."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    return {"slope": slope, "intercept": intercept, "r2": 1 - ss_res / ss_tot if ss_tot else 1.0}


def p6_scaling(server: ServiceProcess, durations_s: Sequence[float]) -> dict:
    minutes, seconds = [], []
    for duration in durations_s:
        video = bench_video(duration)
        job = run_job(server.base, video)
        minutes.append(duration / 60)
        seconds.append(job["wall_seconds"])
        say(f"  P6 {duration / 60:g} min: {job['wall_seconds']:.2f} s ({job['segments']} segments)")
    fit = linear_fit(minutes, seconds)
    return {"minutes": minutes, "job_seconds": seconds, **fit}


# Run in a fresh interpreter, so neither side inherits the other's decoder state or caches.
_SAMPLING_VS_DECODING = """
import json, sys, time
import cv2
from video_analysis.video import FrameReader, plan_segments, probe_video
video = {video!r}
def sample():
    info = probe_video(video)
    with FrameReader(video, info, max_edge=512) as reader:
        for segment in plan_segments(info.duration_seconds, {segment_seconds}):
            reader.read_segment(segment, {frames})
def decode_all():
    capture = cv2.VideoCapture(video)
    while capture.read()[0]:
        pass
    capture.release()
def grab_all():
    capture = cv2.VideoCapture(video)
    while capture.grab():
        pass
    capture.release()
times = {{"sample": [], "decode_all": [], "grab_all": []}}
for _ in range({repeats}):
    for name, work in (("sample", sample), ("decode_all", decode_all), ("grab_all", grab_all)):
        started = time.perf_counter(); work(); times[name].append(time.perf_counter() - started)
print(json.dumps(times))
"""


def sampling_vs_decode_all(video: str, repeats: int = 3) -> dict:
    """video_analysis.video sampling (8 frames per 10 s segment) vs decoding every frame, same video, in a subprocess."""
    code = _SAMPLING_VS_DECODING.format(video=video, segment_seconds=SEGMENT_SECONDS, frames=FRAMES, repeats=repeats)
    times = json.loads(subprocess.run([PY, "-c", code], check=True, capture_output=True, text=True).stdout)
    ratios = [s / d for s, d in zip(times["sample"], times["decode_all"])]
    return {
        "ratio": statistics.median(ratios),
        "sample_seconds": statistics.median(times["sample"]),
        "decode_all_seconds": statistics.median(times["decode_all"]),
        "grab_all_seconds": statistics.median(times["grab_all"]),
        "video": os.path.basename(video),
    }
