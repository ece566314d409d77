"""Fixtures for every test, here and in tests/: the tiny model (built once per run), an app, its client, a live server.

At the root because test_async_api.py, which is also a standalone script,
needs them too; what only tests/ needs is in tests/conftest.py, and plain
helpers are in tests/support/.
"""
from __future__ import annotations

import pytest

from tests.support.api import serve


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A randomly initialised SmolVLM checkpoint, built once per test run."""
    from tools.make_tiny_model import build_checkpoint

    return str(build_checkpoint(tmp_path_factory.mktemp("models") / "tiny-smolvlm", preset="tiny", seed=0))


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
    MODEL or is built with `own_analysis=True`. It is returned once its model
    has loaded (or failed to), or at once with `wait_for_model=False`.
    """
    from video_analysis.web.app import create_app
    from video_analysis.model.runner import ModelLoadError
    from video_analysis.web.services import EXTENSION_KEY

    built = []

    def factory(own_analysis=False, wait_for_model=True, **overrides):
        settings = {"MODEL": tiny_model_dir, "DATA_DIR": str(tmp_path / f"data{len(built)}")}
        settings.update(overrides)
        shared = tiny_analysis if settings["MODEL"] == tiny_model_dir and not own_analysis else None
        app = create_app(settings, analysis=shared)
        app.config["TESTING"] = True
        built.append(app)
        if not wait_for_model:
            return app
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
    """An app on the tiny model with default settings."""
    return make_app()


@pytest.fixture
def client(app):
    """The test client of `app`."""
    return app.test_client()


@pytest.fixture
def live_server(app):
    """`app` behind a real HTTP server in this process; yields its base URL."""
    with serve(app) as base_url:
        yield base_url
