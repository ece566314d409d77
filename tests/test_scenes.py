"""Scene-aligned segments: the cut detector on generated shots with known cuts, and the plan's rules.

The shot videos (`tools/shot_videos.py`) hold 25 hard cuts between shots of
their own picture and motion, pairs of them at the same mean brightness; the
static, moving-square and drifting-background videos hold none. Every file
is small (160x120 or 320x180, 10-25 fps) and decodes in well under a second.
"""
import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tools.hostile_media import flat_jpeg, mjpeg_avi
from tools.shot_videos import random_shots, write_shot_video, write_static_video
from tools.synthetic_video import Marker, background, write_video
from video_analysis.cancellation import CancelToken, Cancelled
from video_analysis.video import VideoError, probe_video
from video_analysis.video.probe import VideoInfo
from video_analysis.video.scenes import (
    MIN_SCENE_SECONDS, CutDetector, detect_cuts, plan_scene_segments, scene_segments,
)

# (name, shots, fps, size, seed): 13 + 12 + 2 shots, so 12 + 11 + 1 = 24 cuts.
SHOT_VIDEOS = (("small", 13, 15.0, (160, 120), 0), ("wide", 12, 25.0, (320, 180), 1),
               ("slow", 2, 10.0, (160, 120), 2))


@pytest.fixture(scope="module")
def shot_videos(tmp_path_factory):
    """{name: (path, cut frames)}"""
    root = tmp_path_factory.mktemp("shots")
    out = {}
    for name, count, fps, size, seed in SHOT_VIDEOS:
        path = str(root / f"{name}.mp4")
        out[name] = path, write_shot_video(path, random_shots(count, fps, seed), fps, size, seed=seed)
    return out


@pytest.fixture(scope="module")
def cutless_videos(tmp_path_factory):
    """Videos without a cut: a static noisy shot, a moving square, a drifting background."""
    root = tmp_path_factory.mktemp("cutless")
    return {
        "static": write_static_video(str(root / "static.mp4"), duration=20, fps=15),
        "square": write_video(str(root / "square.mp4"), duration=20, fps=15, size=(160, 120), markers=[Marker(0, 20)]),
        "drift": write_video(str(root / "drift.mp4"), duration=20, fps=25, size=(320, 180)),
    }


def matched(found, truth, tolerance=1):
    """(true positives, false positives, misses): a found cut counts when within `tolerance` frames of a real one."""
    hits = sum(1 for cut in truth if any(abs(cut - f) <= tolerance for f in found))
    false = sum(1 for f in found if not any(abs(cut - f) <= tolerance for cut in truth))
    return hits, false, len(truth) - hits


# -- the detector on video ------------------------------------------------------------------
def test_cuts_are_found_within_a_frame_with_f1_of_at_least_0_95(shot_videos):
    hits = false = misses = 0
    for name, (path, truth) in shot_videos.items():
        found = detect_cuts(path, probe_video(path), CancelToken())
        h, f, m = matched(found, truth)
        hits, false, misses = hits + h, false + f, misses + m
        print(f"{name}: cuts at {truth}, found {found}")
    assert hits + misses >= 20
    f1 = 2 * hits / (2 * hits + false + misses)
    assert f1 >= 0.95, (hits, false, misses)


def test_every_scene_boundary_is_within_a_frame_of_a_cut(shot_videos):
    """With segments longer than any shot, each boundary is a cut and each cut a boundary (shots are >= 1.2 s)."""
    for name, (path, truth) in shot_videos.items():
        info = probe_video(path)
        segments = scene_segments(path, info, 60.0, CancelToken())
        boundaries = [segment.start_time for segment in segments[1:]]
        assert len(boundaries) == len(truth), (name, boundaries, truth)
        for boundary, cut in zip(boundaries, truth):
            assert abs(boundary - cut / info.fps) <= 1 / info.fps + 1e-3, (name, boundary, cut)
        assert segments[0].start_time == 0.0 and segments[-1].end_time == info.duration_seconds


