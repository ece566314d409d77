"""A model worker fetches the upload from the API node that keeps it, over HTTP (no shared filesystem), and sends
back the thumbnails and reel it made, which that node serves.

The route is the API node's internal one (`web/internal_api.py`), which
answers only a request carrying the cluster's WORKER_TOKEN. The video is
streamed to the worker's scratch directory, never held in memory. An API
node that is restarting is waited for (`patience_seconds`); a node that
answers 404 no longer has the video.
"""
from __future__ import annotations

import http.client
import os
import shutil
import time
import urllib.error
import urllib.request
from typing import Callable, Sequence
from urllib.parse import quote

from video_analysis.cancellation import CancelToken, Cancelled

INTERNAL_PREFIX = "/internal/v1"
_CHUNK = 1024 * 1024


class VideoGone(Exception):
    """The API node answered that it no longer has the video; the message says so for a person."""


class NodeUnreachable(Exception):
    """The API node keeping the video did not answer within the patience."""


def video_url(node: str, session_id: str) -> str:
    return f"{node.rstrip('/')}{INTERNAL_PREFIX}/videos/{quote(session_id)}"


def fetch_video(node: str, session_id: str, token: str, directory: str, cancel: CancelToken,
                patience_seconds: float = 120.0) -> str:
    """Stream the session's upload into `directory`; returns the file's path."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, "video")
    request = urllib.request.Request(video_url(node, session_id), headers={"Authorization": f"Bearer {token}"})

    def fetch() -> None:
        with urllib.request.urlopen(request, timeout=30) as response, open(path, "wb") as out:
            expected = response.headers.get("Content-Length")
            shutil.copyfileobj(response, out, _CHUNK)
        if expected is not None and os.path.getsize(path) != int(expected):
            raise http.client.IncompleteRead(b"", int(expected) - os.path.getsize(path))

    _patiently(fetch, node, "give the video to", "keeps the video", cancel, patience_seconds,
               "Cancelled while the video was being fetched.")
    return path


def send_outputs(node: str, session_id: str, token: str, directory: str, names: Sequence[str],
                 cancel: CancelToken, patience_seconds: float = 120.0) -> None:
    """Stream the job's outputs (`names`, relative to `directory`: thumbnails/0.jpg, reel.mp4) to the API node
    that keeps the session, which serves them from there."""
    for name in names:
        path = os.path.join(directory, name)

        def send() -> None:
            with open(path, "rb") as body:
                request = urllib.request.Request(
                    f"{video_url(node, session_id)}/outputs/{quote(name)}", data=body, method="PUT",
                    headers={"Authorization": f"Bearer {token}", "Content-Length": str(os.path.getsize(path)),
                             "Content-Type": "application/octet-stream"})
                with urllib.request.urlopen(request, timeout=30) as response:
                    response.read()

        _patiently(send, node, "take the outputs from", "keeps the session", cancel, patience_seconds,
                   "Cancelled while the outputs were being sent.")


def _patiently(transfer: Callable[[], None], node: str, refused: str, keeps: str, cancel: CancelToken,
               patience_seconds: float, cancelled: str) -> None:
    """Run `transfer` until it succeeds, trying again every 2 s while the node does not answer or answers 5xx
    (it may be restarting), for at most `patience_seconds`; its 404 is VideoGone."""
    deadline = time.monotonic() + patience_seconds
    while True:
        if cancel.cancelled:
            raise Cancelled(cancelled)
        try:
            transfer()
            return
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise VideoGone("The API server that received this upload no longer has the video (it was cleaned "
                                "up, or that server's DATA_DIR was emptied), so the analysis cannot go on. Upload "
                                "the video again.") from None
            problem = f"it answered {error.code}"
            if error.code < 500:
                raise NodeUnreachable(f"The API server {node} refused to {refused} this worker ({problem}).")
        except (OSError, http.client.HTTPException) as error:
            problem = str(error) or type(error).__name__
        if time.monotonic() >= deadline:
            raise NodeUnreachable(f"The API server {node} that {keeps} could not be reached for "
                                  f"{patience_seconds:.0f} s ({problem}).")
        cancel.wait(2.0)
