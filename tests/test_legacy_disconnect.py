"""Under gunicorn, a legacy client that hangs up does not leave its job running."""
import os
import socket
import time

import requests

from tests.support.api import data_dir_entries
from tests.support.http import host_port, multipart, request_head
from tools.synthetic_video import write_video


def _processing(server) -> int:
    return requests.get(f"{server.base}/health", timeout=5).json()["queue"]["processing"]


def test_a_disconnected_legacy_client_cancels_its_job(start_service, tmp_path):
    server = start_service()
    video = write_video(str(tmp_path / "long.mp4"), duration=240, fps=2, size=(96, 72))
    with open(video, "rb") as handle:
        body = multipart([(b"segment_duration", None, b"1"), (b"video", b"long.mp4", handle.read())])
    client = socket.create_connection(host_port(server.base))
    client.sendall(request_head("/analyze/highlights", len(body)) + body)
    deadline = time.monotonic() + 30
    while _processing(server) == 0:
        assert time.monotonic() < deadline, "the legacy job never started"
        time.sleep(0.05)
    client.close()
    hung_up = time.monotonic()
    # 240 one-second segments would take far longer than this to run out by themselves.
    while _processing(server) != 0:
        assert time.monotonic() - hung_up < 5, "the job kept running after its client left"
        time.sleep(0.05)
    deadline = time.monotonic() + 5
    while data_dir_entries(server.data_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert data_dir_entries(server.data_dir) == []