@pytest.mark.parametrize("kind", ["static", "square", "drift"])
def test_no_cut_on_a_static_noisy_shot_a_moving_square_or_a_drifting_background(cutless_videos, kind):
    path = cutless_videos[kind]
    info = probe_video(path)
    detector = CutDetector()
    assert detect_cuts(path, info, CancelToken(), detector=detector) == []
    assert detector.frames == info.frame_count
    # Without cuts, the scene plan is the fixed one: 20 s in 4 segments of 5 s.
    segments = scene_segments(path, info, 5.0, CancelToken())
    assert [(s.start_time, s.end_time) for s in segments] == [(0.0, 5.0), (5.0, 10.0), (10.0, 15.0), (15.0, 20.0)]


def test_a_cut_between_two_pictures_of_the_same_mean_brightness_is_found(tmp_path):
    """A horizontal then a vertical gradient of one mean level: the mean cannot tell them apart."""
    frames = []
    x = np.linspace(40, 180, 160, dtype=np.float32)[None, :].repeat(120, 0)
    y = np.linspace(40, 180, 120, dtype=np.float32)[:, None].repeat(160, 1)
    rng = np.random.default_rng(0)
    for picture, count in ((x, 30), (y, 30)):
        for _ in range(count):
            noisy = picture + rng.normal(0, 5, picture.shape)
            frames.append(np.clip(noisy, 0, 255).astype(np.uint8)[..., None].repeat(3, 2))
    assert abs(frames[29].mean() - frames[30].mean()) < 1.0
    path = str(tmp_path / "gradients.mp4")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 15, (160, 120))
    for frame in frames:
        writer.write(frame)
    writer.release()
    assert detect_cuts(path, probe_video(path), CancelToken()) == [30]


def test_frames_past_the_probes_count_are_not_read(shot_videos):
    path, truth = shot_videos["small"]
    info = probe_video(path)
    short = VideoInfo(info.filename, 2.0, info.fps, 30, info.width, info.height)
    detector = CutDetector()
    found = detect_cuts(path, short, CancelToken(), detector=detector)
    assert detector.frames == 30
    assert found == [cut for cut in truth if cut < 30]


# -- cancellation and hostile files ----------------------------------------------------------
class _CancelsAt(CutDetector):
    """A detector that cancels its token when it is handed frame `at` (as a person's cancel would, mid-read)."""

    def __init__(self, token, at):
        super().__init__()
        self.token, self.at = token, at

    def add(self, small):
        super().add(small)
        if self.frames == self.at:
            self.token.cancel()


def test_a_cancel_stops_the_reading_before_the_next_frame(shot_videos):
    path, _ = shot_videos["wide"]
    info = probe_video(path)
    token = CancelToken()
    detector = _CancelsAt(token, 7)
    with pytest.raises(Cancelled):
        detect_cuts(path, info, token, detector=detector)
    assert detector.frames == 7
    cancelled = CancelToken()
    cancelled.cancel()
    with pytest.raises(Cancelled):
        scene_segments(path, info, 10.0, cancelled)


