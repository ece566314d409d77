"""Reels (video/reel.py) cut from generated videos, checked by decoding them with PyAV.

The source videos show a white square that moves 3 pixels right and 2 down
each frame (`tools.synthetic_video.draw_square`), so where the square is in
a reel's frame tells which source frame it is; and a tone that changes pitch
at known times (`tone_video`), so the sound at a moment of the reel tells
which moment of the source it comes from.
"""
from __future__ import annotations

import math
import os
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from tools.synthetic_video import Marker, rotate_mp4, tone, tone_video, write_video
from video_analysis.cancellation import Cancelled, CancelToken
from video_analysis.video import VideoError, probe_video
from video_analysis.video.capped_decoding import DecoderMismatch, rgb_array
from video_analysis.video.keyframe_decoder import KeyframeDecoder
from video_analysis.video.reel import EmptyReel, frame_runs, reel_size, render_reel

FPS = 25
SIZE = (320, 180)
SECONDS = 10
PITCHES = [(0, 440), (2, 660), (4, 880), (6, 550), (8, 990)]
RATE = 48000
# B-frames and open GOPs, as phones write them: a cut's first frame is rarely a keyframe.
PHONE_LIKE = {"x264-params": "keyint=30:bframes=3:open-gop=1"}
CUTS = [(1.0, 2.5), (4.02, 5.0), (7.3, 8.9)]


@pytest.fixture(scope="module")
def toned(tmp_path_factory):
    """10 s at 25 fps, 320x180, the square in every frame, the tone changing pitch every 2 s."""
    path = str(tmp_path_factory.mktemp("sources") / "toned.mp4")
    return tone_video(path, SECONDS, FPS, SIZE, PITCHES, [Marker(0, SECONDS)], RATE, codec_options=PHONE_LIKE)


def _kept(cuts, fps, frame_count):
    """The source frames the cuts keep, by the rule start <= n / fps < end, counted one by one."""
    return [n for n in range(frame_count) if any(s - 1e-9 <= n / fps < e - 1e-9 for s, e in cuts)]


def _pictures(path):
    with av.open(path) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def _square_at(picture):
    """(left, top) of the white square: the first column and row mostly white (compression blurs its edge)."""
    white = picture.min(axis=2) > 190
    side = int(picture.shape[0] * 0.35)
    columns, rows = np.flatnonzero(white.sum(axis=0) > side / 2), np.flatnonzero(white.sum(axis=1) > side / 2)
    assert columns.size and rows.size, "no square in the frame"
    return int(columns[0]), int(rows[0])


def _source_frame(picture, size=SIZE, count=SECONDS * FPS):
    """The number of the source frame (of `count`) whose square is where it is in `picture`."""
    width, height = size
    side = int(height * 0.35)
    left, top = _square_at(picture)
    span_x, span_y = width - side, height - side
    matches = [n for n in range(count) if abs((n * 3) % span_x - left) <= 1 and abs((n * 2) % span_y - top) <= 1]
    assert len(matches) == 1, f"square at {(left, top)} matches frames {matches}"
    return matches[0]


def _sound(path):
    """The reel's sound, mono samples from its time 0, and its sample rate."""
    with av.open(path) as container:
        frames = list(container.decode(audio=0))
    assert frames[0].time == 0
    return np.concatenate([frame.to_ndarray()[0] for frame in frames]), frames[0].sample_rate


def _pitch(samples, rate, at, window=0.2):
    """The dominant frequency (Hz) of the `window` seconds of sound centred on `at`."""
    piece = samples[int((at - window / 2) * rate):int((at + window / 2) * rate)]
    spectrum = np.abs(np.fft.rfft(piece * np.hanning(piece.size), n=1 << 17))
    return np.argmax(spectrum) * rate / (1 << 17)


def _lag_ms(reel, rate, reel_at, source_at, half=0.3, search=0.06):
    """How far (ms) the reel's sound around `reel_at` is from the source tone around `source_at`: the lag that
    correlates best. Around a pitch change the best lag is unique, not one a period away."""
    expected = tone(SECONDS, PITCHES, rate)
    piece = reel[int((reel_at - half) * rate):int((reel_at + half) * rate)]
    lags = range(-int(search * rate), int(search * rate) + 1)
    start = int((source_at - half) * rate)
    scores = [float(np.dot(piece, expected[start + lag:start + lag + piece.size])) for lag in lags]
    return lags[int(np.argmax(scores))] / rate * 1000


def _top_level_boxes(path):
    data = open(path, "rb").read()
    boxes, at = [], 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        boxes.append(data[at + 4:at + 8].decode())
        at += size if size else len(data)
    return boxes


