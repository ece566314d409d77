"""Scene-aware frame selection (issue 18) end to end through `VideoHighlightGenerator`, on generated videos.

The marker model answers 9/10 for a white square and 2/10 without (tests/test_marker_end_to_end.py), so
the highlights a correct analysis must find are known. What it sees was measured with today's evenly
spaced frames on still, centred white squares in the static scene (320x180 and 160x120, 10 s segments,
8 frames, 2 seeds, shown 1.5 s or the whole segment; no empty segment ever scored 9): 8 % of the picture
found 16/16, 6 % 8/8, 5 % 6/8, 4 % 1/16, 3 % 0/8, 2 % 0/16 (moving ones: 2 % 2/8). Its training squares
have a side of 0.2-0.6 of the height; 2 % of a 16:9 picture is 0.19. So the 2 % square, the size the
frame selection promises to count as change, is checked for being *sent* (its segment sends more than
the one frame of an unchanged one), and the model-found check is made on the 6 % and 8 % ones.
"""
from __future__ import annotations

import pytest

from tools import make_tiny_model as mtm

mtm.preload_openblas()  # before mlx is first imported

from tools.synthetic_video import Marker, write_video  # noqa: E402
from video_analysis.engine import prompts  # noqa: E402
from video_analysis.engine.analyzer import VideoHighlightGenerator  # noqa: E402
from video_analysis.video import FrameReader, plan_segments, probe_video  # noqa: E402

SEGMENT = 10
FRAMES = 8
# The static video, 11 segments of 10 s: an event in segments 3 (2 %), 6 (6 %) and 9 (8 %), each followed by
# two unchanged segments, so that the second of them shows the frames the model last saw.
EVENTS = {3: 0.02, 6: 0.06, 9: 0.08}
SEEN = {6, 9}  # the sizes the marker model finds (see above)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("frame-selection")
    events = [Marker((n - 1) * SEGMENT + 3, (n - 1) * SEGMENT + 7, "white", area, still=True)
              for n, area in EVENTS.items()]
    return {
        "static": write_video(str(root / "static.mp4"), duration=11 * SEGMENT, fps=10, size=(320, 180),
                              markers=events, scene="static", noise=3.0, seed=3),
        # Fixed cameras with more sensor noise than the one above, and nothing happening.
        "noisy-6": write_video(str(root / "noisy6.mp4"), duration=4 * SEGMENT, fps=10, size=(320, 180),
                               scene="static", noise=6.0, seed=4),
        "noisy-10": write_video(str(root / "noisy10.mp4"), duration=4 * SEGMENT, fps=10, size=(160, 120),
                                scene="static", noise=10.0, seed=5),
        # A room with blocks crossing it fast: any two of a segment's frames differ.
        "busy": write_video(str(root / "busy.mp4"), duration=4 * SEGMENT, fps=10, size=(320, 180), scene="busy",
                            seed=6),
        # test_marker_model's video, which today's analysis scores [2, 9, 2, 9].
        "marked": write_video(str(root / "marked.mp4"), duration=40, fps=10, size=(160, 120),
                              markers=[Marker(12, 18), Marker(31, 36)], seed=7),
    }


@pytest.fixture(scope="module")
def marker(marker_model_dir):
    generator = VideoHighlightGenerator(marker_model_dir)
    yield generator
    generator.close()


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    generator = VideoHighlightGenerator(tiny_model_dir)
    yield generator
    generator.close()


def _highlights(result):
    return [(h["start_time"], h["end_time"], h["significance_score"]) for h in result["highlights"]]


def _sent(result, key="all_analyses"):
    return [row["frames_analyzed"] for row in result[key]]


def _reused(result, key="all_analyses"):
    return [row["reused_from"] for row in result[key]]


def _decoded(path):
    import cv2

    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame.astype(int))


def test_the_static_video_holds_one_picture_with_noise_and_squares_of_the_planted_areas(videos):
    frames = _decoded(videos["static"])
    assert len(frames) == 11 * SEGMENT * 10
    first = frames[0]
    quiet = [f for i, f in enumerate(frames) if not any(m * 100 - 100 <= i < m * 100 - 30 for m in EVENTS)]
    # Noise and the codec move pixels a little, never the picture: no pixel region drifts.
    assert max(abs(f - first).mean() for f in quiet) < 3
    assert abs(sum(quiet[-20:]) / 20 - first).mean() < 3  # no drift from start to end
    for n, area in EVENTS.items():
        shown = frames[(n - 1) * 100 + 50]  # 5 s into segment n: the square is there
        white = (shown.min(axis=2) > 235).mean()
        assert white == pytest.approx(area, rel=0.15), (n, white)
        assert (frames[(n - 1) * 100 + 20].min(axis=2) > 235).mean() < 0.001  # 2 s in: not yet
    busy = _decoded(videos["busy"])
    # Frames 1.2 s apart (a segment's samples): a block has moved, well beyond noise, over > 2 % of the picture.
    assert min((abs(a - b).max(axis=2) > 30).mean() for a, b in zip(busy[::12], busy[12::12])) > 0.02


