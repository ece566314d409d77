"""Raw HTTP over a socket, for requests the werkzeug test client cannot express.

A lying Content-Length, a chunked body, a client that stops sending, file
names that are not UTF-8: `request_head` and `multipart` build the bytes,
`raw_http` sends them and reads the answer into a `RawResponse`.
"""
from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.request
from typing import Dict, Sequence


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


def get_json(url: str, timeout: float = 5.0):
    """(status, decoded body) of a GET on a new connection."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, json.load(response)
