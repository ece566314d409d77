"""Config: every environment variable the product reads, its defaults, and the sentences that refuse bad values."""
import os
import socket
import runpy
import subprocess
import sys

import pytest
from pydantic import ValidationError

from video_analysis.config import DEFAULT_MODEL, Config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHOLE_NUMBERS = {  # variable -> its smallest allowed value
    "MAX_UPLOAD_MB": 1, "MAX_QUEUED_JOBS": 1, "JOB_WORKERS": 1, "SESSION_TTL_SECONDS": 1, "MAX_STORAGE_MB": 0,
    "PORT": 1, "HTTP_THREADS": 2, "HEADER_TIMEOUT_SECONDS": 1, "BODY_TIMEOUT_SECONDS": 1,
    "LEGACY_PROXY_TIMEOUT_SECONDS": 1, "MAX_FORM_PARTS": 1, "MAX_FORM_MEMORY_SIZE": 1, "WEB_PROCESSES": 1,
    "MODEL_CORES": 0,
}
SWITCHES = ("BUFFERED_BY_PROXY", "USE_OPENBLAS", "PARALLEL_VISION", "FAST_ACTIVATIONS", "REUSE_FREED_MEMORY", "PYAV_FRAMES",
            "MODEL_YIELDS_CPU")


@pytest.fixture(autouse=True)
def clean_environment():
    """No variable of the product set, whatever the shell running the tests has; the tests set os.environ."""
    saved = dict(os.environ)
    for name in Config.model_fields:
        os.environ.pop(name, None)
    yield
    os.environ.clear()
    os.environ.update(saved)


def refused(**environment) -> str:
    for name, value in environment.items():
        os.environ[name] = value
    with pytest.raises(SystemExit) as caught:
        Config.from_env()
    return str(caught.value)


def test_the_defaults():
    config = Config.from_env()
    assert (config.MODEL, config.DATA_DIR, config.HOST, config.PORT) == (DEFAULT_MODEL, "data", "127.0.0.1", 5000)
    assert (config.MAX_UPLOAD_MB, config.MAX_QUEUED_JOBS, config.JOB_WORKERS) == (2048, 16, 2)
    assert (config.SESSION_TTL_SECONDS, config.MAX_STORAGE_MB, config.CORS_ORIGINS) == (86400, None, ["*"])
    assert (config.HTTP_THREADS, config.MAX_LEGACY_REQUESTS, config.LOG_LEVEL) == (16, 8, "info")
    assert (config.HEADER_TIMEOUT_SECONDS, config.BODY_TIMEOUT_SECONDS) == (10, 60)
    assert (config.LEGACY_PROXY_TIMEOUT_SECONDS, config.NGINX) == (86400, None)
    assert config.BUFFERED_BY_PROXY is False
    assert config.MODEL_RETRY_SECONDS == 15 and config.MODEL_CORES == 0
    assert config.STATE_DB is None and config.state_db_path == os.path.join("data", "state.db")
    assert all(getattr(config, name) is True for name in SWITCHES[1:])


def test_every_variable_is_read_from_the_environment():
    given = {"MODEL": "/models/x", "DATA_DIR": "/srv/data", "STATE_DB": "/srv/state/sessions.db", "HOST": "::1", "NGINX": "/opt/nginx",
             "LOG_LEVEL": "warning", "CORS_ORIGINS": "https://a.example",
             "SWEEP_INTERVAL_SECONDS": "0.5", "MAX_LEGACY_REQUESTS": "3", "MODEL_RETRY_SECONDS": "2.5",
             "MAX_REEL_SECONDS": "30.5",
             "REDIS_URL": "rediss://:pw@redis.internal:6380/2", "WORKER_TOKEN": "s3cret-token-of-the-cluster",
             "API_URL": "http://api.internal:5000",
             **{name: str(minimum + 7) for name, minimum in WHOLE_NUMBERS.items()},
             **{name: "1" if name == "BUFFERED_BY_PROXY" else "0" for name in SWITCHES}}
    for name, value in given.items():
        os.environ[name] = value
    config = Config.from_env()
    assert set(given) == set(Config.model_fields)  # this test names every setting there is
    for name, value in given.items():
        read = getattr(config, name)
        if name in SWITCHES:
            assert read is (value == "1"), name
        elif name == "CORS_ORIGINS":
            assert read == [value]
        else:
            assert str(read) == value, name


@pytest.mark.parametrize("name", WHOLE_NUMBERS)
def test_a_whole_number_that_is_not_one_or_too_small_stops_the_start(name):
    assert refused(**{name: "lots"}) == f"{name} must be a whole number, got 'lots'"
    assert refused(**{name: "1.5"}) == f"{name} must be a whole number, got '1.5'"
    below = WHOLE_NUMBERS[name] - 1
    assert refused(**{name: str(below)}) == f"{name} must be at least {WHOLE_NUMBERS[name]}, got {below}"


def test_the_models_retry_pause_must_be_more_than_zero():
    assert refused(MODEL_RETRY_SECONDS="0") == "MODEL_RETRY_SECONDS must be more than 0, got 0"


def test_an_empty_variable_counts_as_not_set():
    for name in ("MODEL", "PORT", "MAX_STORAGE_MB", "USE_OPENBLAS", "LOG_LEVEL"):
        os.environ[name] = ""
    config = Config.from_env()
    assert (config.MODEL, config.PORT, config.MAX_STORAGE_MB, config.USE_OPENBLAS, config.LOG_LEVEL) == (
        DEFAULT_MODEL, 5000, None, True, "info")


