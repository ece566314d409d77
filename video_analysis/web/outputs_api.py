"""A finished analysis's thumbnails and reel over HTTP, and the links to them in its results.

The files are the job's (engine/outputs.py makes them in the session's
directory, jobs/job_runner.py says where). werkzeug serves them: ETags and
If-None-Match for both, Range requests (206, 416) for the reel, so a browser
can seek in it before it has all of it.
"""
from __future__ import annotations

import os
import re
from typing import Optional

from flask import Blueprint, request, send_file, url_for

from video_analysis.engine.outputs import FINDINGS, findings
from video_analysis.engine.parameters import AnalysisKind
from video_analysis.jobs.job_runner import REEL_FILE, THUMBNAILS_DIR
from video_analysis.jobs.sessions import ProcessingStatus, SessionState
from video_analysis.web.errors import ApiError, register_error_handlers
from video_analysis.web.session_lookup import public_session

outputs_api = Blueprint("outputs_api", __name__, url_prefix="/api/v1/video")
register_error_handlers(outputs_api)

# A session's outputs never change once made (a new analysis is a new session), so a browser keeps them a day;
# `private`: a shared cache has no business keeping someone's video.
_MAX_AGE_SECONDS = 86400
_ONE_BYTE_RANGE = re.compile(r"bytes=\s*(\d*)\s*-\s*(\d*)", re.ASCII)


def with_output_links(result: dict, state: SessionState) -> dict:
    """`result` as the results route shows it: each finding with `thumbnailUrl`, the result with `reelUrl`,
    `reelDuration` and `reelSize` (null when not made), and the engine's own notes of them left out."""
    shown = {key: value for key, value in result.items() if key not in ("reel", "reel_refused")}
    list_name = FINDINGS[AnalysisKind(state.analysis_type)][0]
    shown[list_name] = [
        {**{key: value for key, value in item.items() if key != "thumbnail"},
         "thumbnailUrl": url_for("outputs_api.thumbnail", session_id=state.session_id, n=n)
         if item.get("thumbnail") else None}
        for n, item in enumerate(result[list_name])
    ]
    reel = result.get("reel")
    shown["reelUrl"] = url_for("outputs_api.reel", session_id=state.session_id) if reel else None
    shown["reelDuration"] = reel["duration"] if reel else None
    shown["reelSize"] = reel["size"] if reel else None
    return shown


def _output_file(state: SessionState, *parts: str) -> Optional[str]:
    path = os.path.join(state.directory, *parts)
    return path if os.path.isfile(path) else None


def _completed(session_id: str) -> SessionState:
    state = public_session(session_id, with_result=True)
    if state.status != ProcessingStatus.COMPLETED or state.result is None:
        raise ApiError(404, f"This session has no outputs yet: its analysis is {state.status.value}. Thumbnails and "
                            "the reel exist once it has completed.", "Not found", sessionStatus=state.status.value)
    return state


@outputs_api.get("/thumbnail/<session_id>/<int:n>.jpg")
def thumbnail(session_id: str, n: int):
    state = _completed(session_id)
    items, _, _ = findings(AnalysisKind(state.analysis_type), state.result)
    name = items[n].get("thumbnail") if n < len(items) else None
    path = _output_file(state, THUMBNAILS_DIR, name) if name else None
    if path is None:
        raise ApiError(404, f"This session has no thumbnail {n}: its results list {len(items)} finding(s), "
                            "numbered from 0, each with its thumbnailUrl.", "Not found")
    return _cached(send_file(path, mimetype="image/jpeg", conditional=True, etag=True, max_age=_MAX_AGE_SECONDS))


@outputs_api.get("/reel/<session_id>.mp4")
def reel(session_id: str):
    state = _completed(session_id)
    path = _output_file(state, REEL_FILE) if state.result.get("reel") else None
    if path is None and state.result.get("reel_refused"):
        raise ApiError(404, f"This session has no reel. {state.result['reel_refused']}", "Not found")
    if path is None:
        raise ApiError(404, "This session has no reel: ask for one with the upload parameter reel=true (its "
                            "results' reelUrl is null without one).", "Not found")
    _one_byte_range_or_none(os.path.getsize(path))
    stem = os.path.splitext(state.video_name or "video")[0]
    return _cached(send_file(path, mimetype="video/mp4", conditional=True, etag=True, max_age=_MAX_AGE_SECONDS,
                             download_name=f"{stem} reel.mp4"))


def _one_byte_range_or_none(size: int) -> None:
    """Leave werkzeug the one kind of Range it serves: a single byte range. Several ranges, a malformed one or
    another unit are ignored (the whole file, as RFC 9110 14.2 says), and a suffix longer than the file asks
    for all of it (14.1.3): werkzeug would answer those 416, "outside the file", which they are not."""
    header = request.environ.get("HTTP_RANGE")
    if header is None:
        return
    one = _ONE_BYTE_RANGE.fullmatch(header.strip())
    if one is None or not (one[1] or one[2]) or (one[1] and one[2] and int(one[1]) > int(one[2])):
        del request.environ["HTTP_RANGE"]  # not one byte range: ignored
    elif not one[1] and int(one[2]) > size:
        request.environ["HTTP_RANGE"] = "bytes=0-"


def _cached(response):
    response.cache_control.public = False
    response.cache_control.private = True
    return response
