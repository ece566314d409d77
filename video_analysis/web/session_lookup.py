"""A session as the asynchronous routes look it up by the id in their URL: a 404 problem when there is none."""
from __future__ import annotations

from video_analysis.jobs.session_ids import is_session_id
from video_analysis.jobs.sessions import SessionNotFound, SessionState
from video_analysis.web.errors import ApiError
from video_analysis.web.services import services


def not_found() -> ApiError:
    return ApiError(404, "No session has this id; it may have been cleaned up or expired. Upload the video again.",
                    "Session not found")


def known_id(session_id: str) -> str:
    if not is_session_id(session_id):
        raise not_found()
    return session_id


def public_session(session_id: str, with_result: bool = False) -> SessionState:
    """The session of `session_id`; 404 for an unknown id and for a legacy request's job, which has no public id."""
    try:
        state = services().sessions.get(known_id(session_id), with_result)
    except SessionNotFound:
        raise not_found() from None
    if state.legacy:
        raise not_found()
    return state
