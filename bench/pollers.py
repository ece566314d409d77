"""Status pollers for P3: many keep-alive clients, each GETting one URL at a fixed interval.

Two clients with the same pattern (each connection polls every `interval`
at a random phase, and answers one warm-up request before the clock starts;
a poller keeps its connection, and the first request on a new one takes
gunicorn's slower accept path):

- `poll_one_thread` (what P3 reports): one thread, non-blocking sockets and
  a selector, raw HTTP/1.1. About 0.1 ms of client CPU per request on
  loopback, so on a machine whose cores the job keeps busy the figure is
  mostly the server's latency plus loopback, not the client's own waiting.
- `poll_threads` (reported beside it, `*_threaded_client`): one Python thread
  and one `requests.Session` per poller, as P3 was measured before; about
  0.8 ms of client CPU per request (it also parses the JSON). Each answer
  must also wait for the bench process's GIL and a core: with 50 such
  threads on a 2-core machine next to a running job, the tail is several
  milliseconds longer (bench/README.md, P3).

In both, an answer other than 200 is timed and counted as an error; a poll
that gets no answer is only counted as an error.
"""
from __future__ import annotations

import random
import selectors
import socket
import threading
import time
from typing import List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import requests

# Let a server's access log tell the two clients' requests apart (bench/experiment_p3.py --server-times).
ONE_THREAD_AGENT = "bench-one-thread-poller"
THREADED_AGENT = "bench-threaded-poller"


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(latencies_ms: List[float], errors: List[str], elapsed: float, keep_latencies: bool = False) -> dict:
    summary = {
        "p50_ms": percentile(latencies_ms, 50),
        "p90_ms": percentile(latencies_ms, 90),
        "p99_ms": percentile(latencies_ms, 99),
        "max_ms": max(latencies_ms) if latencies_ms else float("nan"),
        "requests": len(latencies_ms),
        "requests_per_second": len(latencies_ms) / elapsed if elapsed > 0 else 0.0,
        "seconds": elapsed,
        "errors": len(errors),
        "error_kinds": {kind: errors.count(kind) for kind in sorted(set(errors))},
    }
    if keep_latencies:
        summary["latencies_ms"] = latencies_ms
    return summary


def combine_windows(windows: List[dict]) -> dict:
    """One summary of several windows polled with `keep_latencies=True` (their latency lists are dropped)."""
    latencies = [value for window in windows for value in window.pop("latencies_ms")]
    errors = [kind for window in windows for kind, count in window["error_kinds"].items() for _ in range(count)]
    return dict(latency_summary(latencies, errors, sum(window["seconds"] for window in windows)),
                windows=len(windows))


# -- one thread ------------------------------------------------------------------
class _ResponseError(Exception):
    """A response this client cannot delimit or did not expect; the connection is dropped."""