def test_progress_reports_the_frames_read(shot_videos):
    path, _ = shot_videos["wide"]
    info = probe_video(path)
    seen = []
    scene_segments(path, info, 10.0, CancelToken(), progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (info.frame_count, info.frame_count)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_a_file_that_is_not_a_video_is_a_video_error(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("These are my notes, not a video.\n" * 100)
    info = VideoInfo("notes.mp4", 2.0, 10.0, 20, 160, 120)
    with pytest.raises(VideoError, match="not a video that can be decoded"):
        scene_segments(str(path), info, 10.0, CancelToken())


def test_a_frame_larger_than_8k_in_the_middle_is_refused_not_decoded(tmp_path):
    """The probe does not look at frame 11; the cut detector decodes every frame, capped, and names it."""
    rng = np.random.default_rng(0)
    small = [cv2.imencode(".jpg", background(i, 160, 120, rng))[1].tobytes() for i in range(20)]
    path = mjpeg_avi(str(tmp_path / "middle.avi"), small[:10] + [flat_jpeg(16000, 16000)] + small[11:])
    info = probe_video(path)
    with pytest.raises(VideoError, match="Frame 11 of the video is larger than the 8K"):
        scene_segments(path, info, 10.0, CancelToken())


# -- the plan, without video -------------------------------------------------------------------
def spans(segments):
    return [(s.start_time, s.end_time) for s in segments]


def test_a_scene_longer_than_a_segment_is_split_into_equal_parts():
    # 30 fps: a 10 s scene, then a 20 s one; segments of 6 s: ceil(10/6) = 2 parts, ceil(20/6) = 4 parts.
    segments = plan_scene_segments([300], 900, 30.0, 6.0)
    assert spans(segments) == [(0.0, 5.0), (5.0, 10.0), (10.0, 15.0), (15.0, 20.0), (20.0, 25.0), (25.0, 30.0)]
    assert [s.index for s in segments] == [1, 2, 3, 4, 5, 6]
    # A scene of exactly two segments is two segments, not three.
    assert spans(plan_scene_segments([], 600, 30.0, 10.0)) == [(0.0, 10.0), (10.0, 20.0)]


def test_a_scene_shorter_than_a_second_joins_the_scene_before_it():
    # 2 s, 0.5 s, 3 s at 30 fps: the 0.5 s scene becomes the end of the first.
    assert spans(plan_scene_segments([60, 75], 165, 30.0, 10.0)) == [(0.0, 2.5), (2.5, 5.5)]
    # A short first scene joins the one after it.
    assert spans(plan_scene_segments([15, 90], 180, 30.0, 10.0)) == [(0.0, 3.0), (3.0, 6.0)]
    # A short last scene joins the one before it.
    assert spans(plan_scene_segments([90], 100, 30.0, 10.0)) == [(0.0, 3.333)]
    # A montage of 0.5 s shots is one scene, then split like any long scene.
    assert spans(plan_scene_segments(list(range(15, 600, 15)), 600, 30.0, 10.0)) == [(0.0, 10.0), (10.0, 20.0)]
    assert MIN_SCENE_SECONDS == 1.0


def test_cuts_outside_the_video_or_repeated_are_ignored():
    assert spans(plan_scene_segments([0, 60, 60, 120, 500], 120, 30.0, 10.0)) == [(0.0, 2.0), (2.0, 4.0)]
    assert plan_scene_segments([10], 0, 30.0, 10.0) == []


@settings(max_examples=300, deadline=None)
@given(frame_count=st.integers(2, 5000), fps=st.sampled_from([5.0, 10.0, 23.976, 25.0, 29.97, 60.0]),
       segment_duration=st.floats(0.01, 30.0), cut_fractions=st.lists(st.floats(0.0, 1.0), max_size=30))
def test_no_segment_is_empty_and_every_frame_is_in_one(frame_count, fps, segment_duration, cut_fractions):
    cuts = [int(f * frame_count) for f in cut_fractions]
    segments = plan_scene_segments(cuts, frame_count, fps, segment_duration)
    assert [s.index for s in segments] == list(range(1, len(segments) + 1))
    assert segments[0].start_time == 0.0
    assert segments[-1].end_time == round(frame_count / fps, 3)
    for before, after in zip(segments, segments[1:]):
        assert before.end_time == after.start_time
    for segment in segments:
        # A frame of its own: boundaries are frames (k / fps to 3 decimals, 0.03 frame at 60 fps), at least one apart.
        assert round(segment.start_time * fps) < round(segment.end_time * fps), segment
        # Equal parts of at most segment_duration, to a frame.
        assert segment.end_time - segment.start_time <= max(segment_duration, 0) + 1 / fps + 2e-3
    # Without splitting (segments longer than the video), every boundary is a cut and every scene lasts a second.
    whole = plan_scene_segments(cuts, frame_count, fps, frame_count / fps + 1)
    cut_times = {round(c / fps, 3) for c in cuts}
    assert all(segment.start_time in cut_times for segment in whole[1:])
    if frame_count / fps >= MIN_SCENE_SECONDS:
        assert all(s.end_time - s.start_time >= MIN_SCENE_SECONDS - 1e-3 for s in whole), whole
