"""The HTTP service: `create_app(config)` builds it; `python app.py` runs a development server.

Routes: the legacy synchronous `/analyze/highlights` and `/analyze/workout`,
`/health`, the async blueprint under `/api/v1/video` (video_api.py), the
OpenAPI document, and the web page at `/`. One model serves them all: legacy
requests are jobs in the same queue, waited for by their HTTP request.
"""
from __future__ import annotations

import logging
import select
import socket
import threading
from typing import Optional, Union

from flask import Flask, jsonify, request, send_from_directory
from flask_cors import CORS

from config import Config
from errors import ApiError, register_error_handlers
from intake import accept_upload
from jobs import JobQueue
from openapi import openapi_document
from request_body import LargeBodyReads
from services import EXTENSION_KEY, Services, services
from session_expiry import SessionSweeper
from session_manager import ProcessingStatus, SessionManager
from storage import SpoolingRequest, Storage
from video_api import video_api
from video_highlight_generator import VideoHighlightGenerator

__version__ = "1.0.0"
log = logging.getLogger(__name__)
_MB = 1024 * 1024
# How a failed legacy job is answered, by what failed.
_LEGACY_FAILURE_STATUS = {"video": 422, "model": 503, "internal": 500}
_LEGACY_POLL_SECONDS = 0.25


def create_app(config: Union[Config, dict, None] = None) -> Flask:
    """Build the app: settings from the environment, then `config` (a Config or a dict of overrides)."""
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
    engine = VideoHighlightGenerator(config.MODEL)  # loads on its own thread; /health tells when ready
    sessions = SessionManager(config.SESSION_TTL_SECONDS)
    jobs = JobQueue(engine, sessions, storage, config.JOB_WORKERS, config.MAX_QUEUED_JOBS)
    sweeper = SessionSweeper(sessions, storage, min(config.SWEEP_INTERVAL_SECONDS, config.SESSION_TTL_SECONDS)).start()
    app.extensions[EXTENSION_KEY] = Services(config, engine, sessions, jobs, storage, sweeper)
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
    runner = svc.engine.runner
    body = {
        "status": "degraded" if runner.load_error else "healthy",
        "model": {"id": runner.name, "loaded": runner.loaded, "device": runner.device},
        "queue": svc.jobs.counts(),
        "version": __version__,
    }
    if runner.load_error:
        body["reason"] = runner.load_error
    elif not runner.loaded:
        body["reason"] = "The model is still loading."
    return jsonify(body)


def _client_disconnected() -> bool:
    """Whether the client of this request has hung up (seen under gunicorn; unknown elsewhere)."""
    sock: Optional[socket.socket] = request.environ.get("gunicorn.socket")
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _legacy(analysis_type: str):
    """A synchronous analysis: a job like any other, which this request waits for.

    Its files are deleted once it has answered (a legacy client has no id to
    clean up with), and a client that hangs up cancels its job.
    """
    svc = services()
    session = accept_upload(analysis_type, legacy=True)
    sid = session.session_id
    try:
        waited = 0.0
        while not svc.jobs.wait(sid, _LEGACY_POLL_SECONDS):
            waited += _LEGACY_POLL_SECONDS
            timeout = svc.config.LEGACY_TIMEOUT_SECONDS
            if _client_disconnected() or (timeout is not None and waited >= timeout):
                log.info("Legacy request %s abandoned; cancelling its job", sid)
                svc.sessions.update(sid, status=ProcessingStatus.CANCELLED, message="The client went away")
                svc.jobs.cancel(sid)
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
        kind = "workout_timestamps" if analysis_type == "workout" else "highlights"
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


if __name__ == "__main__":
    main()
