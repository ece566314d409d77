"""Routes only a cluster's model workers may use: the uploads this API node keeps, fetched by the worker running
the job (cluster/video_fetch.py).

Each request must carry `Authorization: Bearer <WORKER_TOKEN>`. Without the
token, with a wrong one, or outside cluster mode, the answer is the same 404
as for an address that does not exist: nothing says the route is here.
"""
from __future__ import annotations

import os

from flask import Blueprint, request, send_file
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from video_analysis.cluster.video_fetch import INTERNAL_PREFIX
from video_analysis.cluster.worker_token import token_matches
from video_analysis.jobs.sessions import SessionNotFound
from video_analysis.web.errors import http_problem, register_error_handlers
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


@internal_api.get("/videos/<session_id>")
def video(session_id: str):
    svc = services()
    try:
        state = svc.sessions.get(session_id, with_result=False)
    except SessionNotFound:
        raise NotFound() from None
    path = state.video_path
    if (state.node != svc.config.api_url or not path or not os.path.isfile(path)
            or os.path.dirname(os.path.dirname(os.path.abspath(path))) != svc.storage.root):
        raise NotFound()  # another node keeps it, or it is gone
    return send_file(state.video_path, mimetype="application/octet-stream", conditional=False, etag=False,
                     max_age=0)
