"""P7 scene-aware sampling (issue 18): frame_selection "changes" against "even", through the real service.

- Frames sent and highlights, marker model, on a 10-minute static video (a fixed camera on a room, sensor
  noise, a still white square covering 8 % of the picture for 4 s in every 2 minutes: the smallest white
  square the marker model finds every time, see tests/test_frame_selection.py): the sum of the segments'
  `frames_analyzed`, "even" ÷ "changes"; and whether both give the same highlights.
- Job wall time, full-size model (`make bench` only): "even" on the same kind of video costs ~2-3 s of CPU a
  frame, ~20 min for 10 minutes, so it is measured on a 2-minute copy with the same event density (one
  event); changes, even, changes: "even" ÷ the mean of the two "changes" jobs around it.
- Busy video (synthetic_video's "busy" scene: blocks crossing the room, any two of a segment's frames differ,
  nothing to leave out), tiny model: "changes" ÷ "even" job wall time, rounds alternated (even, changes,
  changes, even, ...), ratio of medians. Not the other figures' video: its background drifts so slowly
  that frames 1.2 s apart can count as the same picture (its frames sent are in the details too).
"""
from __future__ import annotations

import os
import statistics
from typing import List, Tuple

from bench.client import run_job
from bench.server import running_service
from bench.system import checkpoint, say
from bench.videos import WORK, bench_video
from tools.synthetic_video import Marker, write_video

STATIC_SIZE = (640, 360)
STATIC_FPS = 25.0
NOISE = 3.0  # grey levels of sensor noise per frame
EVENT_AREA = 0.08
EVENT_EVERY = 120.0  # seconds: "a few planted events"
EVENT_SECONDS = 4.0


def static_events(duration: float) -> Tuple[Marker, ...]:
    """A still white square of EVENT_AREA for EVENT_SECONDS, 45 s into every EVENT_EVERY."""
    starts = [start + 45.0 for start in range(0, int(duration), int(EVENT_EVERY)) if start + 45.0 < duration]
    return tuple(Marker(s, min(s + EVENT_SECONDS, duration), "white", EVENT_AREA, still=True) for s in starts)


def static_video(duration: float, scene: str = "static") -> str:
    """The cached video of `duration` seconds of `scene` ("busy": no events) (written on first use: ~12 ms a frame)."""
    os.makedirs(WORK, exist_ok=True)
    path = os.path.join(WORK, f"{scene}-{STATIC_SIZE[0]}x{STATIC_SIZE[1]}-{STATIC_FPS:g}fps-{duration:g}s-"
                              f"noise{NOISE:g}.mp4")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.part.mp4"  # two writers of one video never share a file
        markers = static_events(duration) if scene == "static" else ()
        write_video(tmp, duration, STATIC_FPS, STATIC_SIZE, markers, seed=0, scene=scene, noise=NOISE)
        os.replace(tmp, path)
    return path


def _frames_sent(job: dict) -> int:
    return sum(a["frames_analyzed"] for a in job["analyses"])


def _highlights(job: dict) -> List[tuple]:
    return [(h["start_time"], h["end_time"], h["significance_score"]) for h in job["highlights"]]


def frames_and_highlights(marker: str, duration: float) -> dict:
    """One job of each selection on the marker model, on the static video of `duration` seconds: frames sent,
    segments reused, highlights."""
    video = static_video(duration)
    with running_service("p7-marker", marker, JOB_WORKERS=1) as server:
        run_job(server.base, bench_video(10), frames_per_segment=1, max_tokens=1)  # warm
        # The service's own min_significance (the bench's jobs ask for 1: every segment a highlight).
        jobs = {selection: run_job(server.base, video, frame_selection=selection, min_significance=6)
                for selection in ("even", "changes")}
    sent = {selection: _frames_sent(job) for selection, job in jobs.items()}
    highlights = {selection: _highlights(job) for selection, job in jobs.items()}
    events = len(static_events(duration))
    say(f"  P7 frames sent: even {sent['even']}, changes {sent['changes']}; highlights even {highlights['even']}, "
        f"changes {highlights['changes']} ({events} events planted)")
    return {
        "video": os.path.basename(video),
        "segments": jobs["even"]["segments"],
        "events_planted": events,
        "frames_sent": sent,
        "frames_ratio": sent["even"] / sent["changes"],
        "segments_reused": {s: sum(a["reused_from"] is not None for a in job["analyses"]) for s, job in jobs.items()},
        "frames_per_segment_changes": [a["frames_analyzed"] for a in jobs["changes"]["analyses"]],
        "highlights": highlights,
        "same_highlights": highlights["even"] == highlights["changes"] and len(highlights["even"]) == events,
        "job_wall_seconds": {s: job["wall_seconds"] for s, job in jobs.items()},
    }


