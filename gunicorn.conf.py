"""gunicorn settings for `make run`: one process (it holds the one model), threads for requests.

In cluster mode (REDIS_URL set) the API processes hold no state and no model: WEB_PROCESSES of them (2 by
default) share the requests, and the master prepares the node once before they start (cluster/node.py).
"""
from video_analysis.config import Config

_config = Config.from_env()  # an invalid variable stops gunicorn here, with the sentence that names it


def _check_state_db(config: Config) -> None:
    """A state database the service cannot use (not a database, another program's, in use by another service)
    stops gunicorn here with its sentence: found in the worker, the same error would have gunicorn start the
    worker again and again."""
    from video_analysis.jobs.sessions import SessionManager
    from video_analysis.jobs.state_db import StateDatabaseError

    try:
        SessionManager(database=config.state_db_path).close()
    except StateDatabaseError as error:
        raise SystemExit(str(error)) from None


def on_starting(server):
    """Cluster mode: once per start of the node, before any API process (its DATA_DIR, its legacy requests)."""
    if _config.cluster:
        from video_analysis.cluster.node import prepare_node

        prepare_node(_config)


if not _config.cluster:
    _check_state_db(_config)
bind = f"{_config.HOST}:{_config.PORT}"
# Embedded: one process = one model in memory; never raise this. Cluster: the model is on the workers.
workers = _config.WEB_PROCESSES if _config.cluster else 1
worker_class = "gthread"
threads = _config.HTTP_THREADS  # legacy requests hold a thread while they wait
timeout = 120
graceful_timeout = 5  # SIGTERM: running jobs are cancelled, the process exits within seconds
# Long enough for any URL a client may send (a malformed 10 KB id gets the app's 404 problem, not gunicorn's 414).
limit_request_line = 16384
# No control socket: it lives at one fixed path per user, and two servers on a machine would fight over it.
control_socket_disable = True
accesslog = "-"
loglevel = _config.LOG_LEVEL


def post_fork(server, worker):
    """Cap glibc's malloc arenas in the worker.

    Each of the request threads would otherwise keep its own arena of freed
    upload and probe buffers: with 16 queued jobs the worker grew ~7 % over
    one job; capped at 2 arenas, under 2 % (bench/experiment_p5.py).
    """
    import ctypes
    import ctypes.util
    import platform

    if platform.system() == "Linux":
        try:
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX
        except (OSError, AttributeError):
            pass  # not glibc: nothing to cap


def _services(worker):
    from video_analysis.web.services import EXTENSION_KEY

    app = getattr(worker, "wsgi", None)
    return getattr(app, "extensions", {}).get(EXTENSION_KEY) if app is not None else None


def post_worker_init(worker):
    """On SIGTERM, cancel the jobs at once instead of after the drain.

    gunicorn stops accepting and lets requests in flight finish within
    graceful_timeout; a legacy request waiting on its job would not finish,
    and would be cut off with no answer. Cancelling its job first lets it
    answer 503 + Retry-After, so the worker drains and exits on its own.
    """
    import signal
    import threading

    services = _services(worker)
    previous = signal.getsignal(signal.SIGTERM)
    if services is None or not callable(previous):
        return

    def on_sigterm(signum, frame):
        previous(signum, frame)
        threading.Thread(target=services.begin_shutdown, name="begin-shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)


def worker_exit(server, worker):
    """Cancel running jobs and stop the analysis process before the worker's interpreter exits."""
    services = _services(worker)
    if services is not None:
        services.close()
