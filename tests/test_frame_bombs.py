"""Frame bombs: small files whose frames, past the ones the headers describe, are far larger than 8K.

The files are MJPEG AVIs whose headers and first frames are 160x120 and
whose later frames are valid 16000x16000 JPEGs of 1.5 MB each
(`tools/hostile_media.flat_jpeg`). Decoding one such frame takes 366 MiB as
YUV 4:2:0 and 732 MiB more as RGB. No decoder may ever allocate one: the
probe refuses what it meets with a sentence naming the frame, a job fails
with one, and the memory checks run in fresh subprocesses so that their
peak RSS (VmHWM) belongs to that one probe or read alone.
"""
import json
import os
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
import requests

from tests.support.api import data_dir_entries, stored_entries, upload, wait_for_status
from tools.hostile_media import flat_jpeg, mjpeg_avi
from tools.service_process import REPO, ServiceProcess as ServerProcess
from tools.synthetic_video import background
from video_analysis.video import FrameReader, VideoError, probe_video

HUGE = 16000
# A 16000 x 16000 frame is 366 MiB as YUV 4:2:0. Decoding any stays far below that;
# 100 MiB leaves room for an 8K frame (50 MiB as YUV) and the allocator's slack.
MAX_GROWTH_MIB = 100


def small_jpegs(count, size=(160, 120)):
    rng = np.random.default_rng(0)
    return [cv2.imencode(".jpg", background(i, *size, rng))[1].tobytes() for i in range(count)]


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bombs")
    small, huge = small_jpegs(20), flat_jpeg(HUGE, HUGE)
    return {
        "ok": mjpeg_avi(str(root / "ok.avi"), small),
        # The attack as reported: frames 1-19 are 160x120, frame 20 is 16000x16000.
        "last": mjpeg_avi(str(root / "last.avi"), small[:19] + [huge]),
        "ten": mjpeg_avi(str(root / "ten.avi"), small[:10] + [huge] * 10),
        "first": mjpeg_avi(str(root / "first.avi"), [huge] + small[1:]),
        # One in the middle, where the probe does not look: a job meets it.
        "middle": mjpeg_avi(str(root / "middle.avi"), small[:10] + [huge] + small[11:]),
    }


def test_the_bombs_are_small_files_holding_valid_16000x16000_jpegs(bombs):
    huge = flat_jpeg(HUGE, HUGE)
    assert len(huge) < 2_000_000
    # libjpeg reads it whole (at 1/8 scale, so this test decodes 2000x2000 only).
    assert cv2.imdecode(np.frombuffer(huge, np.uint8), cv2.IMREAD_REDUCED_COLOR_8).shape == (2000, 2000, 3)
    assert os.path.getsize(bombs["last"]) < 2_000_000
    assert os.path.getsize(bombs["ten"]) < 16_000_000
    assert probe_video(bombs["ok"]).frame_count == 20


@pytest.mark.parametrize("kind, frame", [("last", 20), ("ten", 20), ("first", 1)])
def test_the_probe_refuses_a_frame_larger_than_8k_and_names_it(bombs, kind, frame):
    with pytest.raises(VideoError) as refused:
        probe_video(bombs[kind])
    message = str(refused.value)
    assert f"Frame {frame} of the video is larger than the 8K (8192x4320 pixels)" in message, message
    assert "upload a smaller version" in message


@pytest.mark.parametrize("width, height, accepted", [
    (8192, 4320, True), (4320, 8192, True), (8193, 4320, False), (4320, 8193, False),
])
def test_frames_up_to_8k_in_either_orientation_are_read_and_bigger_ones_refused(tmp_path, width, height, accepted):
    """The decoders check sizes rounded up for alignment (a portrait 8K frame's 4320 is 4352 to FFmpeg's
    get_buffer); their cap leaves room for that, and the exact limit is checked on the frame."""
    path = mjpeg_avi(str(tmp_path / "big.avi"), [flat_jpeg(width, height)] * 2, size=(width, height))
    if not accepted:
        with pytest.raises(VideoError, match=r"larger than the 8K \(8192x4320"):
            probe_video(path)
        return
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count) == (width, height, 2)
    with FrameReader(path, info, max_edge=384) as reader:
        assert [image.size for image in reader.read([0, 1])] == [(384, 202) if width > height else (202, 384)] * 2


# -- memory, in fresh subprocesses ----------------------------------------------------------------
_MEASURE = r"""
import dataclasses, json, sys
import video_analysis.video as video_frames

def peak_mib():  # this process's own peak: ru_maxrss would also count the parent's, forked before the exec
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024

action, warm_up, path = sys.argv[1:4]
info = video_frames.probe_video(warm_up)  # the libraries and their first allocations, on a normal video
with video_frames.FrameReader(warm_up, info, max_edge=384) as reader:
    reader.read([0, 19])
before = peak_mib()
outcome = "ok"
try:
    if action == "probe":
        video_frames.probe_video(path)
    else:
        # "read-as-small": as the probe recorded a bomb before the fix (the headers' and frame 0's size).
        info = dataclasses.replace(info, filename="bomb.avi") if action == "read-as-small" else video_frames.probe_video(path)
        with video_frames.FrameReader(path, info, max_edge=384) as reader:
            for segment in video_frames.plan_segments(info.duration_seconds, 1):
                reader.read_segment(segment, 8)
except video_frames.VideoError as error:
    outcome = str(error)
print(json.dumps({"before_mib": before, "after_mib": peak_mib(), "outcome": outcome}))
"""


