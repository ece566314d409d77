"""Under gunicorn, a legacy client that hangs up does not leave its job running."""
import os
import socket
import subprocess
import sys
import time

import requests

from tools.synthetic_video import write_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _multipart(path: str, boundary: str, **fields) -> bytes:
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
             for k, v in fields.items()]
    with open(path, "rb") as handle:
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"long.mp4\"\r\n"
                     "Content-Type: video/mp4\r\n\r\n".encode() + handle.read() + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def test_a_disconnected_legacy_client_cancels_its_job(tiny_model_dir, tmp_path):
    port, data_dir = _free_port(), tmp_path / "data"
    env = dict(os.environ, MODEL=tiny_model_dir, DATA_DIR=str(data_dir), PORT=str(port), LOG_LEVEL="warning")
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "gunicorn"), "--config",
                               "gunicorn.conf.py", "app:create_app()"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/health", timeout=2).json()["model"]["loaded"]:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        video = write_video(str(tmp_path / "long.mp4"), duration=240, fps=2, size=(96, 72))
        body = _multipart(video, "xyzboundary", segment_duration="1")
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"POST /analyze/highlights HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Type: multipart/form-data; boundary=xyzboundary\r\n"
                       + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        deadline = time.monotonic() + 30
        while requests.get(f"{base}/health", timeout=5).json()["queue"]["processing"] == 0:
            assert time.monotonic() < deadline, "the legacy job never started"
            time.sleep(0.05)
        client.close()
        hung_up = time.monotonic()
        # 240 one-second segments would take far longer than this to run out by themselves.
        while requests.get(f"{base}/health", timeout=5).json()["queue"]["processing"] != 0:
            assert time.monotonic() - hung_up < 5, "the job kept running after its client left"
            time.sleep(0.05)
        deadline = time.monotonic() + 5
        while os.listdir(data_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.listdir(data_dir) == []
    finally:
        server.terminate()
        server.wait(20)
