"""The HTTP service: `create_app(config)` builds it; `main()` (`python app.py`) runs a development server.

Routes: the async blueprint under `/api/v1/video` (video_api.py), the legacy
synchronous blueprint under `/analyze` (legacy.py), `/health`, the OpenAPI
document, and the web page at `/`. One model serves them all: legacy
requests are jobs in the same queue, waited for by their HTTP request.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Optional, Union

from flask import Flask, jsonify, send_from_directory
from flask_cors import CORS

from video_analysis.cluster.connection import ERRORS as REDIS_ERRORS, UNREACHABLE
from video_analysis.cluster.node import cluster_parts, prepare_node
from video_analysis.cluster.workers import SEEN_SECONDS
from video_analysis.config import Config
from video_analysis.jobs.analysis_process import AnalysisProcess
from video_analysis.jobs.expiry import SessionSweeper
from video_analysis.jobs.queue import JobQueue
from video_analysis.jobs.sessions import SessionManager, StoreUnavailable, iso_utc
from video_analysis.jobs.state_db import StateDatabase, StateDatabaseError
from video_analysis.jobs.storage import Storage
from video_analysis.web.errors import register_error_handlers
from video_analysis.web.intake import next_try_in
from video_analysis.web.internal_api import internal_api
from video_analysis.web.legacy import legacy
from video_analysis.web.openapi import openapi_document
from video_analysis.web.request_body import LargeBodyReads
from video_analysis.web.services import EXTENSION_KEY, Services, services
from video_analysis.web.upload_request import UploadRequest
from video_analysis.web.outputs_api import outputs_api
from video_analysis.web.video_api import video_api

__version__ = "1.0.0"
log = logging.getLogger(__name__)
_MB = 1024 * 1024


def create_app(config: Union[Config, dict, None] = None, analysis: Optional[AnalysisProcess] = None) -> Flask:
    """Build the app: settings from the environment, then `config` (a Config or a dict of overrides).

    `analysis` hands in an already running analysis process for `config.MODEL`
    (the tests share one); by default the app starts its own and stops it on close.
    """
    if not isinstance(config, Config):
        config = Config.from_env(**(config or {}))
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.request_class = UploadRequest
    app.wsgi_app = LargeBodyReads(app.wsgi_app)
    app.config.update(
        SERVICE=config,
        # The body may exceed the file by its few form fields; the file itself is checked exactly.
        MAX_CONTENT_LENGTH=config.MAX_UPLOAD_MB * _MB + _MB,
        MAX_FORM_MEMORY_SIZE=config.MAX_FORM_MEMORY_SIZE,
        MAX_FORM_PARTS=config.MAX_FORM_PARTS,
    )
    app.json.sort_keys = False

    if config.cluster:
        parts = cluster_parts(config, owner=f"{socket.gethostname()}:{os.getpid()}")
        sessions, storage, jobs, analysis, owns_analysis = (parts.sessions, parts.storage, parts.jobs, parts.workers,
                                                            True)
        storage.prepare(remove_strays=False)  # the node's start did the rest (cluster/node.py)
    else:
        sessions = _saved_sessions(config)
        storage = Storage(config.DATA_DIR, config.MAX_STORAGE_MB)
        if sessions.move_files(storage.session_dir):
            log.info("DATA_DIR has moved to %s: the sessions now point there", storage.root)
        storage.prepare(sessions=[state.directory for state in sessions.list()], own_files=_state_db_files(config))
        owns_analysis = analysis is None
        if analysis is None:
            analysis = AnalysisProcess(config.MODEL, config.MODEL_RETRY_SECONDS)  # loads in its child; /health tells when ready
        jobs = JobQueue(analysis, sessions, config.JOB_WORKERS, config.MAX_QUEUED_JOBS,
                        max_reel_seconds=config.MAX_REEL_SECONDS, outputs_written=storage.count_written)
        jobs.resume_unfinished()
    sweeper = SessionSweeper(sessions, storage, min(config.SWEEP_INTERVAL_SECONDS, config.SESSION_TTL_SECONDS)).start()
    legacy_requests = threading.BoundedSemaphore(config.MAX_LEGACY_REQUESTS)
    app.extensions[EXTENSION_KEY] = Services(config, analysis, sessions, jobs, storage, sweeper, legacy_requests,
                                             owns_analysis)
    _close_before_thread_joins(app.extensions[EXTENSION_KEY])

    cors = {"origins": config.CORS_ORIGINS, "expose_headers": ["Location", "Retry-After"]}
    CORS(app, resources={r"/api/*": cors, r"/analyze/*": cors, r"/health": cors})
    register_error_handlers(app)  # everything outside the blueprints, which register their own
    app.register_blueprint(video_api)
    app.register_blueprint(outputs_api)
    app.register_blueprint(legacy)
    app.register_blueprint(internal_api)
    app.add_url_rule("/health", "health", health)
    document = openapi_document(config)  # built once: the page fetches it on every load
    app.add_url_rule("/api/v1/openapi.json", "openapi", lambda: jsonify(document))
    app.add_url_rule("/", "index", lambda: send_from_directory(app.static_folder, "index.html"))
    return app


def _saved_sessions(config: Config) -> SessionManager:
    """The sessions an earlier run left in the state database, those past their TTL already gone."""
    try:
        sessions = SessionManager(config.SESSION_TTL_SECONDS, StateDatabase(config.state_db_path))
    except StateDatabaseError as error:
        raise SystemExit(str(error)) from None
    sessions.expire()
    kept = sessions.counts()
    if any(kept.values()):
        log.info("Sessions back from %s: %s", config.state_db_path,
                 ", ".join(f"{count} {status}" for status, count in kept.items() if count))
    return sessions


def _state_db_files(config: Config) -> list:
    """The state database's files (with SQLite's -wal and -shm beside it), by name, when they are in DATA_DIR."""
    path = os.path.abspath(config.state_db_path)
    if os.path.dirname(path) != os.path.abspath(config.DATA_DIR):
        return []
    name = os.path.basename(path)
    return [name, name + "-wal", name + "-shm", name + "-journal"]


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
    if svc.config.cluster:
        return jsonify(_cluster_health(svc))
    model = svc.analysis
    state = model.state()
    body = {
        "status": "degraded" if state.load_error else "healthy",
        "model": {"id": model.name, "loaded": state.loaded, "device": model.device},
        "queue": svc.jobs.counts(),
        "version": __version__,
    }
    if state.next_attempt_at is not None:
        body["model"]["nextAttemptAt"] = iso_utc(state.next_attempt_at)
    if state.failed_attempts:
        body["model"]["failedAttempts"] = state.failed_attempts
    if state.next_attempt_at is not None:
        body["reason"] = f"{state.load_error} The service tries again by itself {next_try_in(state)}."
    elif state.load_error:
        body["reason"] = state.load_error
    elif not state.loaded:
        body["reason"] = "The model is still loading."
        if state.failed_attempts:  # a try after the Hub could not be reached
            body["reason"] = (f"The model is loading again (try {state.failed_attempts + 1}); the last try failed: "
                              f"{state.last_error}")
    problems = storage_problems(svc)
    if problems:
        body["status"] = "degraded"
        body["problems"] = problems
    return jsonify(body)


def _cluster_health(svc: Services) -> dict:
    """Cluster mode: the workers and the queue as Redis has them; degraded while Redis is down or no worker is
    there (jobs then wait in the queue)."""
    pool = svc.analysis
    body = {"status": "healthy", "model": {"id": pool.name, "loaded": False, "device": pool.device},
            "queue": {"pending": 0, "processing": 0, "depth": 0}, "workers": [], "version": __version__}
    try:
        body["workers"] = pool.workers()
        body["queue"] = dict(svc.jobs.counts(), depth=svc.jobs.depth())
    except (StoreUnavailable, *REDIS_ERRORS):
        body["status"], body["reason"] = "degraded", UNREACHABLE
        return body
    body["model"]["loaded"] = bool(body["workers"])
    if not body["workers"]:
        body["status"] = "degraded"
        body["reason"] = (f"No model worker has been seen for {SEEN_SECONDS} s, so queued analyses wait. Start one "
                          "with `python worker.py` (or `make worker`) on a machine that reaches this Redis.")
    problems = storage_problems(svc)
    if problems:
        body["status"] = "degraded"
        body["problems"] = problems
    return body


def storage_problems(svc: Services) -> list:
    """What keeps the service from keeping what it is given, in sentences for an operator (cheap: two stats)."""
    problems = []
    if not os.path.isdir(svc.storage.root):
        problems.append(f"DATA_DIR {svc.storage.root} was deleted while the service runs: uploads are refused and "
                        "unfinished jobs have lost their videos. Restart the service.")
    state_db = svc.sessions.file_problem()
    if state_db:
        problems.append(state_db)
    return problems


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = Config.from_env()
    if config.cluster:
        prepare_node(config)  # under gunicorn its master does it (gunicorn.conf.py)
    app = create_app(config)
    config = app.config["SERVICE"]
    try:
        app.run(host=config.HOST, port=config.PORT, threaded=True)
    finally:
        app.extensions[EXTENSION_KEY].close()

