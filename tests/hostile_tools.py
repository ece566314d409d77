"""Helpers for the hostile-input, fault, security and load tests.

- damaged media: MP4s with the index in front ("faststart") cut part-way,
  MJPG AVIs with frames blanked out in the middle;
- frame bombs: MJPEG AVIs assembled from any JPEGs, and valid JPEGs of any
  size that are small files (one flat grey, never held as pixels);
- raw HTTP over a socket, for requests the werkzeug test client cannot
  express (a lying Content-Length, chunked bodies, file names that are not UTF-8);
- a real gunicorn (or any command) serving the app in a subprocess.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from typing import Dict, Iterable, List, Optional, Sequence

# The frame bombs live in tools/ (bench/experiment_frame_bombs.py makes them too).
from tools.frame_bombs import flat_jpeg, mjpeg_avi  # noqa: F401  (the tests import them from here)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- damaged media -------------------------------------------------------------------
def _atoms(data: bytes, start: int = 0, end: Optional[int] = None):
    end = len(data) if end is None else end
    position = start
    while position + 8 <= end:
        size, kind = struct.unpack(">I4s", data[position:position + 8])
        if size < 8:
            raise ValueError("unsupported MP4 atom size")
        yield kind, position, size
        position += size


_MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}


def _shift_chunk_offsets(moov: bytearray, start: int, end: int, delta: int) -> None:
    for kind, position, size in list(_atoms(moov, start, end)):
        if kind in _MP4_CONTAINERS:
            _shift_chunk_offsets(moov, position + 8, position + size, delta)
        elif kind == b"stco":
            (count,) = struct.unpack(">I", moov[position + 12:position + 16])
            for index in range(count):
                at = position + 16 + 4 * index
                (offset,) = struct.unpack(">I", moov[at:at + 4])
                struct.pack_into(">I", moov, at, offset + delta)
        elif kind == b"co64":
            raise ValueError("64-bit chunk offsets are not handled")


def faststart_mp4(source: str, target: str) -> int:
    """Copy an MP4 with its index (moov) moved in front of the frame data; returns the header's size.

    OpenCV's writer puts moov at the end, so cutting its files loses the
    index; a "faststart" file keeps a complete header when its frames are cut.
    """
    with open(source, "rb") as handle:
        data = handle.read()
    parts = {kind: data[position:position + size] for kind, position, size in _atoms(data)}
    moov = bytearray(parts[b"moov"])
    _shift_chunk_offsets(moov, 8, len(moov), len(moov))
    head = parts[b"ftyp"] + parts.get(b"free", b"") + bytes(moov)
    with open(target, "wb") as handle:
        handle.write(head + parts[b"mdat"])
    return len(head)


def cut_file(source: str, target: str, keep_bytes: int) -> str:
    with open(source, "rb") as handle:
        data = handle.read(keep_bytes)
    with open(target, "wb") as handle:
        handle.write(data)
    return target


def avi_frame_chunks(data: bytes) -> List[tuple]:
    """(offset, size) of every video frame chunk (`00dc`) in an AVI's movi list, in order."""
    position = data.find(b"movi") + 4
    chunks = []
    while position + 8 <= len(data):
        kind, size = data[position:position + 4], struct.unpack("<I", data[position + 4:position + 8])[0]
        if kind == b"idx1":
            break
        if kind == b"LIST":
            position += 12
            continue
        if kind.endswith(b"dc"):
            chunks.append((position, size))
        position += 8 + size + (size & 1)
    return chunks


def blank_avi_frames(source: str, target: str, frames: Iterable[int]) -> str:
    """Copy an MJPG AVI with the JPEG data of `frames` zeroed (headers and index intact).

    The file opens, its first and last frames decode, and the probe trusts
    its frame count; reading reaches the blank frames only part-way through.
    """
    with open(source, "rb") as handle:
        data = bytearray(handle.read())
    chunks = avi_frame_chunks(bytes(data))
    for frame in frames:
        offset, size = chunks[frame]
        data[offset + 8:offset + 8 + size] = bytes(size)
    with open(target, "wb") as handle:
        handle.write(data)
    return target


