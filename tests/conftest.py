"""Fixtures only tests/ needs: the trained marker model, the generated videos, the service in a subprocess,
a redis-server of the test's own, a headless Chromium and the app on the marker model for the page's tests.

The app, its client and a live server come from the root conftest.py.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from tools.service_process import REPO, ServiceProcess
from tools.synthetic_video import write_video

# Trained checkpoints survive test runs in this gitignored cache; one is rebuilt
# only when its key (preset, seed, builder version, settings, training code) changes.
MODEL_CACHE = os.path.join(REPO, ".cache", "models")


@pytest.fixture(scope="session")
def marker_model_dir() -> str:
    """The `marker` checkpoint (seed 0), trained to see coloured squares: built on first use, then cached."""
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


@pytest.fixture
def start_service(tiny_model_dir, tmp_path):
    """Start the service in a subprocess (tools/service_process.py) and wait until it is ready; stopped after the test.

    `start_service(model_dir=tiny model, data_dir=tmp_path/"data", how="gunicorn", env=None, ready=True, ...)`
    returns the `ServiceProcess`; its `base` is the URL, `data_dir` its DATA_DIR.
    """
    started = []

    def start(model_dir=None, data_dir=None, ready=True, **options) -> ServiceProcess:
        data_dir = data_dir or str(tmp_path / ("data" if not started else f"data{len(started)}"))
        service = ServiceProcess(model_dir or tiny_model_dir, data_dir, **options)
        started.append(service)
        if ready:
            service.wait_ready()
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def redis_server(tmp_path):
    """A fresh redis-server of this test's own (tools/redis_server.py): a free loopback port, AOF on, in
    tmp_path/"redis"; stopped after the test. Fails, with what to install, when redis-server is missing."""
    from tools.redis_server import RedisServer  # here: the rest of the suite runs without the redis package

    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def redis_url(redis_server) -> str:
    """The URL of the test's redis-server, `redis://127.0.0.1:PORT/0`."""
    return redis_server.url


@pytest.fixture
def cluster(tiny_model_dir, tmp_path, redis_server):
    """A cluster of this test's own (tests/support/cluster.py): `cluster.start_api()`, `cluster.add_worker()`;
    every process is stopped after the test."""
    from tests.support.cluster import Cluster

    built = Cluster(str(tmp_path / "cluster"), tiny_model_dir, redis_server)
    yield built
    built.stop()


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (tests/support/browser.py); each test opens its own live server in it."""
    from tests.support.browser import chromium

    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def marker_server(marker_model_dir, tmp_path_factory):
    """The app on the marker model behind a real HTTP server (module-wide: one model load)."""
    from tests.support.api import serve
    from video_analysis.web.app import create_app
    from video_analysis.web.services import EXTENSION_KEY

    app = create_app({"MODEL": marker_model_dir, "DATA_DIR": str(tmp_path_factory.mktemp("web-data"))})
    app.extensions[EXTENSION_KEY].analysis.wait_until_loaded(120)
    try:
        with serve(app) as base_url:
            yield base_url
    finally:
        app.extensions[EXTENSION_KEY].close()