def test_a_reel_holds_exactly_the_frames_of_its_cuts_in_a_browser_friendly_mp4(toned, tmp_path):
    fractions = []
    reel = render_reel(toned, CUTS, str(tmp_path / "reel.mp4"), progress=fractions.append)
    kept = _kept(CUTS, FPS, SECONDS * FPS)
    assert len(kept) == 38 + 24 + 40
    assert reel.duration == len(kept) / FPS
    assert abs(reel.duration - sum(end - start for start, end in CUTS)) <= len(CUTS) / FPS
    assert reel.size == os.path.getsize(reel.path) and reel.has_audio
    pictures = _pictures(reel.path)
    assert len(pictures) == len(kept)
    assert [_source_frame(p) for p in pictures] == kept
    with av.open(reel.path) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, video.format.name, video.average_rate) == ("h264", "yuv420p", FPS)
        assert (audio.codec_context.name, audio.rate) == ("aac", RATE)
        assert abs(float(container.duration / av.time_base) - reel.duration) < 0.05
    boxes = _top_level_boxes(reel.path)
    assert boxes.index("moov") < boxes.index("mdat")  # faststart: a browser plays before the end has loaded
    assert fractions == sorted(set(fractions)) and len(fractions) <= 100 and fractions[-1] == 1.0
    assert os.listdir(tmp_path) == ["reel.mp4"]


def test_the_sound_of_each_cut_is_the_sound_of_its_frames(toned, tmp_path):
    reel = render_reel(toned, CUTS, str(tmp_path / "reel.mp4"))
    samples, rate = _sound(reel.path)
    assert rate == RATE
    # Each cut's first frame and the reel time it is shown at.
    starts = [(25, 0.0), (101, 38 / FPS), (183, 62 / FPS)]

    def reel_time(source_seconds):
        frame, at = max((f, a) for f, a in starts if f / FPS <= source_seconds)
        return at + source_seconds - frame / FPS

    for source_seconds, hz in [(1.5, 440), (2.3, 660), (4.5, 880), (7.6, 550), (8.5, 990)]:
        assert _pitch(samples, rate, reel_time(source_seconds)) == pytest.approx(hz, rel=0.02), source_seconds
    # In sync to the sample, at the pitch changes inside the first and the last cut.
    assert _lag_ms(samples, rate, reel_time(2.0), 2.0) == 0
    assert _lag_ms(samples, rate, reel_time(8.0), 8.0) == 0
    assert samples.size / rate == pytest.approx(reel.duration, abs=0.05)


def test_a_silent_source_gives_a_reel_without_a_sound_track(tmp_path):
    source = write_video(str(tmp_path / "silent.mp4"), duration=3, fps=10, size=(160, 96), markers=[Marker(0, 3)])
    out = tmp_path / "reels"
    out.mkdir()
    reel = render_reel(source, [(0.5, 1.5)], str(out / "reel.mp4"))
    assert not reel.has_audio
    with av.open(reel.path) as container:
        assert len(container.streams.audio) == 0 and len(container.streams.video) == 1
    assert [_source_frame(p, (160, 96), 30) for p in _pictures(reel.path)] == list(range(5, 15))


