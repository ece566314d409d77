"""Routes only a cluster's model workers may use: the uploads this API node keeps, fetched by the worker running
the job (cluster/video_fetch.py).

Each request must carry `Authorization: Bearer <WORKER_TOKEN>`. Without the
token, with a wrong one, or outside cluster mode, the answer is the same 404
as for an address that does not exist: nothing says the route is here.
"""
from __future__ import annotations

import os
import re

from flask import Blueprint, request, send_file
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from video_analysis.cluster.video_fetch import INTERNAL_PREFIX
from video_analysis.cluster.worker_token import token_matches
from video_analysis.jobs.job_runner import REEL_FILE, THUMBNAILS_DIR
from video_analysis.jobs.sessions import SessionNotFound, SessionState
from video_analysis.web.errors import ApiError, http_problem, register_error_handlers
from video_analysis.web.services import services

internal_api = Blueprint("internal_api", __name__, url_prefix=INTERNAL_PREFIX)
register_error_handlers(internal_api)


@internal_api.errorhandler(HTTPException)  # in place of the one register_error_handlers gave it
def _nothing_here(error: HTTPException):
    """Routing answers 405 to another method before `_workers_only` runs, and a 405 says the route exists."""
    return http_problem(NotFound() if isinstance(error, MethodNotAllowed) else error, {})


@internal_api.before_request
def _workers_only():
    config = services().config
    if not config.cluster or not token_matches(config.WORKER_TOKEN, request.headers.get("Authorization")):
        raise NotFound()


# What a worker may send back: a job's outputs (jobs/job_runner.py names them), nothing else.
_OUTPUT_NAME = re.compile(rf"^(?:{THUMBNAILS_DIR}/\d{{1,6}}\.jpg|{re.escape(REEL_FILE)})$", re.ASCII)
# Not MAX_UPLOAD_MB, which bounds what clients send: a reel of MAX_REEL_SECONDS may be larger than its upload. A reel
# is at most ~1 MB a second (video/reel.py's rate cap), so 4 GiB is past any the service makes.
_MOST_OUTPUT_BYTES = 4 << 30
_CHUNK = 1024 * 1024


def _kept_here(session_id: str) -> SessionState:
    """The session whose upload this node keeps; 404 when another node keeps it, or it is gone."""
    svc = services()
    try:
        state = svc.sessions.get(session_id, with_result=False)
    except SessionNotFound:
        raise NotFound() from None
    path = state.video_path
    if (state.node != svc.config.api_url or not path or not os.path.isfile(path)
            or os.path.dirname(os.path.dirname(os.path.abspath(path))) != svc.storage.root):
        raise NotFound()
    return state


@internal_api.get("/videos/<session_id>")
def video(session_id: str):
    state = _kept_here(session_id)
    return send_file(state.video_path, mimetype="application/octet-stream", conditional=False, etag=False,
                     max_age=0)


@internal_api.put("/videos/<session_id>/outputs/<path:name>")
def output(session_id: str, name: str):
    """A thumbnail or the reel a worker made, kept beside the upload (written whole, then renamed into place)."""
    if not _OUTPUT_NAME.match(name):
        raise NotFound()
    state = _kept_here(session_id)
    request.max_content_length = _MOST_OUTPUT_BYTES
    length = request.content_length
    if length is None:
        raise ApiError(411, "Send the file with a Content-Length header (not chunked), so that the server knows "
                            "when it has all of it.", "Length required")
    if length > _MOST_OUTPUT_BYTES:
        raise ApiError(413, f"An output may be at most {_MOST_OUTPUT_BYTES >> 30} GiB; this one says {length} bytes.")
    directory = os.path.dirname(os.path.abspath(state.video_path))
    target = os.path.join(directory, name)
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    partial = target + ".partial"
    written = 0
    try:
        with open(partial, "wb") as out:
            while written < length:
                chunk = request.stream.read(min(_CHUNK, length - written))
                if not chunk:
                    raise ApiError(400, f"The body ended after {written} of the {length} bytes its Content-Length "
                                        "announced; send the whole file again.", "Incomplete body")
                out.write(chunk)
                written += len(chunk)
        before = os.path.getsize(target) if os.path.isfile(target) else 0
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    svc = services()
    svc.storage.count_written(directory, written - before)
    try:
        svc.sessions.get(session_id, with_result=False)
    except SessionNotFound:
        svc.storage.remove(directory)  # cleaned up meanwhile: nothing of it may stay
    return "", 204
