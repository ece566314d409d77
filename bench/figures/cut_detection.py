"""Cut detection: F1 and frames per second of our detector beside PySceneDetect's, on the same generated files.

The files are `tools/shot_videos.py`'s: shots with hard cuts at known frames
(pairs at the same mean brightness), at three sizes, plus a static noisy
shot with no cut. Each detector reads every file in turn, in one process, its
rounds interleaved (ours, ContentDetector, AdaptiveDetector, ours, ...) so
that a change in the machine's load hits them alike; a cut counts when it is
within one frame of a real one. PySceneDetect runs as shipped (its OpenCV
backend, its default thresholds and downscaling); ours as `segmentation:
"scenes"` runs it (`video/scenes.py`, one PyAV decoding thread).
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Dict, List, Sequence, Tuple

from bench.system import say
from bench.videos import WORK
from tools.shot_videos import cut_frames, random_shots, write_shot_video, write_static_video

# (name, shots, fps, size): 24 + 24 + 12 shots, 57 cuts.
_FILES = (("320x180", 24, 15.0, (320, 180)), ("640x360", 24, 25.0, (640, 360)), ("1280x720", 12, 25.0, (1280, 720)))
_STATIC = ("static-640x360", 30.0, 25.0, (640, 360))


def cut_videos() -> Tuple[List[Tuple[str, List[int]]], str]:
    """([(path, cut frames)], the static file), written once into bench/work."""
    files = []
    for seed, (name, shots, fps, size) in enumerate(_FILES):
        path = os.path.join(WORK, f"shots-{name}-{shots}-seed{seed}.mp4")
        plan = random_shots(shots, fps, seed)
        cuts = cut_frames(plan) if os.path.exists(path) else write_shot_video(path, plan, fps, size, seed=seed)
        files.append((path, cuts))
    name, duration, fps, size = _STATIC
    static = os.path.join(WORK, f"{name}-{duration:g}s.mp4")
    if not os.path.exists(static):
        write_static_video(static, duration, fps, size)
    return files, static


def ours(path: str) -> Tuple[List[int], int]:
    from video_analysis.cancellation import CancelToken
    from video_analysis.video.probe import probe_video
    from video_analysis.video.scenes import CutDetector, detect_cuts

    detector = CutDetector()
    cuts = detect_cuts(path, probe_video(path), CancelToken(), detector=detector)
    return cuts, detector.frames


def _pyscenedetect(detector_class) -> Callable[[str], Tuple[List[int], int]]:
    def detect(path: str) -> Tuple[List[int], int]:
        from scenedetect import SceneManager, open_video

        manager = SceneManager()
        manager.add_detector(detector_class())
        frames = manager.detect_scenes(open_video(path))
        return [scene[0].frame_num for scene in manager.get_scene_list()[1:]], frames
    return detect


def _detectors() -> Dict[str, Callable[[str], Tuple[List[int], int]]]:
    from scenedetect import AdaptiveDetector, ContentDetector

    return {"ours": ours, "content": _pyscenedetect(ContentDetector), "adaptive": _pyscenedetect(AdaptiveDetector)}


def _score(found: Sequence[int], truth: Sequence[int]) -> Tuple[int, int, int]:
    hits = sum(1 for cut in truth if any(abs(cut - f) <= 1 for f in found))
    false = sum(1 for f in found if not any(abs(cut - f) <= 1 for cut in truth))
    return hits, false, len(truth) - hits


def cut_detection(rounds: int) -> dict:
    """Each detector over every file, `rounds` times interleaved: F1, false cuts on the static shot, frames per
    second of wall time and of CPU time (medians of the rounds)."""
    files, static = cut_videos()
    detectors = _detectors()
    seconds = {name: [] for name in detectors}
    cpu_seconds = {name: [] for name in detectors}  # this process's, every thread's: PySceneDetect decodes in
    # a thread of its own and OpenCV's FFmpeg uses a thread per core, ours one thread
    counts = {name: {"hits": 0, "false": 0, "misses": 0, "false_on_static": 0, "frames": 0} for name in detectors}
    per_file = {name: {} for name in detectors}
    for round_number in range(rounds):
        for name, detect in detectors.items():
            started, cpu_started, frames = time.perf_counter(), time.process_time(), 0
            for path, truth in files:
                found, decoded = detect(path)
                frames += decoded
                if round_number == 0:
                    hits, false, misses = _score(found, truth)
                    counts[name]["hits"] += hits
                    counts[name]["false"] += false
                    counts[name]["misses"] += misses
                    per_file[name][os.path.basename(path)] = {"hits": hits, "false": false, "misses": misses}
            found, decoded = detect(static)
            frames += decoded
            seconds[name].append(time.perf_counter() - started)
            cpu_seconds[name].append(time.process_time() - cpu_started)
            if round_number == 0:
                counts[name]["false_on_static"] = len(found)
                counts[name]["frames"] = frames
            say(f"  cuts, round {round_number + 1}: {name} {frames / seconds[name][-1]:.0f} frames/s, "
                f"{frames / cpu_seconds[name][-1]:.0f} frames per CPU second")
    out = {"cuts": sum(len(truth) for _, truth in files), "files": [os.path.basename(p) for p, _ in files],
           "static": os.path.basename(static), "rounds": rounds, "per_file": per_file}
    for name, count in counts.items():
        hits, false, misses = count["hits"], count["false"], count["misses"]
        out[name] = {**count, "f1": 2 * hits / (2 * hits + false + misses),
                     "seconds": seconds[name], "cpu_seconds": cpu_seconds[name],
                     "frames_per_second": count["frames"] / statistics.median(seconds[name]),
                     "frames_per_cpu_second": count["frames"] / statistics.median(cpu_seconds[name])}
    return out
