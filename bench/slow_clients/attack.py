"""The hostile side of the slow-clients experiment: stalled, silent, trickling and dripping connections.

One thread drives them all with a selector. A stalled or silent connection
(or a dripping one) that the server closes is opened again at once, so the
pressure stays on; how long the server let each live is recorded (the
header timeout at work), with the first line of whatever it answered.
"""
from __future__ import annotations

import selectors
import socket
import threading
import time
from typing import Dict, List, Optional

from bench.pollers import percentile

STALLED_HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\n"


class Attack:
    """Stalled, silent and trickling connections, driven from one thread; closed ones are reopened."""

    def __init__(self, port: int, stalled: int, silent: int, trickle: int, drip: int = 0,
                 trickle_bytes: int = 64 * 1024):
        self.port = port
        self.counts = {"stalled": stalled, "silent": silent, "trickle": trickle, "drip": drip}
        self.trickle_bytes = trickle_bytes
        self.selector = selectors.DefaultSelector()
        self.stop_event = threading.Event()
        self.lifetimes: Dict[str, List[float]] = {kind: [] for kind in self.counts}
        self.opened: Dict[str, int] = {kind: 0 for kind in self.counts}
        self.open_errors: Dict[str, int] = {kind: 0 for kind in self.counts}
        self.trickled = 0
        self.answers: Dict[str, Dict[str, int]] = {kind: {} for kind in self.counts}  # first line of what came back
        self.conns: Dict[socket.socket, dict] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, kind: str) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            self.open_errors[kind] += 1
            return
        self.opened[kind] += 1
        if kind == "stalled":
            sock.sendall(STALLED_HEAD)
        elif kind == "drip":
            sock.sendall(STALLED_HEAD + b"X-Drip: ")
        elif kind == "trickle":
            boundary = "slowclient"
            head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"slow.mp4\"\r\n"
                    f"Content-Type: video/mp4\r\n\r\n").encode()
            length = len(head) + self.trickle_bytes + len(f"\r\n--{boundary}--\r\n")
            sock.sendall((f"POST /api/v1/video/upload HTTP/1.1\r\nHost: x\r\n"
                          f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                          f"Content-Length: {length}\r\n\r\n").encode() + head)
        sock.setblocking(False)
        self.conns[sock] = {"kind": kind, "opened": time.monotonic(), "sent": 0}
        self.selector.register(sock, selectors.EVENT_READ)

    def _closed(self, sock: socket.socket, reopen: bool) -> None:
        info = self.conns.pop(sock)
        self.lifetimes[info["kind"]].append(time.monotonic() - info["opened"])
        self.selector.unregister(sock)
        sock.close()
        if reopen and not self.stop_event.is_set():
            self._open(info["kind"])

    def start(self) -> "Attack":
        for kind, count in self.counts.items():
            for _ in range(count):
                self._open(kind)
        self.started = time.monotonic()
        self.thread.start()
        return self

    def _run(self) -> None:
        next_trickle = time.monotonic() + 1.0
        while not self.stop_event.is_set():
            for key, _ in self.selector.select(0.05):
                sock = key.fileobj
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    line = data.split(b"\r\n", 1)[0].decode("latin-1")[:60]
                    kind_answers = self.answers[self.conns[sock]["kind"]]
                    kind_answers[line] = kind_answers.get(line, 0) + 1
                # Closed, or answered (the server is done with it). A trickling upload the server answered
                # or dropped is not reopened: it shows in the counts.
                self._closed(sock, reopen=self.conns[sock]["kind"] != "trickle")
            if time.monotonic() >= next_trickle:
                next_trickle += 1.0
                for sock, info in list(self.conns.items()):
                    try:
                        if info["kind"] == "trickle" and info["sent"] < self.trickle_bytes:
                            sock.send(b"\0" * 1024)
                            info["sent"] += 1024
                            self.trickled += 1024
                        elif info["kind"] == "drip":
                            sock.send(b"a")  # a header that never ends, one byte a second
                    except OSError:
                        self._closed(sock, reopen=info["kind"] == "drip")

    def finish(self) -> dict:
        self.stop_event.set()
        self.thread.join()
        now = time.monotonic()
        still_open = {kind: 0 for kind in self.counts}
        open_ages = {kind: [] for kind in self.counts}
        for sock, info in list(self.conns.items()):
            still_open[info["kind"]] += 1
            open_ages[info["kind"]].append(now - info["opened"])
            self.selector.unregister(sock)
            sock.close()
        self.selector.close()

        def summary(values: List[float]) -> Optional[dict]:
            return {"n": len(values), "min_s": min(values), "median_s": percentile(values, 50),
                    "max_s": max(values)} if values else None

        return {
            "seconds": now - self.started,
            "opened": self.opened,
            "open_errors": self.open_errors,
            "closed_by_server": {kind: summary(values) for kind, values in self.lifetimes.items()},
            "still_open_at_end": still_open,
            "oldest_open_s": {kind: max(ages) if ages else None for kind, ages in open_ages.items()},
            "trickle_bytes_sent": self.trickled,
            "answers": self.answers,
        }
