"""Every error as RFC 9457 problem details, plus `error` (= detail) for older clients.

Each blueprint registers its own handlers (`register_error_handlers`), and
the app registers them for everything else: the legacy routes add
`"success": false` to every answer, the others do not. No response ever
carries a traceback or a server path: unexpected exceptions are logged and
answered with a generic sentence.
"""
from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Optional, Union

from flask import Blueprint, Flask, Response, current_app, json, request
from werkzeug.exceptions import HTTPException

from video_analysis.cluster.connection import RETRY_AFTER_SECONDS, UNREACHABLE
from video_analysis.jobs.sessions import StateNotSaved, StoreUnavailable

log = logging.getLogger(__name__)

# A sentence a person can act on, for errors raised by routing or werkzeug.
_SENTENCES = {
    400: "The request could not be understood; check the form fields and try again.",
    404: "There is nothing at this address; check the URL (and the session id, which may have expired).",
    405: "This address does not accept the {method} method; use {allowed}.",
    408: "The upload took too long to arrive; try again on a steadier connection.",
    413: "The request is larger than this server accepts (uploads up to {max_mb} MB, with at most {parts} form fields).",
    415: "The request's content type is not supported here.",
    416: "The requested byte range lies outside the file ({length} bytes); ask for a range within it.",
    500: "Something went wrong on the server while handling this request; it has been logged. Please try again.",
}


class ApiError(Exception):
    """An error answered as problem+json; extra keyword arguments become fields."""

    def __init__(self, status: int, detail: str, title: Optional[str] = None, headers: Optional[dict] = None, **extra):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title
        self.headers = headers or {}
        self.extra = extra


def problem(status: int, detail: str, title: Optional[str] = None, headers: Optional[dict] = None, **extra) -> Response:
    title = title or HTTPStatus(status).phrase
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "error": detail,
        **extra,
    }
    if request:
        _discard_unread_body()
    response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _discard_unread_body() -> None:
    """Behind the launcher's nginx (serve/), read what is left of a refused request's body before answering.

    gunicorn drains at most 64 KiB of a body the app did not read and then
    closes the connection; nginx, still sending the body it buffered, would
    turn the app's answer (a 503 with Retry-After, say) into a 502. nginx has
    the whole body already, so reading it is a local copy. Never done without
    nginx in front: a client could make the thread wait for a body it never
    sends. Bodies over MAX_CONTENT_LENGTH (refused as 413) are left alone.
    """
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    length = request.content_length
    if not current_app.config["SERVICE"].BUFFERED_BY_PROXY or not length or (limit and length > limit):
        return
    try:
        while request.stream.read(1 << 20):
            pass
    except (OSError, HTTPException):
        pass  # the body ended early (ClientDisconnected) or the proxy went away: nothing more to read


def http_problem(error: HTTPException, always: dict) -> Response:
    """The problem+json answer to a werkzeug HTTP error, with its sentence."""
    status = error.code or 500
    template = _SENTENCES.get(status)
    headers = {}
    if status == 405:
        allowed = [m for m in getattr(error, "valid_methods", None) or [] if m not in ("HEAD", "OPTIONS")]
        headers["Allow"] = ", ".join(getattr(error, "valid_methods", None) or [])
        detail = template.format(method=request.method, allowed=" or ".join(allowed) or "another method")
    elif status == 413:
        config = current_app.config["SERVICE"]
        detail = template.format(max_mb=config.MAX_UPLOAD_MB, parts=config.MAX_FORM_PARTS)
    elif status == 416 and getattr(error, "length", None) is not None:  # a Range past a served file's end
        headers["Content-Range"] = f"bytes */{error.length}"
        detail = template.format(length=error.length)
    elif template and status != 416:
        detail = template
    else:
        detail = f"{error.name}."
    return problem(status, detail, headers=headers, **always)


def _blueprint_under(path: str) -> Optional[str]:
    """The blueprint whose URL prefix holds `path`, if one does."""
    for name, blueprint in current_app.blueprints.items():
        prefix = (blueprint.url_prefix or "").rstrip("/")
        if prefix and path.startswith(prefix + "/"):
            return name
    return None


def register_error_handlers(scope: Union[Flask, Blueprint], **always) -> None:
    """Answer every error raised in `scope` (the app, or one blueprint) as problem+json with `always` added.

    Flask picks a blueprint's handlers over the app's for errors raised in
    that blueprint's views, including while they read the body (a 413). A
    routing error (404, 405) happens before any blueprint is chosen: the app
    hands it to the handler of the blueprint whose URL prefix holds the path.
    """
    @scope.errorhandler(ApiError)
    def _api_error(error: ApiError):
        return problem(error.status, error.detail, error.title, error.headers, **error.extra, **always)

    @scope.errorhandler(HTTPException)
    def _http_exception(error: HTTPException):
        if isinstance(scope, Flask) and request.url_rule is None:
            owner = _blueprint_under(request.path)
            handler = current_app.error_handler_spec[owner][None].get(HTTPException) if owner else None
            if handler is not None:
                return handler(error)
        return http_problem(error, always)

    @scope.errorhandler(StateNotSaved)
    def _not_saved(error: StateNotSaved):
        return problem(503, "The server could not record this change because its disk is full or not writable, so "
                            "nothing was changed; try again later.", "Storage unavailable", {"Retry-After": "60"},
                       **always)

    @scope.errorhandler(StoreUnavailable)
    def _store_unavailable(error: StoreUnavailable):  # cluster mode: Redis is down; it comes back by itself
        return problem(503, getattr(error, "sentence", UNREACHABLE), "Service unavailable",
                       {"Retry-After": str(RETRY_AFTER_SECONDS)}, **always)

    @scope.errorhandler(Exception)
    def _unexpected(error: Exception):
        log.exception("Unhandled error on %s %s", request.method, request.path)
        return problem(500, _SENTENCES[500], **always)