def test_a_static_scene_sends_each_event_once_and_finds_every_one_the_model_sees(marker, videos):
    changes = marker.generate_highlights(videos["static"], segment_duration=SEGMENT, frames_per_segment=FRAMES)
    even = marker.generate_highlights(videos["static"], segment_duration=SEGMENT, frames_per_segment=FRAMES,
                                      frame_selection="even")
    expected = [((n - 1) * SEGMENT, n * SEGMENT, 9) for n in sorted(SEEN)]
    assert _highlights(even) == expected
    assert _highlights(changes) == expected
    assert [a["significance_score"] for a in changes["all_analyses"]] == \
        [a["significance_score"] for a in even["all_analyses"]]

    sent, reused = _sent(changes), _reused(changes)
    print(f"\nframes sent per segment: changes {sent}, even {_sent(even)}; reused from {reused}")
    assert _sent(even) == [FRAMES] * 11 and _reused(even) == [None] * 11
    # An event's segment sends its first frame and the one showing the square, the 2 % square too.
    for n in EVENTS:
        assert sent[n - 1] >= 2 and reused[n - 1] is None, (n, sent, reused)
    # After it, a segment of the still room alone is one frame, asked about (the model last saw the square);
    # the next shows what the model last saw: its answer is reused (no frame sent) and says where it came from.
    for n in (1, 4, 7, 10):
        assert (sent[n - 1], reused[n - 1]) == (1, None), (n, sent, reused)
    for n in (2, 5, 8, 11):
        assert (sent[n - 1], reused[n - 1]) == (0, n - 1), (n, sent, reused)
        assert changes["all_analyses"][n - 1]["analysis"] == changes["all_analyses"][n - 2]["analysis"]
    assert sum(sent) * 3 <= sum(_sent(even))


@pytest.mark.parametrize("name", ["noisy-6", "noisy-10"])
def test_sensor_noise_and_compression_flicker_are_not_change(marker, videos, name):
    result = marker.generate_highlights(videos[name], segment_duration=SEGMENT, frames_per_segment=FRAMES)
    # One frame of the first segment sent; the others show the same room: its answer holds for them.
    assert _sent(result) == [1, 0, 0, 0]
    assert _reused(result) == [None, 1, 1, 1]
    assert [a["significance_score"] for a in result["all_analyses"]] == [2, 2, 2, 2]
    assert result["highlights"] == []


def test_a_busy_video_sends_every_frame(tiny, marker, videos):
    for kind, key in (("highlights", "all_analyses"), ("workout", "segment_analyses")):
        result = tiny.analyze(kind, videos["busy"], segment_duration=SEGMENT, frames_per_segment=FRAMES)
        assert _sent(result, key) == [FRAMES] * 4, kind
        assert _reused(result, key) == [None] * 4, kind
    # The blocks are not markers: nothing there for the marker model.
    result = marker.generate_highlights(videos["busy"], segment_duration=SEGMENT, frames_per_segment=FRAMES)
    assert _sent(result) == [FRAMES] * 4 and result["highlights"] == []


def test_even_gives_the_answers_of_evenly_spaced_frames(marker, videos):
    """frame_selection "even" is today's analysis: each segment's answer is the model's on the evenly spaced
    frames the reader samples, asked directly; the marker video's scores are those test_marker_model expects."""
    video = videos["marked"]
    result = marker.generate_highlights(video, segment_duration=SEGMENT, frames_per_segment=FRAMES,
                                        frame_selection="even")
    assert [a["significance_score"] for a in result["all_analyses"]] == [2, 9, 2, 9]
    assert _highlights(result) == [(10.0, 20.0, 9), (30.0, 40.0, 9)]
    info = probe_video(video)
    runner = marker.runner
    with FrameReader(video, info, max_edge=runner.image_size) as reader:
        for segment, row in zip(plan_segments(info.duration_seconds, SEGMENT), result["all_analyses"]):
            frames = reader.read_segment(segment, FRAMES)
            answer = runner.generate(frames, prompts.HIGHLIGHTS_USER, system_prompt=prompts.HIGHLIGHTS_SYSTEM,
                                     max_tokens=64)
            assert row["analysis"] == answer, segment
            assert row["frames_analyzed"] == len(frames) == FRAMES
            assert row["reused_from"] is None
    # And "changes" finds the same highlights (its background drifts slowly: some frames count as the same).
    changes = marker.generate_highlights(video, segment_duration=SEGMENT, frames_per_segment=FRAMES)
    assert [a["analysis"] for a in changes["all_analyses"]] == [a["analysis"] for a in result["all_analyses"]]


@pytest.mark.parametrize("kind", ["highlights", "workout"])
def test_the_settings_echo_the_selection_and_the_segmentation(tiny, videos, kind):
    default = tiny.analyze(kind, videos["noisy-10"], segment_duration=SEGMENT, frames_per_segment=2, max_tokens=2)
    assert default["settings"]["frame_selection"] == "changes"
    assert default["settings"]["segmentation"] == "fixed"
    even = tiny.analyze(kind, videos["noisy-10"], segment_duration=SEGMENT, frames_per_segment=2, max_tokens=2,
                        frame_selection="even")
    assert even["settings"]["frame_selection"] == "even"
