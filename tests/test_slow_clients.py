"""Slow, stalled and silent clients against the set-up `make run` starts (issue 14).

The server is started with the command of the Makefile's `run` target, so
these tests check whatever `make run` serves: before serve.py they failed
on plain gunicorn (16 connections stalled mid-header froze it). The header
timeout is 2 s here (HEADER_TIMEOUT_SECONDS; 10 s by default).
"""
import json
import os
import signal
import socket
import subprocess
import time

import pytest
import requests

from tests.support.api import data_dir_entries
from tests.support.http import get_json, host_port, multipart, raw_http, request_head
from tests.support.processes import running
from tools.service_process import ServiceProcess, make_run_command

HEADER_TIMEOUT = 2.0
ANSWER_WITHIN = 5.0  # seconds a probe may wait for its answer: no latency figure, only "answered"
STALLED_HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\n"
# What `make run` gets here besides the model and DATA_DIR: a short header timeout, a small upload limit.
SETTINGS = {"HEADER_TIMEOUT_SECONDS": str(int(HEADER_TIMEOUT)), "MAX_UPLOAD_MB": "1"}


@pytest.fixture
def start_make_run(start_service):
    """`make run`'s set-up (nginx in front of gunicorn) with SETTINGS and `env`, started for one test."""
    return lambda **env: start_service(how="make run", env={**SETTINGS, **env})


def command_name(pid: int) -> str:
    """The program's name (nginx rewrites its title to "nginx: master process ...")."""
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return os.path.basename(handle.read().split(b"\0")[0].split(b" ")[0].decode()).rstrip(":")


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """One `make run` set-up for the tests that leave it as they found it."""
    with ServiceProcess(tiny_model_dir, str(tmp_path_factory.mktemp("slow-clients") / "data"), how="make run",
                        env=SETTINGS) as launched:
        launched.wait_ready()
        yield launched


