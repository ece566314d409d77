"""One CancelToken per analysis: the frame reader and the model runner check the very object the caller cancels.

Everything runs for real: the tiny SmolVLM through mlx_vlm, PyAV and OpenCV
on generated files. Each cancel lands while one layer is busy and must end
the analysis within a frame or a chunk of the prompt, long before that
layer's work would have ended by itself.
"""
import threading
import time

import pytest

from tools.hostile_media import blank_avi_frames, flat_jpeg, mjpeg_avi
from tools.synthetic_video import write_video
from video_analysis.cancellation import CancelToken, Cancelled
from video_analysis.engine.analyzer import VideoHighlightGenerator
from video_analysis.engine.prompts import HIGHLIGHTS_SYSTEM
from video_analysis.video import VideoError

# How long an analysis may run on once its token is cancelled: one frame, or one chunk of the prompt, with
# room for a machine shared with other work.
PROMPTLY = 1.0


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    generator = VideoHighlightGenerator(tiny_model_dir)
    generator.runner.wait_until_loaded(120)
    yield generator
    generator.close()


@pytest.fixture(scope="module")
def slow_to_decode(tmp_path_factory):
    """40 flat 8K frames: an 8 MB file, but ~65 ms to decode each frame (2.5 s for all of them here)."""
    path = str(tmp_path_factory.mktemp("slow") / "flat8k.avi")
    return mjpeg_avi(path, [flat_jpeg(8192, 4320)] * 40, size=(8192, 4320), fps=10)


def cancel_when(engine, video, ready, **parameters):
    """Analyse `video` on a thread and cancel its token once `ready(events)` is true.

    `events` holds the progress reports so far, with the time of each. Returns what the analysis
    raised and how long it ran on after the cancel.
    """
    token, events, outcome = CancelToken(), [], {}

    def analyse():
        try:
            engine.generate_highlights(video, cancel=token, **parameters,
                                       progress=lambda *report: events.append((time.monotonic(), report)))
        except BaseException as error:  # noqa: BLE001  (examined by the test)
            outcome["error"] = error
        outcome["ended"] = time.monotonic()

    thread = threading.Thread(target=analyse)
    thread.start()
    deadline = time.monotonic() + 120
    while not ready(events):
        assert thread.is_alive(), f"the analysis ended before the cancel: {outcome}"
        assert time.monotonic() < deadline, "never ready to cancel"
        time.sleep(0.002)
    token.cancel()
    cancelled_at = time.monotonic()
    thread.join(60)
    assert not thread.is_alive()
    return outcome.get("error"), outcome["ended"] - cancelled_at


def reading_for(seconds):
    """Ready once the engine has said it is reading the frames (progress 0) and `seconds` have passed."""
    return lambda events: bool(events) and time.monotonic() - events[0][0] >= seconds


@pytest.mark.parametrize("pyav", ["1", "0"], ids=["pyav-reading-frames", "opencv-after-its-capped-decode"])
def test_a_cancel_while_frames_are_decoded_stops_the_reader(engine, slow_to_decode, monkeypatch, pyav):
    """PyAV: 16 frames of the first segment (~1.5 s). OpenCV: first a capped PyAV decode of every frame
    (~2.5 s). The cancel lands 0.3 s in; the model is never asked."""
    monkeypatch.setenv("PYAV_FRAMES", pyav)
    chunks = engine.runner.prefill_chunks
    error, ran_on = cancel_when(engine, slow_to_decode, reading_for(0.3), segment_duration=4, frames_per_segment=16)
    assert isinstance(error, Cancelled) and str(error) == "The analysis was cancelled.", repr(error)  # the reader's
    assert ran_on < PROMPTLY
    assert engine.runner.prefill_chunks == chunks


def test_a_cancel_during_the_prompts_prefill_stops_the_model(engine, videos):
    """A 6,000-token prompt is ~12 chunks of 512 (~1-2 s on the tiny model); the cancel lands after the first."""
    prompt = "\u6f22" * 2000
    budget = engine.runner.prompt_budget
    needed = -(-budget.prompt_tokens(HIGHLIGHTS_SYSTEM, prompt, 8) // engine.runner.prefill_chunk_tokens)
    start = engine.runner.prefill_chunks
    error, ran_on = cancel_when(engine, videos["short"], lambda events: engine.runner.prefill_chunks > start,
                                segment_duration=10, frames_per_segment=8, user_prompt=prompt)
    assert isinstance(error, Cancelled) and "prefill" in str(error), repr(error)  # the runner's
    assert ran_on < PROMPTLY
    assert engine.runner.prefill_chunks - start < needed


def test_a_failed_read_cancels_the_token_so_the_model_stops_too(engine, tmp_path):
    """Frames 20-29 of 60 are blank: reading segment 3 fails while the model answers segment 2. The engine
    cancels the analysis's token, so that generation stops instead of running on for nobody."""
    video = blank_avi_frames(write_video(str(tmp_path / "clip.avi"), duration=6, fps=10),
                             str(tmp_path / "breaks.avi"), range(20, 30))
    token = CancelToken()
    with pytest.raises(VideoError, match="could not be decoded at 00:02"):
        engine.generate_highlights(video, segment_duration=1, cancel=token)
    assert token.cancelled


# -- the token itself ------------------------------------------------------------------------------
def test_a_token_runs_each_callback_once_whenever_it_was_registered():
    token, calls = CancelToken(), []
    token.when_cancelled(lambda: calls.append("before"))
    assert not token.cancelled and calls == [] and token.wait(0.01) is False
    token.raise_if_cancelled()  # not yet
    token.cancel()
    token.cancel()  # idempotent: no second round of callbacks
    assert token.cancelled and token.wait(0) is True and calls == ["before"]
    token.when_cancelled(lambda: calls.append("after"))  # already cancelled: at once
    assert calls == ["before", "after"]
    with pytest.raises(Cancelled, match="^The upload was cancelled.$"):
        token.raise_if_cancelled("The upload")


def test_a_cancel_from_another_thread_wakes_a_waiter():
    token = CancelToken()
    threading.Timer(0.05, token.cancel).start()
    started = time.monotonic()
    assert token.wait(10) is True
    assert time.monotonic() - started < 5