def measure(action, warm_up, path, **env):
    done = subprocess.run([sys.executable, "-c", _MEASURE, action, warm_up, path], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, **env))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["growth_mib"] = result["after_mib"] - result["before_mib"]
    print(action, os.path.basename(path), env, result)
    return result


@pytest.mark.parametrize("kind", ["last", "ten", "first"])
def test_probing_a_frame_bomb_never_decodes_a_huge_frame(bombs, kind):
    """Before the fix the probe decoded the last frame: +370 MiB for "last" and "ten" (and accepted them)."""
    result = measure("probe", bombs["ok"], bombs[kind])
    assert "larger than the 8K" in result["outcome"]
    assert result["growth_mib"] < MAX_GROWTH_MIB, result


@pytest.mark.parametrize("pyav", ["1", "0"])
def test_a_job_meeting_huge_frames_fails_clearly_without_decoding_them(bombs, pyav):
    """The reader, told the video is 160x120 (as the probe used to record), meets frame 11 at 16000x16000.

    Before the fix it decoded all ten huge frames, peaking at +1.1 GiB through PyAV
    (each converted to RGB at full size, then shrunk); OpenCV (PYAV_FRAMES=0) decoded them too.
    """
    result = measure("read-as-small", bombs["ok"], bombs["ten"], PYAV_FRAMES=pyav)
    assert result["outcome"].startswith("Frame 11 of the video is larger than the 8K (8192x4320 pixels)"), result
    assert result["growth_mib"] < MAX_GROWTH_MIB, result


def test_frames_are_shrunk_before_their_colour_conversion(tmp_path, bombs):
    """An 8K UHD frame (7680x4320, within the limit) read for a 384-pixel model input.

    Converting it to RGB before shrinking takes 95 MiB on top of the decoded
    frame (47 MiB as YUV 4:2:0); shrinking and converting in one pass needs
    only the small result.
    """
    path = mjpeg_avi(str(tmp_path / "uhd.avi"), small_jpegs(1) + [flat_jpeg(7680, 4320)] * 2)
    result = measure("read", bombs["ok"], path)
    assert result["outcome"] == "ok"
    assert result["growth_mib"] < 80, result


# -- through the service ------------------------------------------------------------------------
def test_a_job_that_meets_a_huge_frame_fails_with_a_sentence_naming_it(app, client, bombs):
    """The probe looks at the first and last frames only; frame 11 is met by the job."""
    response = upload(client, bombs["middle"], segment_duration="1")
    assert response.status_code == 202, response.get_data(as_text=True)
    session_id = response.get_json()["sessionId"]
    final = wait_for_status(client, session_id)[-1]
    assert final["status"] == "failed", final
    assert final["error"] == ("Frame 11 of the video is larger than the 8K (8192x4320 pixels) this service reads; "
                              "upload a smaller version of the video.")
    assert final["progress"] < 100
    assert stored_entries(app) == [session_id]  # kept until cleanup, like any failed job's


def _worker_pid(server):
    with open(f"/proc/{server.process.pid}/task/{server.process.pid}/children") as children:
        (worker,) = [int(pid) for pid in children.read().split()]
    return worker


def _status_mib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def test_gunicorn_refuses_the_bomb_with_415_keeps_nothing_and_stays_small(tiny_model_dir, tmp_path, bombs):
    data_dir = str(tmp_path / "data")
    server = ServerProcess(tiny_model_dir, data_dir)
    try:
        server.wait_ready()
        worker = _worker_pid(server)
        with open(bombs["ok"], "rb") as handle:  # one normal upload first: the worker's steady state
            accepted = requests.post(server.base + "/api/v1/video/upload", files={"video": handle}, timeout=60)
        assert accepted.status_code == 202, accepted.text
        peak_before = _status_mib(worker, "VmHWM")
        answers = []

        def send():
            with open(bombs["last"], "rb") as handle:
                answers.append(requests.post(server.base + "/api/v1/video/upload",
                                             files={"video": ("holiday.avi", handle)}, timeout=120))

        threads = [threading.Thread(target=send) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(150)
        growth = _status_mib(worker, "VmHWM") - peak_before
        assert len(answers) == 4
        for response in answers:
            assert response.status_code == 415, response.text
            assert response.headers["Content-Type"] == "application/problem+json"
            body = response.json()
            assert body["error"] == body["detail"] == (
                "Frame 20 of the video is larger than the 8K (8192x4320 pixels) this service reads; "
                "upload a smaller version of the video.")
            assert body["field"] == "video"
            assert data_dir not in response.text and "Traceback" not in response.text
        # Four probes at once used to take the worker's peak up by 1.5 GiB.
        assert growth < 300, f"worker peak RSS grew {growth:.0f} MiB"
        assert data_dir_entries(data_dir) == [accepted.json()["sessionId"]]  # nothing of the refused uploads
        assert server.process.poll() is None
    finally:
        server.stop()