def wall_time_full(full: str, video: str) -> dict:
    """changes, even, changes on the full-size model: even ÷ the mean of the changes jobs around it."""
    with running_service("p7-full", full) as server:
        run_job(server.base, bench_video(10), max_tokens=1, frames_per_segment=1)  # warm
        walls = {"changes": [], "even": []}
        for selection in ("changes", "even", "changes"):
            job = run_job(server.base, video, frame_selection=selection)
            walls[selection].append(job["wall_seconds"])
            say(f"  P7 full {selection}: {job['wall_seconds']:.1f} s, {_frames_sent(job)} frames sent")
    return {
        "video": os.path.basename(video),
        "job_wall_seconds": walls,
        "ratio": walls["even"][0] / statistics.mean(walls["changes"]),
    }


def busy_slowdown(tiny: str, video: str, rounds: int) -> dict:
    """Tiny model on a video where every frame changes: changes ÷ even, alternated, ratio of medians."""
    walls = {"changes": [], "even": []}
    sent = {}
    with running_service("p7-tiny", tiny, JOB_WORKERS=1) as server:
        run_job(server.base, bench_video(10))  # warm
        drifting = bench_video(60)
        drift = {s: _frames_sent(run_job(server.base, drifting, frame_selection=s)) for s in ("even", "changes")}
        for index in range(rounds):
            order = ("even", "changes") if index % 2 == 0 else ("changes", "even")
            for selection in order:
                job = run_job(server.base, video, frame_selection=selection)
                walls[selection].append(job["wall_seconds"])
                sent[selection] = _frames_sent(job)
            say(f"  P7 busy round {index + 1}: even {walls['even'][-1]:.2f} s, changes {walls['changes'][-1]:.2f} s")
    return {
        "video": os.path.basename(video),
        "job_wall_seconds": walls,
        "frames_sent": sent,
        "frames_sent_drifting_background": {"video": os.path.basename(drifting), **drift},
        "slowdown": statistics.median(walls["changes"]) / statistics.median(walls["even"]),
    }


def p7_sampling(quick: bool, full_model: bool, results: dict, details: dict) -> None:
    """Every P7 figure into `results` (the keys) and `details`."""
    static_seconds = 300 if quick else 600
    say(f"P7: frames sent, changes vs even, marker model, {static_seconds / 60:g} min static video")
    marker = checkpoint("marker")
    frames = frames_and_highlights(marker, static_seconds)
    details["p7_static"] = frames
    results["p7_frames_ratio_static"] = frames["frames_ratio"]
    results["p7_same_highlights"] = frames["same_highlights"]
    say("P7: busy video (every frame changes), tiny model, changes vs even")
    busy = busy_slowdown(checkpoint("tiny"), static_video(60 if quick else 120, "busy"), 5 if quick else 9)
    details["p7_busy"] = busy
    results["p7_busy_slowdown"] = busy["slowdown"]
    if full_model:
        short = static_video(EVENT_EVERY)
        say(f"P7 full: job wall time, changes vs even, on {os.path.basename(short)} (even on 10 minutes would "
            "take ~20 min)")
        wall = wall_time_full(checkpoint("full"), short)
        details["p7_full_static"] = wall
        results["p7_wall_ratio_full_static"] = wall["ratio"]
