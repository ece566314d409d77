"""P4 big upload: the worker's RSS growth while it receives 1 GiB (quick: 256 MiB), and the upload's rate."""
from __future__ import annotations

import http.client
import json
import time
import uuid

from bench.settings import MIB
from bench.system import RssSampler, median_rss_mib, reset_peak_rss, rss_kib
from tools.service_process import ServiceProcess


def _send_zeros_upload(port: int, size: int) -> tuple:
    """POST a multipart upload of `size` zero bytes, streamed from one 1 MiB buffer."""
    boundary = "bench" + uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"zeros.mp4\"\r\n"
            f"Content-Type: video/mp4\r\n\r\n").encode()
    tail = (f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"analysis_type\"\r\n\r\nhighlights"
            f"\r\n--{boundary}--\r\n").encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    connection.putrequest("POST", "/api/v1/video/upload")
    connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    connection.putheader("Content-Length", str(len(head) + size + len(tail)))
    connection.endheaders()
    connection.send(head)
    chunk = bytes(MIB)
    sent = 0
    while sent < size:
        piece = chunk if size - sent >= MIB else chunk[: size - sent]
        connection.send(piece)
        sent += len(piece)
    connection.send(tail)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


def p4_big_upload(server: ServiceProcess, size: int) -> dict:
    """Worker RSS while it receives `size` bytes of zeros (stored, then refused with 415: not a video)."""
    pid = server.worker_pid()
    baseline = median_rss_mib(pid, 1.0)
    peak_reset = reset_peak_rss(pid)
    with RssSampler(pid) as sampler:
        started = time.perf_counter()
        code, body = _send_zeros_upload(server.port, size)
        elapsed = time.perf_counter() - started
    peak_sampled = max(sampler.samples) / 1024
    peak_hwm = rss_kib(pid, "VmHWM") / 1024 if peak_reset else None
    peak = max(peak_sampled, peak_hwm or 0)
    after = median_rss_mib(pid, 0.5)
    return {
        "rss_growth_mib": peak - baseline,
        "mb_per_s": size / MIB / elapsed,
        "bytes": size,
        "seconds": elapsed,
        "http_status": code,
        "answer": json.loads(body).get("title") if body.startswith(b"{") else body[:100].decode("latin-1"),
        "baseline_rss_mib": baseline,
        "peak_rss_mib_sampled": peak_sampled,
        "peak_rss_mib_hwm": peak_hwm,
        "rss_after_mib": after,
        "samples": len(sampler.samples),
        "content": "zeros (a multipart upload named zeros.mp4: stored to DATA_DIR, probed, refused 415, deleted)",
    }