@pytest.fixture(scope="module")
def session_id(server, videos):
    with open(videos["short"], "rb") as handle:
        response = requests.post(server.base + "/api/v1/video/upload", files={"video": handle}, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["sessionId"]


def connections(server, stalled=0, silent=0, trickle=0, drip=0) -> dict:
    """Open the hostile connections; returns {kind: [sockets]}."""
    opened = {"stalled": [], "silent": [], "trickle": [], "drip": []}
    address = host_port(server.base)
    for _ in range(stalled):
        sock = socket.create_connection(address)
        sock.sendall(STALLED_HEAD)
        opened["stalled"].append(sock)
    for _ in range(silent):
        opened["silent"].append(socket.create_connection(address))
    for _ in range(trickle):
        sock = socket.create_connection(address)
        sock.sendall(request_head("/api/v1/video/upload", 500_000) + b"--hostile-boundary\r\n")
        opened["trickle"].append(sock)
    for _ in range(drip):
        sock = socket.create_connection(address)
        sock.sendall(STALLED_HEAD + b"X-Drip: ")
        opened["drip"].append(sock)
    return opened


def close_all(opened: dict) -> None:
    for socks in opened.values():
        for sock in socks:
            sock.close()


def answered(url: str) -> int:
    """GET on a new connection; the status, which must come within ANSWER_WITHIN seconds."""
    with requests.Session() as http:
        return http.get(url, timeout=ANSWER_WITHIN, headers={"Connection": "close"}).status_code


def test_make_run_starts_the_launcher():
    assert make_run_command()[-2:] == ["-m", "video_analysis.serve"]


def test_every_request_is_answered_while_stalled_silent_and_trickling_clients_hold_connections(server, session_id):
    opened = connections(server, stalled=24, silent=24, trickle=8)
    try:
        for sock in opened["trickle"]:
            sock.sendall(b"\0" * 1024)
        time.sleep(0.5)  # long enough for a server whose threads read requests to give them all a thread
        statuses = []
        for _ in range(10):
            statuses.append(answered(server.base + "/health"))
            statuses.append(answered(f"{server.base}/api/v1/video/status/{session_id}"))
            for sock in opened["trickle"]:
                sock.sendall(b"\0" * 256)
        assert statuses == [200] * 20
    finally:
        close_all(opened)


def test_stalled_and_silent_clients_are_disconnected_after_the_header_timeout(server):
    opened = connections(server, stalled=20, silent=8, drip=4)
    started = time.monotonic()
    closed_after = {}
    try:
        pending = {sock: kind for kind, socks in opened.items() for sock in socks}
        for sock in pending:
            sock.setblocking(False)
        while pending and time.monotonic() - started < HEADER_TIMEOUT + 4:
            for sock, kind in list(pending.items()):
                try:
                    data = sock.recv(1024)
                except BlockingIOError:
                    if kind == "drip" and int(time.monotonic() * 4) % 2:
                        try:
                            sock.send(b"a")  # never ends its header, but is never silent either
                        except OSError:
                            pass
                    continue
                except OSError:
                    data = b""
                assert data == b"", f"{kind}: the server answered {data[:80]!r} instead of closing"
                closed_after.setdefault(kind, []).append(time.monotonic() - started)
                del pending[sock]
            time.sleep(0.1)
        still_open = {kind: list(pending.values()).count(kind) for kind in opened if kind in pending.values()}
        assert not still_open, f"still open {HEADER_TIMEOUT + 4:.0f} s later: {still_open}"
        everything = [t for times in closed_after.values() for t in times]
        assert HEADER_TIMEOUT - 0.5 <= min(everything) and max(everything) <= HEADER_TIMEOUT + 3, closed_after
    finally:
        close_all(opened)
    assert answered(server.base + "/health") == 200


def test_a_trickled_upload_that_completes_is_accepted(server, videos):
    with open(videos["short"], "rb") as handle:
        video = handle.read()
    body = multipart([(b"video", b"trickled.mp4", video), (b"segment_duration", None, b"2")])
    pieces = [body[i:i + len(body) // 12 + 1] for i in range(0, len(body), len(body) // 12 + 1)]
    started = time.monotonic()
    # 12 pieces 0.3 s apart: the body takes ~3.6 s, longer than the header timeout, which does not apply to it.
    response = raw_http(server.base, request_head("/api/v1/video/upload", len(body)), pieces, pause=0.3)
    assert time.monotonic() - started > HEADER_TIMEOUT + 1
    assert response.status_code == 202, response.get_data(as_text=True)
    session = response.get_json()["sessionId"]
    deadline = time.monotonic() + 30
    while get_json(f"{server.base}/api/v1/video/status/{session}")[1]["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.1)


def assert_problem_json(response, status: int, legacy: bool = False) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/problem+json", response.headers
    body = response.get_json()
    assert body["type"] == "about:blank" and body["status"] == status and body["title"]
    assert body["error"] == body["detail"] and len(body["detail"]) > 30 and body["detail"].endswith(".")
    assert "nginx" not in json.dumps(body).lower()
    assert body.get("success") is (False if legacy else None)
    return body


@pytest.mark.parametrize("path,legacy", [("/api/v1/video/upload", False), ("/analyze/highlights", True)])
def test_a_body_over_the_limit_is_refused_by_nginx_as_problem_json(server, path, legacy):
    # MAX_UPLOAD_MB=1 here: nginx takes bodies up to 2 MiB (the limit + 1 MB, as the app does).
    response = raw_http(server.base, request_head(path, 3 * 1024 * 1024))
    body = assert_problem_json(response, 413, legacy)
    assert "1 MB" in body["detail"]


@pytest.mark.parametrize("path,legacy", [("/api/v1/video/upload", False), ("/analyze/highlights", True)])
def test_uploads_past_the_queue_cap_are_refused_before_nginx_buffers_their_body(start_make_run, tmp_path, path,
                                                                                 legacy):
    """nginx buffers whole bodies in DATA_DIR: at most MAX_QUEUED_JOBS per route at once, or a flood of big
    uploads would fill the disk before the app could refuse them. The next one gets a 503 without its body."""
    launched = start_make_run(MAX_QUEUED_JOBS="2")
    held = connections(launched, trickle=0)
    address = host_port(launched.base)
    for _ in range(2):
        sock = socket.create_connection(address)
        sock.sendall(request_head(path, 500_000) + b"--hostile-boundary\r\n")
        held["trickle"].append(sock)
    time.sleep(0.5)  # nginx has taken both
    response = raw_http(launched.base, request_head(path, 500_000), timeout=ANSWER_WITHIN)
    body = assert_problem_json(response, 503, legacy)
    assert "2 uploads" in body["detail"] and int(response.headers["Retry-After"]) > 0
    assert answered(launched.base + "/health") == 200
    close_all(held)
    time.sleep(0.5)
    with open(videos_short(tmp_path), "rb") as handle:
        again = requests.post(launched.base + path, files={"video": handle}, timeout=30)
    assert again.status_code in (200, 202), again.text


def videos_short(root) -> str:
    from tools.synthetic_video import write_video

    return write_video(str(root / "after.mp4"), duration=2, fps=10)


@pytest.mark.parametrize("path", ["/health", "/api/v1/video/status/x", "/nowhere"])
def test_routes_that_read_no_body_take_none_so_nginx_cannot_be_made_to_buffer_one(server, path):
    """Only the upload routes may fill nginx's buffers in DATA_DIR (at most MAX_QUEUED_JOBS each at once)."""
    response = raw_http(server.base, b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Length: 1048576\r\nConnection: close\r\n\r\n")
    assert_problem_json(response, 413)


@pytest.mark.parametrize("head,status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
    (b"POST /api/v1/video/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
    (b"GET /.nginx-problem/500 HTTP/1.1\r\nHost: x\r\n\r\n", 404),
])
def test_requests_nginx_refuses_get_problem_json(server, head, status):
    assert_problem_json(raw_http(server.base, head), status)


def test_a_body_nginx_cannot_buffer_is_a_problem_json_500(server):
    """nginx's buffer for bodies (DATA_DIR/.request-bodies) made immutable stands for a full disk there."""
    bodies = os.path.join(server.data_dir, ".request-bodies")
    if subprocess.run(["chattr", "+i", bodies], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        body = multipart([(b"video", b"clip.mp4", os.urandom(100_000))])
        response = raw_http(server.base, request_head("/api/v1/video/upload", len(body)), [body])
    finally:
        subprocess.run(["chattr", "-i", bodies], check=True)
    assert "disk may be full" in assert_problem_json(response, 500)["detail"]


def test_long_request_lines_and_headers_within_nginxs_limits_reach_the_app(server):
    """Up to 16 KiB a line: gunicorn behind nginx must not refuse what nginx let through with its own HTML page."""
    response = raw_http(server.base, b"GET /api/v1/video/status/" + b"a" * 12_000 + b" HTTP/1.1\r\nHost: x\r\n"
                        + b"".join(b"X-Many-%d: b\r\n" % n for n in range(150))
                        + b"X-Long: " + b"c" * 12_000 + b"\r\n\r\n")
    assert response.status_code == 404 and response.get_json()["title"] == "Session not found"


def test_the_nginx_configuration_is_valid_for_other_settings(tmp_path):
    """nginx -t on configurations for an IPv6 host and other limits (the tests above run one)."""
    from video_analysis.config import Config
    from video_analysis.serve.nginx_config import find_nginx, nginx_config

    for environ, expected in (({"HOST": "::1", "PORT": "8080", "MAX_UPLOAD_MB": "4096"},
                               ["listen [::1]:8080 ", "client_max_body_size 4097m;"]),
                              ({"HOST": "0.0.0.0", "PORT": "80", "HEADER_TIMEOUT_SECONDS": "30"},
                               ["listen 0.0.0.0:80 ", "client_header_timeout 30s;"])):
        settings = Config.from_env(**environ, DATA_DIR=str(tmp_path / "data"))
        text = nginx_config(settings, str(tmp_path), str(tmp_path / "bodies"), str(tmp_path / "g.sock"))
        assert all(line in text for line in expected)
        config = tmp_path / "nginx.conf"
        config.write_text(text)
        checked = subprocess.run([find_nginx(settings), "-t", "-q", "-p", str(tmp_path), "-c", str(config)],
                                 capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr


def test_sigterm_stops_nginx_and_gunicorn_cleanly(start_make_run, videos):
    launched = start_make_run()
    opened = {}
    try:
        processes = launched.descendants()
        # nginx master and worker, gunicorn arbiter and worker, the worker's analysis process and
        # multiprocessing's resource tracker.
        assert len(processes) == 6, processes
        with open(videos["long"], "rb") as handle:
            response = requests.post(launched.base + "/api/v1/video/upload", files={"video": handle},
                                     data={"segment_duration": "1"}, timeout=30)
        session = response.json()["sessionId"]
        while get_json(f"{launched.base}/api/v1/video/status/{session}")[1]["status"] != "processing":
            time.sleep(0.05)
        opened = connections(launched, stalled=4, silent=4)
        took = launched.terminate(timeout=15)
        assert launched.process.returncode == 0, launched.log()
        assert took < 10, f"took {took:.1f} s"
        assert not [pid for pid in processes if running(pid)]
        log = launched.log()
        assert "Traceback" not in log and "exited by itself" not in log
        # The cancelled job's upload stays until the next start, as under gunicorn alone; nginx's buffer is gone.
        assert data_dir_entries(launched.data_dir) == [session]
    finally:
        close_all(opened)


def test_if_nginx_dies_the_launcher_stops_gunicorn_and_fails(start_make_run):
    launched = start_make_run()
    processes = launched.descendants()
    with open(f"/proc/{launched.process.pid}/task/{launched.process.pid}/children") as handle:
        started = [int(pid) for pid in handle.read().split()]
    nginx_master = next(pid for pid in started if command_name(pid) == "nginx")
    os.kill(nginx_master, signal.SIGKILL)  # its worker is left behind: the launcher must stop it too
    launched.process.wait(15)
    assert launched.process.returncode != 0
    assert "nginx exited by itself" in launched.log()
    assert not [pid for pid in processes if running(pid)]


def test_an_upload_the_app_refuses_before_reading_its_body_gets_the_apps_answer_not_a_502(start_make_run, tmp_path):
    """gunicorn closes a connection whose body the app left unread (it drains only a little); nginx, still
    sending that body, then answered 502. Behind nginx the app reads such a body to its end."""
    from tools.synthetic_video import write_video

    launched = start_make_run(MAX_QUEUED_JOBS="1", MAX_UPLOAD_MB="64")
    long_video = write_video(str(tmp_path / "long.mp4"), duration=240, fps=2, size=(96, 72))
    with open(long_video, "rb") as handle:
        busy = requests.post(launched.base + "/api/v1/video/upload", files={"video": handle},
                             data={"segment_duration": "1"}, timeout=30)
    assert busy.status_code == 202
    body = multipart([(b"video", b"big.mp4", os.urandom(24 * 1024 * 1024))])
    for _ in range(3):
        response = raw_http(launched.base, request_head("/api/v1/video/upload", len(body)), [body])
        problem = assert_problem_json(response, 503)
        assert "already queued" in problem["detail"] and int(response.headers["Retry-After"]) > 0
