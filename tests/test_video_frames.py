"""Probing, segment planning and frame sampling on videos made with OpenCV."""
import os

import pytest
from hypothesis import given, settings, strategies as st

from tools.synthetic_video import Marker, rotate_mp4, write_video
from video_analysis.cancellation import CancelToken, Cancelled
from video_analysis.video import (
    FrameReader, Segment, VideoError, VideoInfo, format_range, plan_segments, probe_video, sample_frame_indices,
)
from video_analysis.video.keyframe_decoder import KeyframeDecoder


def test_probe_reports_what_was_written(tmp_path):
    path = write_video(str(tmp_path / "clip.mp4"), duration=4, fps=10, size=(96, 64))
    info = probe_video(path, "holiday.mp4")
    assert (info.filename, info.frame_count, info.fps, info.duration_seconds) == ("holiday.mp4", 40, 10.0, 4.0)
    assert (info.width, info.height) == (96, 64)


def test_segments_cover_the_video_and_the_last_partial_one_counts():
    segments = plan_segments(25.0, 10)
    assert [(s.index, s.start_time, s.end_time) for s in segments] == [(1, 0.0, 10.0), (2, 10.0, 20.0), (3, 20.0, 25.0)]
    assert [(s.start_time, s.end_time) for s in plan_segments(20.0, 10)] == [(0.0, 10.0), (10.0, 20.0)]
    assert [(s.start_time, s.end_time) for s in plan_segments(3.0, 10)] == [(0.0, 3.0)]
    assert plan_segments(0, 10) == []


def test_sampled_frames_are_evenly_spread_inside_their_segment(tmp_path):
    info = probe_video(write_video(str(tmp_path / "v.mp4"), duration=25, fps=10))
    first, last = plan_segments(info.duration_seconds, 10)[0], plan_segments(info.duration_seconds, 10)[-1]
    # Middles of eight equal slices of [0, 10) s at 10 fps.
    assert sample_frame_indices(first, 8, info) == [6, 18, 31, 43, 56, 68, 81, 93]
    # The partial segment [20, 25) is sampled over its own span only.
    assert sample_frame_indices(last, 8, info) == [203, 209, 215, 221, 228, 234, 240, 246]
    assert all(0 <= i < info.frame_count for i in sample_frame_indices(last, 64, info))


def _info(frame_count, fps=25.0):
    return VideoInfo("v.mp4", frame_count / fps, fps, frame_count, 64, 48)


def test_sampling_takes_the_keyframe_nearest_each_slice_middle_when_it_is_close():
    info, segment = _info(250), Segment(1, 0.0, 10.0)
    middles = [15, 46, 78, 109, 140, 171, 203, 234]
    assert sample_frame_indices(segment, 8, info) == middles
    # A keyframe every 12 frames: each middle has one within 6 frames (a quarter slice is 7.8).
    assert sample_frame_indices(segment, 8, info, list(range(0, 250, 12))) == [12, 48, 72, 108, 144, 168, 204, 228]
    # x264's default (a keyframe every 250): too far from every middle, the middles stay.
    assert sample_frame_indices(segment, 8, info, [0]) == middles
    assert sample_frame_indices(segment, 8, info, [7, 240]) == [15, 46, 78, 109, 140, 171, 203, 240]  # 7 is 8 away
    assert sample_frame_indices(segment, 8, info, [8, 240])[0] == 8


@settings(max_examples=200, deadline=None)
@given(keyframes=st.lists(st.integers(0, 299), unique=True).map(sorted), count=st.integers(1, 16),
       start=st.integers(0, 5))
def test_a_sampled_frame_never_leaves_the_middle_half_of_its_slice(keyframes, count, start):
    info = _info(300)
    segment = Segment(1, float(start), min(12.0, start + 6.0))
    slice_frames = (segment.end_time - segment.start_time) / count * info.fps
    plain = sample_frame_indices(segment, count, info)
    chosen = sample_frame_indices(segment, count, info, keyframes)
    assert len(chosen) == len(plain) and chosen == sorted(set(chosen))
    for middle, index in zip(plain, chosen):
        assert index == middle or (index in keyframes and abs(index - middle) <= slice_frames / 4)


def test_short_segment_gives_each_frame_once(tmp_path):
    info = probe_video(write_video(str(tmp_path / "v.mp4"), duration=2, fps=2))
    indices = sample_frame_indices(Segment(1, 0.0, 2.0), 8, info)
    assert indices == sorted(set(indices)) and len(indices) == 4