class _Connection:
    """One poller: its socket (None while down), what it has received, when it sent and when it sends next."""

    def __init__(self, address: Tuple[str, int], request: bytes):
        self.address, self.request = address, request
        self.sock: Optional[socket.socket] = None
        self.received = b""
        self.sent_at: Optional[float] = None
        self.next_at = 0.0

    def connect(self, timeout: float) -> None:
        self.sock = socket.create_connection(self.address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

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
        try:
            status, length = int(lines[0].split()[1]), int(headers["content-length"])
        except (IndexError, KeyError, ValueError):
            raise _ResponseError("unreadable response") from None
        if len(body) < length:
            return None
        if len(body) > length:
            raise _ResponseError("bytes after the response")
        return status

    def drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.sent_at = None, None


def _answer(connection: _Connection) -> int:
    """Send one request and block until its answer is in (warm-up, before the clock starts)."""
    connection.send()
    status = None
    while status is None:
        status = connection.feed(connection.sock.recv(65536))
    connection.sent_at = None
    return status


def poll_one_thread(url: str, pollers: int, interval: float, seconds: float, keep_latencies: bool = False) -> dict:
    """`pollers` keep-alive connections driven from this thread; each GETs `url` every `interval` s (random phase).

    A connection the server closes, or whose answer cannot be read, counts
    one error and is opened again when its next poll is due (that poll then
    includes the server's accept path); one that cannot be opened counts an
    error per poll it misses. The warm-ups must succeed: a server that cannot
    answer them is not worth measuring.
    """
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    request = (f"GET {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
               f"Host: {parts.netloc}\r\nUser-Agent: {ONE_THREAD_AGENT}\r\nAccept: application/json\r\n\r\n").encode()
    selector = selectors.DefaultSelector()
    connections = [_Connection(address, request) for _ in range(pollers)]
    for connection in connections:
        try:
            connection.connect(timeout=10)
            status = _answer(connection)
        except (OSError, _ResponseError) as error:
            raise RuntimeError(f"{url} did not answer the warm-up request: {error}") from None
        if status != 200:
            raise RuntimeError(f"{url} answered the warm-up request with {status}, not 200")
    for connection in connections:
        connection.sock.setblocking(False)
        selector.register(connection.sock, selectors.EVENT_READ, connection)
    latencies: List[float] = []
    errors: List[str] = []

    def fail(connection: _Connection, reason: str) -> None:
        errors.append(reason)
        if connection.sent_at is not None:
            connection.next_at += interval  # that poll is lost; the next comes at its own time
        if connection.sock is not None:
            selector.unregister(connection.sock)
        connection.drop()

    def poll(connection: _Connection) -> None:
        reopened = connection.sock is None
        if reopened:
            try:
                connection.connect(timeout=1.0)
            except OSError as error:
                errors.append(type(error).__name__)
                connection.next_at += interval
                return
            connection.sock.setblocking(False)
            selector.register(connection.sock, selectors.EVENT_READ, connection)
        try:
            connection.send()
        except OSError as error:
            connection.sent_at = None  # nothing went out
            fail(connection, type(error).__name__)
            if reopened:
                connection.next_at += interval  # a fresh connection failed too: wait for the next poll
            # else: closed by the server while idle; the next turn reopens it for this same poll

    began = time.perf_counter()
    stop_at = began + seconds
    drain_until = stop_at + 10.0  # answers still outstanding when the window closes
    for connection in connections:
        connection.next_at = began + random.uniform(0, interval)
    while True:
        now = time.perf_counter()
        waiting = [c for c in connections if c.sent_at is not None]
        if (now >= stop_at and not waiting) or now >= drain_until:
            break
        if now < stop_at:
            for connection in connections:
                if connection.sent_at is None and connection.next_at <= now:
                    poll(connection)
            next_due = min((c.next_at for c in connections if c.sent_at is None), default=stop_at)
            timeout = min(next_due, stop_at) - time.perf_counter()
        else:
            timeout = 0.05  # only answers to wait for
        for key, _ in selector.select(min(max(timeout, 0.0), 0.05)):
            connection = key.data
            try:
                status = connection.feed(connection.sock.recv(65536))
            except BlockingIOError:
                continue
            except OSError as error:
                fail(connection, type(error).__name__)
                continue
            except _ResponseError as error:
                fail(connection, str(error))
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
        connection.drop()
    return latency_summary(latencies, errors, elapsed, keep_latencies)


# -- a thread per poller ---------------------------------------------------------
def poll_threads(url: str, pollers: int, interval: float, seconds: float, keep_latencies: bool = False) -> dict:
    """`pollers` threads, each with its own keep-alive `requests.Session`, GET `url` every `interval` s (random phase)."""
    latencies: List[List[float]] = [[] for _ in range(pollers)]
    errors: List[str] = []
    start = threading.Barrier(pollers + 1)
    stop_at = [0.0]

    def poller(index: int) -> None:
        with requests.Session() as session:
            session.headers["User-Agent"] = THREADED_AGENT
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
                    latencies[index].append(time.perf_counter() - began)
                except requests.RequestException as error:
                    errors.append(type(error).__name__)
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
    return latency_summary([value * 1000 for values in latencies for value in values], errors, elapsed,
                           keep_latencies)

