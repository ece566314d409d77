"""What a test does through an app: upload a video, poll its status, look into DATA_DIR, serve it for real."""
from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Iterator, List

from video_analysis.config import STATE_DB_NAME
from video_analysis.web.services import EXTENSION_KEY

TERMINAL = ("completed", "failed", "cancelled")


def upload(client, video_path, url="/api/v1/video/upload", field="video", filename=None, headers=None, **fields):
    """POST a multipart upload with the test client; extra keyword arguments become form fields."""
    with open(video_path, "rb") as handle:
        data = {field: (handle, filename or os.path.basename(video_path)), **fields}
        return client.post(url, data=data, content_type="multipart/form-data", headers=headers)


def wait_for_status(client, session_id, statuses=TERMINAL, timeout=60.0) -> List[dict]:
    """Poll until the session reaches one of `statuses`; returns every status body seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/video/status/{session_id}").get_json()
        seen.append(body)
        if body["status"] in statuses:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"session {session_id} never reached {statuses}; last: {seen[-1] if seen else None}")


def data_dir_entries(data_dir: str) -> list:
    """What a DATA_DIR holds besides the state database (state.db and SQLite's files beside it)."""
    return sorted(name for name in os.listdir(data_dir) if not name.startswith(STATE_DB_NAME))


def stored_entries(app) -> list:
    """What DATA_DIR holds (one directory per live session)."""
    return app.extensions[EXTENSION_KEY].storage.entries()


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Serve `app` with a real HTTP server (werkzeug's, threaded) on a free loopback port; yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