def test_reader_returns_rgb_frames_shrunk_to_the_model_size(tmp_path):
    path = write_video(str(tmp_path / "v.mp4"), duration=2, fps=10, size=(160, 120), markers=[Marker(0, 2, "red")])
    info = probe_video(path)
    with FrameReader(path, info, max_edge=64) as reader:
        frames = reader.read([0, 5, 6, 19])
    assert [f.size for f in frames] == [(64, 48)] * 4
    # The red square is drawn in BGR; after conversion the frame's reddest pixel is red in RGB.
    red, green, blue = frames[0].getpixel((5, 5))
    assert red > 200 and green < 60 and blue < 60


def _avi_claiming(path, frames):
    """Rewrite an AVI's frame counts (main header and stream header) to claim `frames`."""
    import struct

    data = bytearray(open(path, "rb").read())
    avih = data.find(b"avih") + 8
    data[avih + 16:avih + 20] = struct.pack("<I", frames)  # dwTotalFrames
    strh = data.find(b"strh") + 8
    data[strh + 32:strh + 36] = struct.pack("<I", frames)  # dwLength
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("claimed", [61, 62, 40])
def test_a_header_that_misstates_the_frame_count_a_little_or_low_is_measured(tmp_path, claimed):
    path = write_video(str(tmp_path / "v.avi"), duration=6, fps=10, size=(96, 64))
    _avi_claiming(path, claimed)
    info = probe_video(path)
    assert info.frame_count == 60 and info.duration_seconds == 6.0
    with FrameReader(path, info) as reader:
        assert len(reader.read([0, 59])) == 2


def test_a_file_cut_short_is_refused_as_truncated(tmp_path):
    path = str(tmp_path / "cut.avi")
    write_video(path, duration=6, fps=10, size=(96, 64))
    with open(path, "r+b") as f:  # the AVI header still claims 60 frames
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(VideoError, match=r"truncated or damaged: its header promises 60 frames but only \d+"):
        probe_video(path)


def test_frames_past_the_decodable_end_raise_a_clear_error(tmp_path):
    path = write_video(str(tmp_path / "v.mp4"), duration=2, fps=10)
    info = probe_video(path)
    with FrameReader(path, info) as reader:
        with pytest.raises(VideoError, match="truncated or damaged"):
            reader.read([info.frame_count + 50])
        assert reader.backend.name == "opencv"  # PyAV gave up on the frame; OpenCV said why


@pytest.mark.parametrize("content", [b"", b"hello, this is text\n" * 50, os.urandom(4096)])
def test_files_that_are_not_videos_are_refused(tmp_path, content):
    path = tmp_path / "not-a-video.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError):
        probe_video(str(path))


