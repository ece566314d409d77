"""The P3 status pollers (bench/pollers.py) against a small real HTTP/1.1 server on loopback.

The one-thread client parses raw HTTP itself, so these check that it counts
every answer once, keeps its connections, and survives a server that closes
them, without hanging.
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.pollers import ONE_THREAD_AGENT, THREADED_AGENT, combine_windows, poll_one_thread, poll_threads


class _StatusHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn answers the pollers
    close_every = 0  # >0: close the connection after every n-th answer on it
    fail_every = 0  # >0: every n-th answer on a connection is a 503

    def do_GET(self):  # noqa: N802  (http.server's name)
        self.server.agents.append(self.headers.get("User-Agent", ""))
        self.answered = getattr(self, "answered", 0) + 1
        body = json.dumps({"status": "processing", "path": self.path}).encode()
        code = 200 if self.path.startswith("/status") else 404
        if self.fail_every and self.answered % self.fail_every == 0:
            code = 503
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        closing = self.close_every and self.answered % self.close_every == 0
        if closing:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        if closing:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def status_server():
    servers = []

    def start(close_every=0, fail_every=0):
        handler = type("Handler", (_StatusHandler,), {"close_every": close_every, "fail_every": fail_every})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.agents = []
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_one_thread_client_polls_each_connection_at_its_interval(status_server):
    server, base = status_server()
    result = poll_one_thread(f"{base}/status/abc?x=1", pollers=5, interval=0.05, seconds=1.0)
    # 5 pollers x 20 polls in 1 s; phases are random, so one poll more or less each
    assert 80 <= result["requests"] <= 105
    assert result["errors"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"] < 1000
    # plus one warm-up request per connection, all sent by this client
    assert len(server.agents) == result["requests"] + 5
    assert set(server.agents) == {ONE_THREAD_AGENT}


def test_one_thread_client_counts_other_status_codes_as_errors(status_server):
    _, base = status_server(fail_every=4)
    result = poll_one_thread(f"{base}/status/abc", pollers=2, interval=0.05, seconds=0.6)
    # answers 4, 8, 12 on each connection are 503s; the first (the warm-up) is not measured
    assert result["requests"] >= 16
    assert set(result["error_kinds"]) == {"503"}
    assert result["requests"] // 4 - 2 <= result["errors"] <= result["requests"] // 3 + 1


def test_one_thread_client_refuses_a_server_that_cannot_answer_the_warm_up(status_server):
    _, base = status_server()
    with pytest.raises(RuntimeError, match="warm-up"):
        poll_one_thread(f"{base}/missing", pollers=2, interval=0.05, seconds=0.3)


def test_one_thread_client_replaces_connections_the_server_closes(status_server):
    _, base = status_server(close_every=3)
    result = poll_one_thread(f"{base}/status/abc", pollers=3, interval=0.05, seconds=1.0)
    assert result["error_kinds"].get("closed", 0) >= 3  # each connection closed at least once
    # the polls themselves still happen and are answered
    assert result["requests"] >= 40


def test_threaded_client_sees_the_same_server(status_server):
    server, base = status_server()
    result = poll_threads(f"{base}/status/abc", pollers=4, interval=0.05, seconds=0.5)
    assert 25 <= result["requests"] <= 45 and result["errors"] == 0
    assert set(server.agents) == {THREADED_AGENT}


def test_windows_taken_in_turns_combine_into_one_summary(status_server):
    _, base = status_server(fail_every=5)
    windows = [poll_one_thread(f"{base}/status/abc", pollers=2, interval=0.05, seconds=0.3, keep_latencies=True),
               poll_threads(f"{base}/status/abc", pollers=2, interval=0.05, seconds=0.3, keep_latencies=True)]
    counts = [len(window["latencies_ms"]) for window in windows]
    errors = sum(window["errors"] for window in windows)
    combined = combine_windows(windows)
    assert combined["requests"] == sum(counts) and combined["windows"] == 2
    assert combined["errors"] == errors > 0 and set(combined["error_kinds"]) == {"503"}
    assert "latencies_ms" not in combined and all("latencies_ms" not in window for window in windows)
