"""The legacy synchronous routes, `POST /analyze/highlights` and `POST /analyze/workout`, as one blueprint.

A legacy request is a job like any other, which the request waits for. Its
files are deleted once it has answered (a legacy client has no id to clean up
with), and a client that hangs up cancels its job. Every error carries
`"success": false`, which legacy clients test.
"""
from __future__ import annotations

import errno
import logging
import select
import socket
from typing import Optional

from flask import Blueprint, jsonify, request

from video_analysis.engine.parameters import AnalysisKind
from video_analysis.jobs.sessions import ProcessingStatus
from video_analysis.web.errors import ApiError, register_error_handlers
from video_analysis.web.intake import accept_upload
from video_analysis.web.services import Services, services

log = logging.getLogger(__name__)

legacy = Blueprint("legacy", __name__, url_prefix="/analyze")
register_error_handlers(legacy, success=False)

# How a failed legacy job is answered, by what failed. "parameters": prompts too long for the model's context,
# found by the job when the request came while the model loaded (otherwise the upload's own 400).
_FAILURE_STATUS = {"video": 422, "model": 503, "internal": 500, "parameters": 400}
_FAILURE_TITLE = {"parameters": "Invalid parameter"}
# The name of the result in the old answer, by analysis.
_RESULT_NAME = {AnalysisKind.HIGHLIGHTS: "highlights", AnalysisKind.WORKOUT: "workout_timestamps"}
_POLL_SECONDS = 0.25
# recv errors that mean the peer is gone; any other failure of the check says nothing about the client.
_HUNG_UP = (errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ENOTCONN, errno.ESHUTDOWN)


@legacy.post("/highlights")
def highlights():
    return _analyze(AnalysisKind.HIGHLIGHTS)


@legacy.post("/workout")
def workout():
    return _analyze(AnalysisKind.WORKOUT)


def _analyze(kind: AnalysisKind):
    """Each waiting request holds a request thread, so at most MAX_LEGACY_REQUESTS are served at once
    (half the threads); the rest get 503 at once, nothing stored."""
    svc = services()
    if not svc.legacy_requests.acquire(blocking=False):
        limit = svc.config.MAX_LEGACY_REQUESTS
        raise ApiError(503, f"The server is already running {limit} synchronous analyses, its limit; send this one "
                            "again in a minute, or use the asynchronous API (POST /api/v1/video/upload), "
                            "which has no such limit.", "Too many synchronous analyses", headers={"Retry-After": "60"})
    try:
        return _wait_for_analysis(svc, kind)
    finally:
        svc.legacy_requests.release()


def _wait_for_analysis(svc: Services, kind: AnalysisKind):
    session = accept_upload(kind, legacy=True)
    sid = session.session_id
    try:
        while not svc.jobs.wait(sid, _POLL_SECONDS):
            if _client_disconnected():
                log.info("Legacy request %s abandoned; cancelling its job", sid)
                svc.jobs.cancel(sid, "The client went away")
                svc.jobs.wait(sid, 30)
                raise ApiError(503, "The analysis was stopped because the request was abandoned; send it again.")
        state = svc.sessions.get(sid)
    finally:
        svc.jobs.cancel(sid)
        try:
            svc.storage.remove(svc.sessions.delete(sid).directory)
        except KeyError:
            pass
    if state.status == ProcessingStatus.COMPLETED:
        return jsonify({"success": True, "analysis_type": _RESULT_NAME[kind], "data": state.result})
    if state.status == ProcessingStatus.CANCELLED:
        raise ApiError(503, "The analysis was cancelled because the server is shutting down; send it again later.",
                       headers={"Retry-After": "30"})
    kind_of_failure = state.error_kind or "internal"
    raise ApiError(_FAILURE_STATUS.get(kind_of_failure, 500), state.error or "The analysis failed.",
                   _FAILURE_TITLE.get(kind_of_failure, "Analysis failed"))


def _client_disconnected() -> bool:
    """Whether the client of this request has hung up (seen under gunicorn; unknown elsewhere).

    poll(), unlike select(), works at any descriptor number (select raises
    past 1023). A failure of the check itself is logged and taken as "still
    there": wrongly cancelling a client's job is worse than noticing late.
    """
    sock: Optional[socket.socket] = request.environ.get("gunicorn.socket")
    if sock is None:
        return False
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI)
        events = poller.poll(0)
    except (OSError, ValueError):
        log.warning("Could not check whether a legacy client is still connected", exc_info=True)
        return False
    if not events:
        return False
    if events[0][1] & select.POLLHUP:
        return True
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno in _HUNG_UP:
            return True
        log.warning("Could not check whether a legacy client is still connected", exc_info=True)
        return False
