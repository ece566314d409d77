"""`python app.py` as a person runs it, and the launcher that tests and benchmarks start the service with.

gunicorn (test_faults, test_hardening, ...) and `make run` (test_slow_clients)
are exercised at length elsewhere; the development server only here.
"""
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.support.processes import running
from tools.service_process import ServiceProcess

# Starts the service as a child and ignores SIGTERM itself: a launcher that would never stop on its own.
_DEAF_TO_SIGTERM = """
import signal, subprocess, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen(sys.argv[1:]).wait()
"""


def assert_gone(pids, within: float = 10.0) -> None:
    """Every process of `pids` ends within `within` seconds (a killed process takes a moment to go)."""
    deadline = time.monotonic() + within
    while [pid for pid in pids if running(pid)]:
        assert time.monotonic() < deadline, f"still running: {[pid for pid in pids if running(pid)]}"
        time.sleep(0.05)


def parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def command_line(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read().replace(b"\0", b" ").decode()


def test_python_app_py_serves_an_analysis_and_stops_on_ctrl_c(start_service, videos):
    server = start_service(how="app.py")
    started = server.descendants()
    assert started, "the development server runs the analysis in a child process"
    assert server.worker_pid() == server.process.pid
    with open(videos["short"], "rb") as handle:
        response = requests.post(server.base + "/api/v1/video/upload", files={"video": handle},
                                 data={"segment_duration": "3"}, timeout=30)
    assert response.status_code == 202, response.text
    status_url = server.base + response.headers["Location"]
    deadline = time.monotonic() + 60
    while requests.get(status_url, timeout=5).json()["status"] != "completed":
        assert time.monotonic() < deadline, "the job never completed"
        time.sleep(0.1)
    results = requests.get(server.base + response.json()["resultsUrl"], timeout=5).json()
    assert results["data"]["total_segments_analyzed"] == 2
    assert requests.get(server.base + "/", timeout=5).headers["Content-Type"].startswith("text/html")
    server.process.send_signal(signal.SIGINT)
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        server.process.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack to the log
        server.process.wait(10)
        pytest.fail(f"python app.py was still running 15 s after Ctrl-C; its log:\n{server.log()}")
    assert_gone(started)
    assert "Traceback" not in server.log()


def test_a_service_that_cannot_start_is_reported_with_its_own_words(start_service):
    server = start_service(how="app.py", env={"HTTP_THREADS": "2", "MAX_LEGACY_REQUESTS": "5"}, ready=False)
    with pytest.raises(RuntimeError, match=r"(?s)exited with status 1:.*MAX_LEGACY_REQUESTS"):
        server.wait_ready(30)


def test_stop_kills_a_service_that_ignores_sigterm_and_everything_it_started(tiny_model_dir, tmp_path):
    server = ServiceProcess(tiny_model_dir, str(tmp_path / "data"), wrapper=[sys.executable, "-c", _DEAF_TO_SIGTERM])
    try:
        server.wait_ready()
        started = server.descendants()
        assert len(started) >= 3, started  # gunicorn's arbiter and worker, the analysis process
        assert "gunicorn" in command_line(parent(server.worker_pid()))
    finally:
        began = time.monotonic()
        server.stop(grace=1)
    assert server.process.returncode == -signal.SIGKILL
    assert time.monotonic() - began < 10
    assert_gone(started)


def test_worker_pid_under_make_run_is_gunicorns_worker_and_env_can_remove_a_variable(start_service, monkeypatch):
    """The benchmarks read the worker's memory through worker_pid(), and keep the caller's BLAS choice out."""
    monkeypatch.setenv("LD_PRELOAD_CHOSEN_BY_CALLER", "1")
    server = start_service(how="make run", env={"LD_PRELOAD_CHOSEN_BY_CALLER": None, "JOB_WORKERS": "1"})
    worker = server.worker_pid()
    arbiter = parent(worker)
    assert parent(arbiter) == server.process.pid  # the launcher started gunicorn (and nginx)
    assert "gunicorn" in command_line(arbiter) and "gunicorn" in command_line(worker)
    assert [child for child in server.descendants() if "multiprocessing.spawn" in command_line(child)
            and parent(child) == worker], "the worker holds the analysis child"
    with open(f"/proc/{worker}/environ", "rb") as handle:
        environment = handle.read().split(b"\0")
    assert b"JOB_WORKERS=1" in environment
    assert not [item for item in environment if item.startswith(b"LD_PRELOAD_CHOSEN_BY_CALLER=")]
    assert os.environ["LD_PRELOAD_CHOSEN_BY_CALLER"] == "1"  # removed from the service's environment only