def test_a_still_image_is_not_a_video(tmp_path):
    import cv2
    import numpy as np

    path = str(tmp_path / "still.png")
    cv2.imwrite(path, np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(VideoError, match="still image|no frames"):
        probe_video(path)


def test_webm_is_read_like_mp4(tmp_path):
    info = probe_video(write_video(str(tmp_path / "v.webm"), duration=2, fps=10))
    assert info.frame_count == 20


@pytest.mark.parametrize("start,end,expected", [
    (0, 10, "00:00-00:10"), (65, 75.5, "01:05-01:15"), (3590, 3600, "0:59:50-1:00:00"), (3600, 3725, "1:00:00-1:02:05"),
])
def test_timestamp_format(start, end, expected):
    assert format_range(start, end) == expected


def test_a_video_whose_header_claims_an_absurd_frame_rate_still_works(tmp_path):
    import struct

    path = write_video(str(tmp_path / "v.avi"), duration=4, fps=10, size=(96, 64))
    data = bytearray(open(path, "rb").read())
    rate_at = data.find(b"strh") + 8 + 20  # dwScale, dwRate of the video stream header
    data[rate_at:rate_at + 8] = struct.pack("<II", 1, 100000)
    lying = tmp_path / "lying.avi"
    lying.write_bytes(bytes(data))
    info = probe_video(str(lying))
    assert info.frame_count == 40 and 1 <= info.fps <= 480
    segments = plan_segments(info.duration_seconds, 1)
    assert segments and segments[-1].end_time == info.duration_seconds
    with FrameReader(str(lying), info) as reader:
        assert len(reader.read(sample_frame_indices(segments[-1], 8, info))) >= 1


def _every_frame_rgb(path):
    import cv2
    import numpy as np

    capture, frames = cv2.VideoCapture(path), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(np.asarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
    capture.release()
    return frames


@pytest.mark.parametrize("name, keyframe_before_30", [
    ("gop12.mp4", 24),  # OpenCV's mp4v: a keyframe every 12 frames
    ("intra.avi", 30),  # MJPG: every frame is a keyframe
    ("vp8.webm", None),  # whatever libvpx chose: only checked for exact frames
])
def test_opencv_reader_picks_seek_or_read_by_keyframes_and_returns_the_exact_frames(
        tmp_path, monkeypatch, name, keyframe_before_30):
    import numpy as np

    monkeypatch.setenv("PYAV_FRAMES", "0")
    path = write_video(str(tmp_path / name), duration=8, fps=25, size=(96, 64))
    info = probe_video(path)
    every = _every_frame_rgb(path)
    assert len(every) == info.frame_count == 200
    wanted = [0, 1, 2, 9, 40, 71, 102, 103, 150, 199]
    with FrameReader(path, info) as reader:
        assert reader.backend.name == "opencv"
        opencv = reader.backend
        if keyframe_before_30 is not None:
            assert opencv.keyframe_scan.last_at_or_before(30) == keyframe_before_30
        choices = []
        for index in wanted:
            choices.append(opencv.reads_forward(index))
            image = reader.read([index])[0]
            assert np.array_equal(np.asarray(image), every[index]), f"frame {index}"
    if name == "gop12.mp4":
        # 1 and 2 follow the frame just read; 31 frames on, a seek decodes fewer (16 + up to 11).
        assert choices[1:3] == [True, True] and choices[4:6] == [False, False]
    if name == "intra.avi":
        assert choices[3] is True and choices[4] is False  # 7 ahead: read on; 31 ahead: seek decodes 17


# What phone videos hold and OpenCV's writer cannot make: B-frames, open GOPs, HEVC.
_X264_OPEN_GOP = dict(codec="libx264", codec_options={"x264-params": "keyint=30:bframes=3:open-gop=1"})
_X265 = dict(codec="libx265", codec_options={"x265-params": "keyint=30:bframes=4:open-gop=1:log-level=error"})


@pytest.mark.parametrize("name, encoder", [
    ("gop12.mp4", {}), ("intra.avi", {}), ("vp8.webm", {}), ("h264.mp4", _X264_OPEN_GOP), ("h264.mkv", _X264_OPEN_GOP),
    ("hevc.mp4", _X265),
])
def test_pyav_reader_returns_the_exact_frames_opencv_decodes(tmp_path, name, encoder):
    import numpy as np

    path = write_video(str(tmp_path / name), duration=8, fps=25, size=(96, 64), **encoder)
    info = probe_video(path)
    every = _every_frame_rgb(path)
    assert len(every) == info.frame_count == 200
    # Forward by one, jumps across keyframes, backwards, the last frame.
    wanted = [0, 1, 2, 9, 29, 30, 31, 40, 71, 102, 103, 150, 199, 5, 60]
    with FrameReader(path, info) as reader:
        images = reader.read(wanted)
        assert reader.backend.name == "pyav"
    for index, image in zip(wanted, images):
        assert np.array_equal(np.asarray(image), every[index]), f"frame {index}"


def test_pyav_decoder_starts_at_the_keyframe_right_before_each_frame(tmp_path):
    path = write_video(str(tmp_path / "gop12.mp4"), duration=8, fps=25, size=(96, 64))
    decoder = KeyframeDecoder(path, probe_video(path).frame_count)
    try:
        for index in (40, 71, 102):  # keyframes at 36, 60, 96: 5 + 12 + 7 frames
            decoder.frame(index)
        assert decoder.frames_decoded == 24  # OpenCV's seek starts 16 frames earlier still
        decoder.frame(103)
        decoder.frame(105)  # read on: 1 + 2 more
        assert decoder.frames_decoded == 27
    finally:
        decoder.close()


def test_reader_falls_back_to_opencv_when_pyav_sees_another_frame_count_or_is_off(tmp_path, monkeypatch):
    import dataclasses

    import numpy as np

    path = write_video(str(tmp_path / "v.mp4"), duration=2, fps=25, size=(96, 64))
    info = probe_video(path)
    every = _every_frame_rgb(path)
    # A probe that counted differently (say, one frame failed to decode): PyAV's numbering cannot be trusted.
    with FrameReader(path, dataclasses.replace(info, frame_count=info.frame_count - 1)) as reader:
        assert reader.backend.name == "opencv"
        assert np.array_equal(np.asarray(reader.read([30])[0]), every[30])
    monkeypatch.setenv("PYAV_FRAMES", "0")
    with FrameReader(path, info) as reader:
        assert reader.backend.name == "opencv"


def test_keyframe_scan_gives_up_where_the_packets_end(tmp_path, monkeypatch):
    monkeypatch.setenv("PYAV_FRAMES", "0")
    path = write_video(str(tmp_path / "clip.mp4"), duration=2, fps=25, size=(96, 64))
    with FrameReader(path, probe_video(path)) as reader:
        keyframes = reader.backend.keyframe_scan
        assert keyframes.last_at_or_before(49) == 48
        assert keyframes.last_at_or_before(50) is None  # past the end: the plain rule decides


def test_reader_reads_a_segment_from_keyframes_and_decodes_only_them(tmp_path, monkeypatch):
    path = write_video(str(tmp_path / "gop12.mp4"), duration=10, fps=25, size=(96, 64))
    info = probe_video(path)
    segment = plan_segments(info.duration_seconds, 10)[0]
    with FrameReader(path, info) as reader:
        assert reader.segment_frame_indices(segment, 8) == [12, 48, 72, 108, 144, 168, 204, 228]
        assert len(reader.read_segment(segment, 8)) == 8
        assert reader.backend.frames_decoded == 8  # one per sampled frame
    monkeypatch.setenv("PYAV_FRAMES", "0")
    with FrameReader(path, info) as reader:  # OpenCV does not know the keyframes: the middles
        assert reader.segment_frame_indices(segment, 8) == [15, 46, 78, 109, 140, 171, 203, 234]


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotated_videos_come_out_upright_as_opencv_shows_them(tmp_path, degrees):
    import numpy as np

    path = write_video(str(tmp_path / "portrait.mp4"), duration=2, fps=25, size=(96, 64))
    rotate_mp4(path, degrees)
    info = probe_video(path)
    assert (info.width, info.height) == ((64, 96) if degrees != 180 else (96, 64))
    every = _every_frame_rgb(path)
    wanted = [0, 13, 49, 3]
    with FrameReader(path, info) as reader:
        images = reader.read(wanted)
        assert reader.backend.name == "pyav"
    for index, image in zip(wanted, images):
        assert np.array_equal(np.asarray(image), every[index]), f"frame {index}"


def test_metadata_that_is_not_utf8_does_not_stop_pyav(tmp_path):
    import av
    import numpy as np

    source = write_video(str(tmp_path / "v.mp4"), duration=2, fps=25, size=(96, 64))
    path = str(tmp_path / "titled.mkv")
    with av.open(source) as original, av.open(path, "w") as remuxed:
        remuxed.metadata["title"] = "TITLE-MARK"
        stream = remuxed.add_stream_from_template(original.streams.video[0])
        for packet in original.demux(original.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                remuxed.mux(packet)
    data = open(path, "rb").read()
    assert data.count(b"TITLE-MARK") == 1
    open(path, "wb").write(data.replace(b"TITLE-MARK", b"TITLE-\xff\xfe\xfd\xfc"))
    info = probe_video(path)
    with FrameReader(path, info) as reader:
        image = reader.read([30])[0]
        assert reader.backend.name == "pyav"
    assert np.array_equal(np.asarray(image), _every_frame_rgb(path)[30])


def test_cancelling_stops_the_packet_scan(tmp_path):
    path = write_video(str(tmp_path / "v.mp4"), duration=2, fps=25, size=(96, 64))
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        FrameReader(path, probe_video(path), cancel=cancel)


@pytest.mark.parametrize("degrees", [0, 90])
def test_shrunk_frames_are_upright_and_close_to_shrinking_the_whole_frame(tmp_path, degrees):
    """PyAV scales and converts in one pass (area averaging); OpenCV's INTER_AREA on the full frame is the reference."""
    import cv2
    import numpy as np

    path = write_video(str(tmp_path / "v.mp4"), duration=1, fps=25, size=(160, 96), markers=[Marker(0, 1, "red")])
    if degrees:
        rotate_mp4(path, degrees)
    info = probe_video(path)
    whole = _every_frame_rgb(path)[7]
    with FrameReader(path, info, max_edge=48) as reader:
        image = reader.read([7])[0]
        assert reader.backend.name == "pyav"
    assert image.size == ((48, 29) if degrees == 0 else (29, 48))
    expected = cv2.resize(whole, image.size, interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(np.asarray(image).astype(int) - expected).mean() < 2


def test_a_video_whose_frames_pyav_cannot_number_by_timestamp_is_probed_and_read(tmp_path):
    """In MPEG-TS PyAV's seeks do not land where the timestamps say: the probe counts the packets once the
    last keyframe's frames decode, and the reader hands the file to OpenCV after a capped decode of all of it."""
    import numpy as np

    path = write_video(str(tmp_path / "h264.ts"), duration=8, fps=25, size=(96, 64), **_X264_OPEN_GOP)
    info = probe_video(path)
    assert (info.frame_count, info.fps, info.width, info.height) == (200, 25.0, 96, 64)
    every = _every_frame_rgb(path)
    with FrameReader(path, info) as reader:
        images = reader.read([0, 101, 199])
        assert reader.backend.name == "opencv"
    for index, image in zip([0, 101, 199], images):
        assert np.array_equal(np.asarray(image), every[index]), f"frame {index}"
