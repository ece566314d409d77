"""Shared fixtures: the tiny model (built once per run), generated videos, an app and a client per test."""
from __future__ import annotations

import contextlib
import os
import threading

import pytest

from tools.synthetic_video import write_video


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A randomly initialised SmolVLM checkpoint, built once per test run."""
    from tools.make_tiny_model import build_checkpoint

    return str(build_checkpoint(tmp_path_factory.mktemp("models") / "tiny-smolvlm", preset="tiny", seed=0))


# Trained checkpoints survive test runs in this gitignored cache; one is rebuilt
# only when its key (preset, seed, builder version, settings, training code) changes.
MODEL_CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache", "models")


@pytest.fixture(scope="session")
def marker_model_dir() -> str:
    """The `marker` checkpoint (seed 0), trained to see coloured squares: built on first use, then cached."""
    import json
    import time

    from tools.make_tiny_model import cached_checkpoint, preload_openblas

    preload_openblas()  # before mlx is first imported; training is ~30x slower without it
    started = time.perf_counter()
    path = cached_checkpoint(MODEL_CACHE, "marker", 0, log=lambda line: print(f"[marker build] {line}", flush=True))
    training = json.loads((path / "builder_info.json").read_text()).get("training", {})
    print(f"\nmarker model: {path.name} ready in {time.perf_counter() - started:.1f} s "
          f"(its training took {training.get('train_seconds')} s)")
    return str(path)


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    """Paths of generated test videos, by purpose."""
    root = tmp_path_factory.mktemp("videos")
    return {
        # 6 s: a few short segments, finishes in well under a second on the tiny model.
        "short": write_video(str(root / "short clip.mp4"), duration=6, fps=10),
        # 90 s at 1 s per segment: 90 model calls, long enough to cancel mid-way.
        "long": write_video(str(root / "long.mp4"), duration=90, fps=4, size=(96, 72)),
        "webm": write_video(str(root / "clip.webm"), duration=4, fps=10),
    }


@pytest.fixture(scope="session")
def tiny_analysis(tiny_model_dir):
    """One analysis process (a real child holding the tiny model) shared by the apps of the whole run.

    Starting a child costs ~3 s (imports, model, first compile); apps that
    need one of their own (another model, a child to kill) ask make_app for it.
    """
    from video_analysis.jobs.analysis_process import AnalysisProcess

    process = AnalysisProcess(tiny_model_dir)
    process.wait_until_loaded(120)
    yield process
    process.close()


@pytest.fixture
def make_app(tiny_model_dir, tiny_analysis, tmp_path):
    """Build an app on the tiny model with a temporary DATA_DIR; `make_app(**overrides)`.

    The app uses the run's shared analysis process unless it names another
    MODEL or is built with `own_analysis=True`.
    """
    from video_analysis.web.app import create_app
    from video_analysis.model.runner import ModelLoadError
    from video_analysis.web.services import EXTENSION_KEY

    built = []

    def factory(own_analysis=False, **overrides):
        settings = {"MODEL": tiny_model_dir, "DATA_DIR": str(tmp_path / f"data{len(built)}")}
        settings.update(overrides)
        shared = tiny_analysis if settings["MODEL"] == tiny_model_dir and not own_analysis else None
        app = create_app(settings, analysis=shared)
        app.config["TESTING"] = True
        built.append(app)
        try:
            app.extensions[EXTENSION_KEY].analysis.wait_until_loaded(120)
        except ModelLoadError:
            pass  # tests of a broken model look at how the app copes
        return app

    yield factory
    for app in built:
        app.extensions[EXTENSION_KEY].close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@contextlib.contextmanager
def serve(app):
    """Serve `app` with a real HTTP server on a free loopback port; yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture
def live_server(app):
    """The app (tiny model) behind a real HTTP server; yields its base URL."""
    with serve(app) as base_url:
        yield base_url


def stored_entries(app) -> list:
    """What DATA_DIR holds (one directory per live session)."""
    from video_analysis.web.services import EXTENSION_KEY

    return app.extensions[EXTENSION_KEY].storage.entries()


def upload(client, video_path, url="/api/v1/video/upload", field="video", filename=None, **fields):
    """POST a multipart upload with the test client; extra keyword arguments become form fields."""
    with open(video_path, "rb") as handle:
        data = {field: (handle, filename or os.path.basename(video_path)), **fields}
        return client.post(url, data=data, content_type="multipart/form-data")


def wait_for_status(client, session_id, statuses=("completed", "failed", "cancelled"), timeout=60.0):
    """Poll until the session reaches one of `statuses`; returns every status body seen."""
    import time

    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/video/status/{session_id}").get_json()
        seen.append(body)
        if body["status"] in statuses:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"session {session_id} never reached {statuses}; last: {seen[-1] if seen else None}")