def test_cors_origins_are_a_comma_separated_list_and_empty_means_none():
    os.environ["CORS_ORIGINS"] = " https://a.example, https://b.example ,"
    assert Config.from_env().CORS_ORIGINS == ["https://a.example", "https://b.example"]
    os.environ["CORS_ORIGINS"] = ""
    assert Config.from_env().CORS_ORIGINS == []


@pytest.mark.parametrize("name", SWITCHES)
def test_a_switch_is_1_or_0(name):
    os.environ[name] = "0"
    assert getattr(Config.from_env(), name) is False
    os.environ[name] = "1"
    assert getattr(Config.from_env(), name) is True
    assert refused(**{name: "yes"}) == f"{name} must be 1 (on) or 0 (off), got 'yes'"


def test_legacy_requests_default_to_half_the_threads_and_must_leave_some():
    os.environ["HTTP_THREADS"] = "5"
    assert Config.from_env().MAX_LEGACY_REQUESTS == 2
    os.environ["HTTP_THREADS"] = "2"
    assert Config.from_env().MAX_LEGACY_REQUESTS == 1
    sentence = refused(HTTP_THREADS="4", MAX_LEGACY_REQUESTS="4")
    assert sentence.startswith("MAX_LEGACY_REQUESTS must be at least 1 and below HTTP_THREADS (4)")
    assert sentence.endswith("got 4")


def test_the_log_level_is_one_of_loggings_names_in_any_case():
    os.environ["LOG_LEVEL"] = "DEBUG"
    assert Config.from_env().LOG_LEVEL == "debug"
    assert refused(LOG_LEVEL="loud").startswith("LOG_LEVEL must be one of 'debug', 'info'")


def test_every_bad_variable_is_named_at_once():
    sentences = refused(PORT="x", HTTP_THREADS="1", USE_OPENBLAS="on").splitlines()
    assert [sentence.split()[0] for sentence in sentences] == ["PORT", "HTTP_THREADS", "USE_OPENBLAS"]


def test_names_are_read_as_written():
    os.environ["port"] = "8080"
    assert Config.from_env().PORT == 5000


def test_overrides_win_over_the_environment_and_are_checked_the_same_way():
    os.environ["MAX_QUEUED_JOBS"] = "4"
    config = Config.from_env(MAX_QUEUED_JOBS="256", CORS_ORIGINS=["https://a.example"], SWEEP_INTERVAL_SECONDS=0.05)
    assert (config.MAX_QUEUED_JOBS, config.CORS_ORIGINS, config.SWEEP_INTERVAL_SECONDS) == (
        256, ["https://a.example"], 0.05)
    with pytest.raises(SystemExit, match="MAX_UPLOAD_MB must be at least 1, got 0"):
        Config.from_env(MAX_UPLOAD_MB=0)
    with pytest.raises(TypeError, match="unknown settings: COLOUR"):
        Config.from_env(COLOUR="blue")


def test_a_config_never_changes():
    config = Config.from_env()
    with pytest.raises(ValidationError, match="frozen"):
        config.PORT = 1


def test_gunicorn_reads_its_settings_from_config():
    os.environ["HOST"] = "0.0.0.0"
    os.environ["PORT"] = "8081"
    os.environ["HTTP_THREADS"] = "6"
    os.environ["LOG_LEVEL"] = "WARNING"
    settings = runpy.run_path(os.path.join(REPO, "gunicorn.conf.py"))
    assert (settings["bind"], settings["threads"], settings["loglevel"]) == ("0.0.0.0:8081", 6, "warning")
    os.environ["HTTP_THREADS"] = "one"
    with pytest.raises(SystemExit, match="HTTP_THREADS must be a whole number"):
        runpy.run_path(os.path.join(REPO, "gunicorn.conf.py"))


def test_the_frame_reader_switch_is_read_from_config():
    from video_analysis.video.pyav_backend import pyav_frames_enabled as enabled

    assert enabled() is True
    os.environ["PYAV_FRAMES"] = "0"
    assert enabled() is False


def test_importing_config_loads_neither_flask_nor_mlx():
    code = ("import sys, video_analysis.config; "
            "print(sorted(m for m in ('flask', 'mlx', 'cv2', 'av', 'numpy') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert loaded.stdout.strip() == "[]"


def test_cluster_mode_needs_a_worker_token_and_a_redis_address():
    assert "WORKER_TOKEN must be set too" in refused(REDIS_URL="redis://127.0.0.1:6379/0")
    assert "WORKER_TOKEN must be set too" in refused(REDIS_URL="redis://127.0.0.1:6379/0", WORKER_TOKEN="short")
    assert refused(REDIS_URL="127.0.0.1:6379", WORKER_TOKEN="x" * 16) == (
        "REDIS_URL must start with redis://, rediss:// or unix://, got '127.0.0.1:6379'")
    del os.environ["REDIS_URL"], os.environ["WORKER_TOKEN"]
    assert not Config.from_env().cluster
    config = Config.from_env(REDIS_URL="redis://127.0.0.1:6379/0", WORKER_TOKEN="x" * 16, HOST="0.0.0.0", PORT=8080)
    assert config.cluster and config.api_url == f"http://{socket.gethostname()}:8080"
