"""Status pollers for P3: many keep-alive clients, each GETting one URL at a fixed interval.

Two clients that send the same requests at the same times:

- `poll_one_thread` (what P3 reports): one thread, non-blocking sockets and
  a selector, raw HTTP/1.1. It costs a few tens of µs of CPU per request, so
  on a machine whose cores the job keeps busy the figure is the server's
  latency plus loopback, not the client's own waiting.
- `poll_threads` (kept beside it, `*_threaded_client`): one Python thread and
  one `requests.Session` per poller, as P3 was measured before. Each
  response must also wait for the bench process's GIL and a core: with 50
  such threads on a 2-core machine next to a running job, that adds several
  milliseconds to the tail (bench/README.md, P3).

Both open every connection and answer one request on it before the clock
starts: a poller keeps its connection, and the first request on a new one
takes gunicorn's slower accept path.
"""
from __future__ import annotations

import random
import selectors
import socket
import threading
import time
from typing import List, Optional, Sequence
from urllib.parse import urlsplit

import requests

ONE_THREAD_AGENT = "bench-one-thread-poller"  # lets a server's access log tell its requests apart


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(latencies_ms: List[float], errors: List[str], elapsed: float) -> dict:
    return {
        "p50_ms": percentile(latencies_ms, 50),
        "p90_ms": percentile(latencies_ms, 90),
        "p99_ms": percentile(latencies_ms, 99),
        "max_ms": max(latencies_ms) if latencies_ms else float("nan"),
        "requests": len(latencies_ms),
        "requests_per_second": len(latencies_ms) / elapsed if elapsed > 0 else 0.0,
        "errors": len(errors),
        "error_kinds": {kind: errors.count(kind) for kind in sorted(set(errors))},
    }


# -- one thread ------------------------------------------------------------------
class _ResponseError(Exception):
    """A response this client cannot delimit or did not expect; the connection is replaced."""


class _Connection:
    """One poller: its socket, what it has received so far, when it sent and when it sends next."""

    def __init__(self, host: str, port: int, request: bytes):
        self.address, self.request = (host, port), request
        self.sock = socket.create_connection(self.address, timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.received = b""
        self.sent_at: Optional[float] = None
        self.next_at = 0.0

    def send(self) -> None:
        self.received = b""
        self.sent_at = time.perf_counter()
        self.sock.sendall(self.request)

    def feed(self, data: bytes) -> Optional[int]:
        """Add received bytes; the status code once the whole response is in, else None."""
        if not data:
            raise _ResponseError("closed")
        self.received += data
        head, found, body = self.received.partition(b"\r\n\r\n")
        if not found:
            return None
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip()
                   for name, _, value in (line.partition(":") for line in lines[1:])}
        if "content-length" not in headers:
            raise _ResponseError("no Content-Length")
        if len(body) < int(headers["content-length"]):
            return None
        if len(body) > int(headers["content-length"]):
            raise _ResponseError("bytes after the response")
        return int(lines[0].split()[1])

    def close(self) -> None:
        self.sock.close()


def _warm(connection: _Connection) -> None:
    connection.send()
    status = None
    while status is None:
        status = connection.feed(connection.sock.recv(65536))
    connection.sent_at = None


def poll_one_thread(url: str, pollers: int, interval: float, seconds: float) -> dict:
    """`pollers` keep-alive connections driven from this thread; each GETs `url` every `interval` s (random phase)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (f"GET {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
               f"Host: {parts.netloc}\r\nUser-Agent: {ONE_THREAD_AGENT}\r\nAccept: application/json\r\n\r\n").encode()
    connections = [_Connection(host, port, request) for _ in range(pollers)]
    for connection in connections:
        _warm(connection)
        connection.sock.setblocking(False)
    selector = selectors.DefaultSelector()
    for connection in connections:
        selector.register(connection.sock, selectors.EVENT_READ, connection)
    latencies: List[float] = []
    errors: List[str] = []
    began = time.perf_counter()
    stop_at = began + seconds
    for connection in connections:
        connection.next_at = began + random.uniform(0, interval)

    def replace(connection: _Connection, reason: str) -> _Connection:
        errors.append(reason)
        selector.unregister(connection.sock)
        connection.close()
        fresh = _Connection(host, port, request)
        _warm(fresh)
        fresh.sock.setblocking(False)
        fresh.next_at = connection.next_at
        selector.register(fresh.sock, selectors.EVENT_READ, fresh)
        return fresh

    drain_until = stop_at + 10.0  # answers still outstanding when the window closes
    while True:
        now = time.perf_counter()
        idle = [c for c in connections if c.sent_at is None]
        if (now >= stop_at and len(idle) == len(connections)) or now >= drain_until:
            break
        for connection in idle:
            if connection.next_at <= now < stop_at:
                connection.send()
        due = [c.next_at for c in connections if c.sent_at is None and c.next_at < stop_at]
        timeout = min(min(due, default=now + 0.05) - time.perf_counter(), 0.05)
        for key, _ in selector.select(max(timeout, 0.0)):
            connection = key.data
            try:
                status = connection.feed(connection.sock.recv(65536))
            except BlockingIOError:
                continue
            except (OSError, _ResponseError) as error:
                index = connections.index(connection)
                connections[index] = replace(connection, type(error).__name__ if isinstance(error, OSError)
                                             else str(error))
                continue
            if status is None:
                continue
            latencies.append((time.perf_counter() - connection.sent_at) * 1000)
            if status != 200:
                errors.append(str(status))
            connection.sent_at = None
            connection.next_at += interval
    elapsed = time.perf_counter() - began
    errors.extend("no answer" for c in connections if c.sent_at is not None)
    selector.close()
    for connection in connections:
        connection.close()
    return latency_summary(latencies, errors, elapsed)


# -- a thread per poller ---------------------------------------------------------
def poll_threads(url: str, pollers: int, interval: float, seconds: float) -> dict:
    """`pollers` threads, each with its own keep-alive `requests.Session`, GET `url` every `interval` s (random phase)."""
    latencies: List[List[float]] = [[] for _ in range(pollers)]
    errors: List[str] = []
    start = threading.Barrier(pollers + 1)
    stop_at = [0.0]

    def poller(index: int) -> None:
        with requests.Session() as session:
            session.get(url, timeout=10)  # open the keep-alive connection before measuring
            start.wait()
            next_at = time.perf_counter() + random.uniform(0, interval)
            while True:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                if time.perf_counter() >= stop_at[0]:
                    return
                began = time.perf_counter()
                try:
                    response = session.get(url, timeout=10)
                    if response.status_code != 200:
                        errors.append(str(response.status_code))
                    else:
                        response.json()
                except requests.RequestException as error:
                    errors.append(type(error).__name__)
                latencies[index].append(time.perf_counter() - began)
                next_at += interval

    threads = [threading.Thread(target=poller, args=(i,), daemon=True) for i in range(pollers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return latency_summary([value * 1000 for values in latencies for value in values], errors, elapsed)