def declare_avi_frame_size(source: str, target: str, width: int, height: int) -> str:
    """Copy an MJPG AVI claiming frames of width x height in its headers and in every JPEG.

    The file stays small; a decoder believing it would allocate width x height
    pixels per frame.
    """
    with open(source, "rb") as handle:
        data = bytearray(handle.read())
    at = data.find(b"avih")
    struct.pack_into("<II", data, at + 8 + 32, width, height)  # dwWidth, dwHeight
    at = data.find(b"strf")
    struct.pack_into("<ii", data, at + 8 + 4, width, height)  # BITMAPINFOHEADER biWidth, biHeight
    for offset, size in avi_frame_chunks(bytes(data)):
        sof = data.find(b"\xff\xc0", offset + 8, offset + 8 + size)
        struct.pack_into(">HH", data, sof + 5, height, width)  # the JPEG's own frame size
    with open(target, "wb") as handle:
        handle.write(data)
    return target


# -- raw HTTP ---------------------------------------------------------------------------
class RawResponse:
    """Enough of werkzeug's test response for `assert_problem`."""

    def __init__(self, status: int, headers: Dict[str, str], body: bytes):
        self.status_code = status
        self.headers = headers
        self.data = body

    @property
    def mimetype(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip()

    def get_data(self, as_text: bool = False):
        return self.data.decode("utf-8", "replace") if as_text else self.data

    def get_json(self):
        return json.loads(self.data)


def host_port(base_url: str):
    host, port = base_url.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def raw_http(base_url: str, head: bytes, body: Sequence[bytes] = (), pause: float = 0.0,
             close_write: bool = False, timeout: float = 15.0) -> RawResponse:
    """Send `head` (request line and headers, ending in a blank line) and the `body` pieces; read the answer.

    `close_write` half-closes the connection after the body (a client that
    stops sending); a server that answers before reading everything may
    reset the connection, which counts as an answer already read.
    """
    connection = socket.create_connection(host_port(base_url), timeout=timeout)
    try:
        connection.sendall(head)
        for piece in body:
            try:
                connection.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered early and closed; read what it said
            if pause:
                time.sleep(pause)
        if close_write:
            connection.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(connection)
        response.begin()
        return RawResponse(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def multipart(parts: Sequence[tuple], boundary: bytes = b"hostile-boundary") -> bytes:
    """A multipart body from (name, filename or None, bytes content) triples; names and file names are raw bytes."""
    out = []
    for name, filename, content in parts:
        disposition = b'Content-Disposition: form-data; name="' + name + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        out.append(b"--" + boundary + b"\r\n" + disposition + b"\r\n")
        if filename is not None:
            out.append(b"Content-Type: application/octet-stream\r\n")
        out.append(b"\r\n" + content + b"\r\n")
    out.append(b"--" + boundary + b"--\r\n")
    return b"".join(out)


def request_head(path: str, content_length, boundary: bytes = b"hostile-boundary", extra: bytes = b"") -> bytes:
    length = b"" if content_length is None else b"Content-Length: " + str(content_length).encode() + b"\r\n"
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n" + length + extra
            + b"Connection: close\r\n\r\n")


# -- a server in a subprocess ------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, json.load(response)


def _no_control_socket() -> List[str]:
    """gunicorn >= 25 opens a control socket at one fixed path per user, which parallel servers would fight over."""
    from gunicorn.config import KNOWN_SETTINGS

    return ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []


class ServerProcess:
    """The app served by a real gunicorn (`gunicorn.conf.py`), or by `python app.py`, on a loopback port."""

    def __init__(self, model_dir: str, data_dir: str, *, gunicorn: bool = True, env: Optional[dict] = None,
                 preexec_fn=None, log_path: Optional[str] = None, wrapper: Sequence[str] = ()):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        environment = dict(os.environ, MODEL=model_dir, DATA_DIR=data_dir, HOST="127.0.0.1", PORT=str(self.port),
                           PYTHONUNBUFFERED="1", LOG_LEVEL="warning")
        environment.update(env or {})
        if gunicorn:
            command = [os.path.join(os.path.dirname(sys.executable), "gunicorn"), "--config", "gunicorn.conf.py",
                       *_no_control_socket(), "app:create_app()"]
        else:
            command = [sys.executable, "app.py"]
        self.log_path = log_path or os.path.join(os.path.dirname(os.path.abspath(data_dir)), f"server-{self.port}.log")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([*wrapper, *command], cwd=REPO, env=environment, stdout=self._log,
                                        stderr=subprocess.STDOUT, preexec_fn=preexec_fn)

    def wait_ready(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode}:\n{self.log()}")
            try:
                status, body = get_json(self.base + "/health", timeout=2)
                if status == 200 and (body["model"]["loaded"] or body["status"] == "degraded"):
                    return body
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the server never became ready:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")[-4000:]

    def terminate(self, timeout: float = 15.0) -> float:
        """SIGTERM; returns the seconds until the process exited."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
