"""The asynchronous API under /api/v1/video: upload, status, results, cancel, cleanup.

Every route answers from the session store at once: none waits on the model
or on a job (the work happens in `jobs`).
"""
from __future__ import annotations

from typing import Optional

from flask import Blueprint, jsonify, request, url_for

from video_analysis.jobs.partial_results import partial_result
from video_analysis.jobs.sessions import ProcessingStatus, SessionNotFound, SessionState, iso_utc
from video_analysis.web.errors import ApiError, register_error_handlers
from video_analysis.web.intake import accept_upload
from video_analysis.web.outputs_api import with_output_links
from video_analysis.web.services import services
from video_analysis.web.session_lookup import not_found as _not_found, public_session as _session

video_api = Blueprint("video_api", __name__, url_prefix="/api/v1/video")
register_error_handlers(video_api)

# Seconds a client should wait before polling an unfinished session again.
POLL_AFTER_SECONDS = "1"


@video_api.post("/upload")
def upload():
    session = accept_upload()
    status_url = url_for("video_api.status", session_id=session.session_id)
    # The first answer, also to an upload sent again with its Idempotency-Key (the contract's "first answer again").
    body = {
        "sessionId": session.session_id,
        "status": ProcessingStatus.PENDING.value,
        "analysisType": session.analysis_type,
        "message": session.upload_message,
        "statusUrl": status_url,
        "resultsUrl": url_for("video_api.results", session_id=session.session_id),
        "createdAt": iso_utc(session.created_at),
    }
    return jsonify(body), 202, {"Location": status_url}


@video_api.get("/status/<session_id>")
def status(session_id: str):
    state = _session(session_id)
    headers = {} if state.status.terminal else {"Retry-After": POLL_AFTER_SECONDS}
    return jsonify(state.status_body(cluster=services().config.cluster)), 200, headers


@video_api.get("/results/<session_id>")
def results(session_id: str):
    partial = _partial_asked()
    state = _session(session_id, with_result=True)
    if partial and not state.status.terminal:
        svc = services()
        result = partial_result(state, svc.sessions.answers(session_id), svc.analysis.name)
        return jsonify(_results_body(state, result, partial=True)), 200, {"Retry-After": POLL_AFTER_SECONDS}
    if state.status != ProcessingStatus.COMPLETED:
        extra = {"sessionStatus": state.status.value}
        if state.status == ProcessingStatus.FAILED:
            detail = f"The analysis failed, so there are no results: {state.error}"
        elif state.status == ProcessingStatus.CANCELLED:
            detail = "The analysis was cancelled, so there are no results; upload the video again to analyse it."
        else:
            detail = (f"The analysis is not finished yet ({state.status.value}, {state.progress:.0f}%); "
                      "poll the status URL and fetch results once it says completed, or ask for the results "
                      "so far with ?partial=true.")
        raise ApiError(400, detail, "Results not ready", **extra)
    return jsonify(_results_body(state, state.result, partial=False if partial else None))


def _partial_asked() -> bool:
    value = request.args.get("partial")
    if value is None or value.lower() == "false":
        return False
    if value.lower() == "true":
        return True
    raise ApiError(400, f"The query parameter 'partial' must be true or false, not '{value[:32]}'.", field="partial")


def _results_body(state: SessionState, result: dict, partial: Optional[bool]) -> dict:
    """The results route's body; with `partial` (asked for with ?partial=) saying whether the job is still going."""
    linked = with_output_links(result, state)
    body = {
        "sessionId": state.session_id,
        "status": state.status.value,
        "analysisType": state.analysis_type,
        "data": linked,
        "results": linked,
    }
    if partial is not None:
        body["partial"] = partial
    return body


@video_api.post("/cancel/<session_id>")
def cancel(session_id: str):
    _session(session_id)
    state = services().jobs.cancel(session_id)
    if state is None:  # a concurrent cleanup won
        raise _not_found()
    if state.status != ProcessingStatus.CANCELLED:
        raise ApiError(409, f"The analysis has already {state.status.value}; there is nothing to cancel.",
                       "Cannot cancel", sessionStatus=state.status.value)
    return jsonify({"sessionId": session_id, "status": state.status.value,
                    "message": "The analysis is cancelled; the upload is kept until cleanup or expiry."})


@video_api.delete("/cleanup/<session_id>")
def cleanup(session_id: str):
    svc = services()
    _session(session_id)
    svc.jobs.cancel(session_id)
    try:
        state = svc.sessions.delete(session_id)
    except SessionNotFound:  # a concurrent cleanup won
        raise _not_found() from None
    if state.node in (None, svc.config.api_url):  # else the node keeping the upload deletes it (cluster/sessions.py)
        svc.storage.remove(state.directory)
    return jsonify({"sessionId": session_id, "message": "The session and all its files are deleted."})
