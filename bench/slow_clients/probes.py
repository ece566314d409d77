"""The probes of the slow-clients experiment: a GET on a new connection every `every` seconds, and their summary."""
from __future__ import annotations

import concurrent.futures
import socket
import time
from typing import Dict, List

from bench.pollers import percentile


def probe(port: int, path: str, timeout: float) -> dict:
    """One GET on a new connection; latency to the whole answer, or the failure."""
    started = time.monotonic()
    deadline = started + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout()
                sock.settimeout(remaining)
                piece = sock.recv(65536)
                if not piece:
                    break
                data += piece
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
        return {"path": path, "ms": (time.monotonic() - started) * 1000, "status": status,
                "error": None if status == 200 else f"status {status}"}
    except socket.timeout:
        return {"path": path, "ms": None, "status": None, "error": "no answer in time"}
    except OSError as error:
        return {"path": path, "ms": None, "status": None, "error": type(error).__name__}


def probe_window(port: int, paths: List[str], seconds: float, every: float, timeout: float) -> List[dict]:
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=int(timeout / every) + 8) as pool:
        futures = []
        began = time.monotonic()
        index = 0
        while time.monotonic() - began < seconds:
            futures.append(pool.submit(probe, port, paths[index % len(paths)], timeout))
            index += 1
            time.sleep(max(began + index * every - time.monotonic(), 0))
        for future in futures:
            results.append(future.result())
    return results


def latency_summary(results: List[dict], timeout: float) -> dict:
    answered = [r["ms"] for r in results if r["ms"] is not None]
    ok = [r["ms"] for r in results if r["error"] is None]
    counted = [r["ms"] if r["ms"] is not None else timeout * 1000 for r in results]
    errors: Dict[str, int] = {}
    for r in results:
        if r["error"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    return {
        "requests": len(results),
        "answered_200": len(ok),
        "failures": len(results) - len(ok),
        "failure_kinds": errors,
        "p50_ms": percentile(answered, 50) if answered else None,
        "p99_ms": percentile(answered, 99) if answered else None,
        "max_ms": max(answered) if answered else None,
        # failures counted as the probe timeout: what a client waiting for an answer sees
        "p99_ms_failures_as_timeout": percentile(counted, 99) if counted else None,
    }
