"""The HTTP service: `create_app(config)` builds it; `main()` (`python app.py`) runs a development server.

Routes: the legacy synchronous `/analyze/highlights` and `/analyze/workout`,
`/health`, the async blueprint under `/api/v1/video` (video_api.py), the
OpenAPI document, and the web page at `/`. One model serves them all: legacy
requests are jobs in the same queue, waited for by their HTTP request.
"""
from __future__ import annotations

import errno
import logging
import select
import socket
import threading
from typing import Optional, Union

from flask import Flask, jsonify, request, send_from_directory
from flask_cors import CORS

from video_analysis.jobs.analysis_process import AnalysisProcess
from video_analysis.config import Config
from video_analysis.engine.parameters import AnalysisKind
from video_analysis.web.errors import ApiError, register_error_handlers
from video_analysis.web.intake import accept_upload
from video_analysis.jobs.queue import JobQueue
from video_analysis.web.openapi import openapi_document
from video_analysis.web.request_body import LargeBodyReads
from video_analysis.web.services import EXTENSION_KEY, Services, services
from video_analysis.jobs.expiry import SessionSweeper
from video_analysis.jobs.sessions import ProcessingStatus, SessionManager
from video_analysis.jobs.storage import SpoolingRequest, Storage
from video_analysis.web.video_api import video_api

__version__ = "1.0.0"
log = logging.getLogger(__name__)
_MB = 1024 * 1024
# How a failed legacy job is answered, by what failed.
_LEGACY_FAILURE_STATUS = {"video": 422, "model": 503, "internal": 500}
_LEGACY_POLL_SECONDS = 0.25


def create_app(config: Union[Config, dict, None] = None, analysis: Optional[AnalysisProcess] = None) -> Flask:
    """Build the app: settings from the environment, then `config` (a Config or a dict of overrides).

    `analysis` hands in an already running analysis process for `config.MODEL`
    (the tests share one); by default the app starts its own and stops it on close.
    """
    if not isinstance(config, Config):
        config = Config.from_env(**(config or {}))
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.request_class = SpoolingRequest
    app.wsgi_app = LargeBodyReads(app.wsgi_app)
    app.config.update(
        SERVICE=config,
        # The body may exceed the file by its few form fields; the file itself is checked exactly.
        MAX_CONTENT_LENGTH=config.MAX_UPLOAD_MB * _MB + _MB,
        MAX_FORM_MEMORY_SIZE=config.MAX_FORM_MEMORY_SIZE,
        MAX_FORM_PARTS=config.MAX_FORM_PARTS,
    )
    app.json.sort_keys = False

    storage = Storage(config.DATA_DIR, config.MAX_STORAGE_MB)
    storage.prepare()
    owns_analysis = analysis is None
    if analysis is None:
        analysis = AnalysisProcess(config.MODEL)  # loads in its child; /health tells when ready
    sessions = SessionManager(config.SESSION_TTL_SECONDS)
    jobs = JobQueue(analysis, sessions, config.JOB_WORKERS, config.MAX_QUEUED_JOBS)
    sweeper = SessionSweeper(sessions, storage, min(config.SWEEP_INTERVAL_SECONDS, config.SESSION_TTL_SECONDS)).start()
    legacy_requests = threading.BoundedSemaphore(config.MAX_LEGACY_REQUESTS)
    app.extensions[EXTENSION_KEY] = Services(config, analysis, sessions, jobs, storage, sweeper, legacy_requests,
                                             owns_analysis)
    _close_before_thread_joins(app.extensions[EXTENSION_KEY])

    cors = {"origins": config.CORS_ORIGINS, "expose_headers": ["Location", "Retry-After"]}
    CORS(app, resources={r"/api/*": cors, r"/analyze/*": cors, r"/health": cors})
    register_error_handlers(app)
    app.register_blueprint(video_api)
    app.add_url_rule("/analyze/highlights", "analyze_highlights", lambda: _legacy("highlights"), methods=["POST"])
    app.add_url_rule("/analyze/workout", "analyze_workout", lambda: _legacy("workout"), methods=["POST"])
    app.add_url_rule("/health", "health", health)
    app.add_url_rule("/api/v1/openapi.json", "openapi", lambda: jsonify(openapi_document(config)))
    app.add_url_rule("/", "index", lambda: send_from_directory(app.static_folder, "index.html"))
    return app


def _close_before_thread_joins(svc: Services) -> None:
    """Cancel jobs before the interpreter waits for the job threads at exit.

    concurrent.futures joins its workers from threading's exit hooks, which
    run before `atexit`; a hook registered after that import runs first.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(svc.close)
        except RuntimeError:  # already shutting down
            pass


def health():
    svc = services()
    model = svc.analysis
    body = {
        "status": "degraded" if model.load_error else "healthy",
        "model": {"id": model.name, "loaded": model.loaded, "device": model.device},
        "queue": svc.jobs.counts(),
        "version": __version__,
    }
    if model.load_error:
        body["reason"] = model.load_error
    elif not model.loaded:
        body["reason"] = "The model is still loading."
    return jsonify(body)


# recv errors that mean the peer is gone; any other failure of the check says nothing about the client.
_HUNG_UP = (errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ENOTCONN, errno.ESHUTDOWN)


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


def _legacy(analysis_type: str):
    """A synchronous analysis: a job like any other, which this request waits for.

    Its files are deleted once it has answered (a legacy client has no id to
    clean up with), and a client that hangs up cancels its job. Each waiting
    request holds a request thread, so at most MAX_LEGACY_REQUESTS are served
    at once (half the threads); the rest get 503 at once, nothing stored.
    """
    svc = services()
    if not svc.legacy_requests.acquire(blocking=False):
        limit = svc.config.MAX_LEGACY_REQUESTS
        raise ApiError(503, f"The server is already running {limit} synchronous analyses, its limit; send this one "
                            "again in a minute, or use the asynchronous API (POST /api/v1/video/upload), "
                            "which has no such limit.", "Too many synchronous analyses", headers={"Retry-After": "60"})
    try:
        return _legacy_analysis(svc, analysis_type)
    finally:
        svc.legacy_requests.release()


def _legacy_analysis(svc: Services, analysis_type: str):
    session = accept_upload(analysis_type, legacy=True)
    sid = session.session_id
    try:
        waited = 0.0
        while not svc.jobs.wait(sid, _LEGACY_POLL_SECONDS):
            waited += _LEGACY_POLL_SECONDS
            timeout = svc.config.LEGACY_TIMEOUT_SECONDS
            if _client_disconnected() or (timeout is not None and waited >= timeout):
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
        kind = "workout_timestamps" if AnalysisKind(analysis_type) is AnalysisKind.WORKOUT else "highlights"
        return jsonify({"success": True, "analysis_type": kind, "data": state.result})
    if state.status == ProcessingStatus.CANCELLED:
        raise ApiError(503, "The analysis was cancelled because the server is shutting down; send it again later.",
                       headers={"Retry-After": "30"})
    status = _LEGACY_FAILURE_STATUS.get(state.error_kind or "internal", 500)
    raise ApiError(status, state.error or "The analysis failed.", "Analysis failed")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app()
    config = app.config["SERVICE"]
    try:
        app.run(host=config.HOST, port=config.PORT, threaded=True)
    finally:
        app.extensions[EXTENSION_KEY].close()