@pytest.mark.parametrize("size, expected", [((1920, 1080), (1280, 720)), ((640, 360), (640, 360))])
def test_a_reel_is_at_most_1280_wide_with_the_source_aspect(tmp_path, size, expected):
    source = write_video(str(tmp_path / "v.mp4"), duration=0.6, fps=5, size=size, markers=[Marker(0, 1, "red")])
    reel = render_reel(source, [(0, 1)], str(tmp_path / "reel.mp4"))
    pictures = _pictures(reel.path)
    assert len(pictures) == 3 and pictures[0].shape == (expected[1], expected[0], 3)
    # The whole picture, scaled: the source's frame shrunk by OpenCV looks the same.
    with av.open(source) as container:
        original = next(container.decode(video=0)).to_ndarray(format="rgb24")
    shrunk = cv2.resize(original, expected, interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(pictures[0].astype(int) - shrunk).mean() < 4


def test_reel_sizes_are_even_and_keep_the_aspect():
    assert reel_size(1920, 1080, 1280) == (1280, 720)
    assert reel_size(1600, 902, 1280) == (1280, 722)  # 721.6: the nearest even height
    assert reel_size(638, 361, 1280) == (638, 360)
    assert reel_size(641, 360, 1280) == (640, 360)
    assert reel_size(1080, 1920, 1280) == (1080, 1920)  # portrait: only the width is bounded
    assert reel_size(4000, 3000, 1279) == (1278, 958)


def test_cuts_are_sorted_and_merged_and_cut_by_the_segments_rule():
    assert frame_runs([(4, 5), (1, 2), (1.5, 3), (3, 3.5)], 10, 100) == [(10, 35), (40, 50)]
    assert frame_runs([(2.0, 2.05), (-1, 0.25), (9.85, 20)], 10, 100) == [(0, 3), (20, 21), (99, 100)]
    assert frame_runs([(2.02, 2.08), (9.95, 30), (3, 3)], 10, 100) == []  # no frame starts in any
    # 29.97 fps, times rounded to the millisecond as segments are: frame 120 starts at 4.004004 s.
    assert frame_runs([(2.002, 4.004)], 29.97, 300) == [(60, 120)]
    with pytest.raises(ValueError):
        frame_runs([(math.nan, 1)], 10, 100)


def test_cancelling_half_way_stops_at_the_next_frame_and_leaves_no_file(toned, tmp_path):
    cancel = CancelToken()
    seen = []

    def progress(fraction):
        seen.append(fraction)
        if fraction >= 0.5:
            cancel.cancel()

    with pytest.raises(Cancelled):
        render_reel(toned, CUTS, str(tmp_path / "reel.mp4"), cancel=cancel, progress=progress)
    assert seen[-1] == 0.5  # no frame was written after the cancel
    assert os.listdir(tmp_path) == []


def test_a_29_97_fps_source_cut_at_fractional_times_is_exact(tmp_path):
    fps = Fraction(30000, 1001)
    source = tone_video(str(tmp_path / "ntsc.mp4"), 4, fps, SIZE, PITCHES, [Marker(0, 4)], codec_options=PHONE_LIKE)
    info = probe_video(source)
    assert (info.fps, info.frame_count) == (29.97, 120)
    cuts = [(0.5005, 1.2345), (2.002, 3.1)]
    out = tmp_path / "reels"
    out.mkdir()
    reel = render_reel(source, cuts, str(out / "reel.mp4"))
    kept = _kept(cuts, 29.97, info.frame_count)
    assert [_source_frame(p) for p in _pictures(reel.path)] == kept
    assert reel.duration == pytest.approx(len(kept) / fps, abs=1e-9)
    with av.open(reel.path) as container:
        assert container.streams.video[0].average_rate == fps


def test_a_source_pyav_cannot_seek_by_timestamp_is_cut_exactly_too(tmp_path):
    """MPEG-TS: PyAV's seeks do not land where the timestamps say, so the frames are decoded in order."""
    source = tone_video(str(tmp_path / "camera.ts"), 6, FPS, SIZE, PITCHES, [Marker(0, 6)], codec_options=PHONE_LIKE)
    info = probe_video(source)
    decoder = KeyframeDecoder(source, info.frame_count)
    try:
        with pytest.raises(DecoderMismatch):  # what sends render_reel to the in-order decoding
            decoder.decoded_frame(25)
    finally:
        decoder.close()
    cuts = [(1.0, 2.5), (4.02, 5.0)]
    out = tmp_path / "reels"
    out.mkdir()
    reel = render_reel(source, cuts, str(out / "reel.mp4"))
    assert [_source_frame(p) for p in _pictures(reel.path)] == _kept(cuts, FPS, info.frame_count)
    samples, rate = _sound(reel.path)
    assert _pitch(samples, rate, 1.3) == pytest.approx(660, rel=0.02)  # source 2.3 s
    assert _pitch(samples, rate, 1.52 + 0.5) == pytest.approx(880, rel=0.02)  # source 4.52 s


@pytest.mark.parametrize("degrees", [90, 270])
def test_a_portrait_phone_video_gives_an_upright_reel(tmp_path, degrees):
    source = rotate_mp4(write_video(str(tmp_path / "portrait.mp4"), duration=1, fps=10, size=(160, 96),
                                    markers=[Marker(0, 1)]), degrees)
    out = tmp_path / "reels"
    out.mkdir()
    reel = render_reel(source, [(0.2, 0.5)], str(out / "reel.mp4"))
    pictures = _pictures(reel.path)
    assert len(pictures) == 3 and pictures[0].shape == (160, 96, 3)
    with av.open(source) as container:
        upright = [rgb_array(frame) for frame in container.decode(video=0)][2:5]
    for picture, expected in zip(pictures, upright):
        assert np.abs(picture.astype(int) - expected.astype(int)).mean() < 4


def test_a_file_that_is_not_a_video_is_refused_with_a_sentence(tmp_path):
    source = tmp_path / "notes.mp4"
    source.write_bytes(b"not a video at all" * 100)
    out = tmp_path / "reels"
    out.mkdir()
    with pytest.raises(VideoError, match="not a video"):
        render_reel(str(source), [(0, 1)], str(out / "reel.mp4"))
    assert os.listdir(out) == []


def test_cuts_without_a_frame_make_no_reel(toned, tmp_path):
    with pytest.raises(EmptyReel, match="no frame"):
        render_reel(toned, [(11, 12), (3.01, 3.02)], str(tmp_path / "reel.mp4"))
    assert os.listdir(tmp_path) == []
