"""The change measure (video/frame_changes.py) on pictures made here, and the segment plan without empty segments."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from video_analysis.video import VideoInfo, plan_segments
from video_analysis.video.frame_changes import CONTRAST, choose_changed, differs, same_pictures, signature

WIDTH, HEIGHT = 512, 288  # the full-size model's frames of a 16:9 video


def _scene(seed: int = 0) -> np.ndarray:
    """A still picture with structure (gradients and a few soft shapes), as a fixed camera sees a room."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, WIDTH, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None]
    picture = np.empty((HEIGHT, WIDTH, 3), dtype=np.float32)
    for channel in range(3):
        phase = rng.uniform(0, 2 * np.pi)
        picture[..., channel] = 110 + 50 * np.sin(3 * x + 2 * y + phase) + 20 * np.cos(7 * x * y + channel)
    return picture


def _noisy(picture: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(picture + rng.normal(0, sigma, picture.shape), 0, 255).astype(np.uint8)


def _with_square(picture: np.ndarray, share: float, left: int, top: int, contrast: float) -> np.ndarray:
    """`picture` with a square covering `share` of it, `contrast` levels brighter (or darker) than what it covers."""
    side = math.ceil(math.sqrt(share * WIDTH * HEIGHT))
    marked = picture.copy()
    patch = marked[top:top + side, left:left + side]
    brighter = patch.mean() < 128
    marked[top:top + side, left:left + side] = patch + (contrast if brighter else -contrast)
    return marked


@pytest.mark.parametrize("left,top", [(0, 0), (3, 5), (101, 47), (200, 120), (WIDTH - 73, HEIGHT - 73), (57, 211)])
def test_a_two_percent_square_of_the_weakest_contrast_counts_as_change_wherever_it_lands(left, top):
    rng = np.random.default_rng(left * 1000 + top)
    scene = _scene()
    before = signature(_noisy(scene, 8, rng))
    after = signature(_noisy(_with_square(scene, 0.02, left, top, CONTRAST), 8, rng))
    assert differs(before, after)
    assert differs(after, before)


@pytest.mark.parametrize("sigma", [2, 6, 12, 20])
def test_sensor_noise_is_not_change(sigma):
    rng = np.random.default_rng(sigma)
    scene = _scene(1)
    frames = [signature(_noisy(scene, sigma, rng)) for _ in range(16)]
    assert choose_changed(frames) == [0]
    assert same_pictures(frames[:4], frames[4:8])


def test_a_speck_far_below_the_threshold_is_not_change():
    rng = np.random.default_rng(5)
    scene = _scene(2)
    speck = _with_square(scene, 0.0005, 200, 100, 120)  # 0.05 % of the picture
    assert not differs(signature(_noisy(scene, 6, rng)), signature(_noisy(speck, 6, rng)))


def test_compression_flicker_is_not_change():
    """The same picture through JPEG at two qualities: blocks and ringing that differ, no object that moved."""
    import io
    scene = _noisy(_scene(3), 4, np.random.default_rng(3))
    coded = []
    for quality in (35, 60):
        buffer = io.BytesIO()
        Image.fromarray(scene).save(buffer, format="JPEG", quality=quality)
        coded.append(signature(Image.open(io.BytesIO(buffer.getvalue()))))
    assert not differs(*coded)


def test_a_colour_change_of_equal_brightness_counts():
    """Grey wall, then a red square of about the wall's brightness on it: luminance alone would miss it."""
    wall = np.full((HEIGHT, WIDTH, 3), 90, dtype=np.uint8)
    red = wall.copy()
    red[100:160, 200:310] = (200, 40, 50)  # luma 0.299*200 + 0.587*40 + 0.114*50 ≈ 89
    assert differs(signature(wall), signature(red))


def test_choose_changed_sends_each_new_picture_once():
    rng = np.random.default_rng(7)
    scene = _scene(4)
    marked = _with_square(scene, 0.04, 60, 60, 80)
    frames = [signature(_noisy(picture, 6, rng)) for picture in (scene, scene, marked, marked, scene, marked)]
    assert choose_changed(frames) == [0, 2]  # the empty scene and the marked one: back again is not new
    busy = [signature(_noisy(_scene(seed), 6, rng)) for seed in range(8)]
    assert choose_changed(busy) == list(range(8))


def test_pictures_of_other_sizes_always_differ():
    assert differs(signature(np.zeros((90, 160, 3), np.uint8)), signature(np.zeros((160, 90, 3), np.uint8)))
    assert not same_pictures([signature(np.zeros((90, 160, 3), np.uint8))], [])


def _info(duration: float, fps: float) -> VideoInfo:
    frames = round(duration * fps)
    return VideoInfo(filename="v.mp4", duration_seconds=round(frames / fps, 3), fps=fps, frame_count=frames,
                     width=320, height=240)


def test_a_trailing_remainder_without_a_frame_of_its_own_joins_the_segment_before_it():
    info = _info(4.004, 29.97)  # 120 frames; the last starts at 3.970 s
    assert info.duration_seconds == 4.004
    assert [(s.start_time, s.end_time) for s in plan_segments(info.duration_seconds, 2, info)] == [(0, 2), (2, 4.004)]
    # Without the video's frames the plan is as before (the remainder counts).
    assert len(plan_segments(info.duration_seconds, 2)) == 3
    # A remainder that holds one frame start of its own stays a segment.
    info = _info(4.1, 10)  # frame 40 starts at 4.0 s
    assert [(s.start_time, s.end_time) for s in plan_segments(info.duration_seconds, 2, info)] == \
        [(0, 2), (2, 4), (4, 4.1)]


def test_segments_of_a_video_slower_than_one_frame_per_segment_each_hold_a_frame():
    info = _info(12, 0.25)  # a frame every 4 s: at 0, 4 and 8 s
    segments = plan_segments(info.duration_seconds, 1, info)
    assert [(s.index, s.start_time, s.end_time) for s in segments] == [(1, 0, 4), (2, 4, 8), (3, 8, 12)]
