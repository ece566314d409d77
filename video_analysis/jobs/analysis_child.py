"""The analysis process itself: one engine holding the model, each job on a thread of its own.

How many jobs run at once is the parent's business (`JOB_WORKERS` job
threads wait on it). Each job has its own CancelToken, cancelled by a CANCEL
message or by STOP; the engine, the frame reader and the model runner all
check it. The messages are described in `messages`.
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Callable, Dict

from video_analysis.cancellation import CancelToken, Cancelled
from video_analysis.config import Config
from video_analysis.engine.analyzer import VideoHighlightGenerator
from video_analysis.engine.parameters import AnalysisKind
from video_analysis.engine.prompts import PromptsDoNotFit
from video_analysis.jobs import messages as m
from video_analysis.model.cpu_priority import compute_thread, yield_cpu_to_other_work
from video_analysis.model.errors import ModelLoadError, RunnerClosed
from video_analysis.video import VideoError

log = logging.getLogger(__name__)


class AnalysisChild:
    """The engine, a thread and a token per job, and the answers sent back to the parent."""

    def __init__(self, connection, model_ref: str):
        self.connection = connection
        self.engine = VideoHighlightGenerator(model_ref)
        self.tokens: Dict[str, CancelToken] = {}  # of the jobs running
        self.lock = threading.Lock()
        self.send_lock = threading.Lock()

    def send(self, message: tuple) -> None:
        try:
            with self.send_lock:
                self.connection.send(message)
        except (OSError, ValueError):
            pass  # the parent is gone; the main loop sees it too and exits

    def report_loaded(self) -> None:
        runner = self.engine.runner
        try:
            runner.wait_until_loaded()
        except ModelLoadError:  # load_error says why
            pass
        self.send((m.LOADED, {"device": runner.device, "load_error": runner.load_error,
                              "hub_unreachable": runner.hub_unreachable}))

    def start_job(self, job_id: str, kind: str, video_path: str, options: dict) -> None:
        token = CancelToken()
        with self.lock:
            self.tokens[job_id] = token
        threading.Thread(target=self._job, args=(job_id, kind, video_path, options, token),
                         name=f"job-{job_id[:8]}", daemon=True).start()

    def _job(self, job_id: str, kind: str, video_path: str, options: dict, token: CancelToken) -> None:
        def progress(done: int, total: int, message: str) -> None:
            self.send((m.PROGRESS, job_id, done, total, message))

        def answered(position: int, answer: str) -> None:
            self.send((m.ANSWER, job_id, position, answer))

        def rendering(fraction: float, message: str) -> None:
            self.send((m.RENDERING, job_id, fraction, message))

        compute_thread()  # decoding and rendering yield the CPU like the model; the main thread stays responsive
        try:
            what, *rest = run_engine(self.engine, kind, video_path, options, progress, answered, token, rendering)
        finally:
            with self.lock:
                self.tokens.pop(job_id, None)
        self.send((what, job_id, *rest))

    def cancel(self, job_id: str) -> None:
        with self.lock:
            token = self.tokens.get(job_id)
        if token is not None:
            token.cancel()

    def queries(self) -> Dict[str, Callable]:
        return {name: getattr(self.engine.runner, name) for name in m.QUERIES}

    def answer(self, call_id: int, method: str, args: tuple, kwargs: dict) -> None:
        function = self.queries().get(method)
        try:
            if function is None:
                raise LookupError(f"unknown call {method!r}")
            self.send((m.REPLY, call_id, True, function(*args, **kwargs)))
        except Exception as error:  # noqa: BLE001  (the caller gets the reason)
            log.exception("Call %s failed", method)
            self.send((m.REPLY, call_id, False, str(error) or type(error).__name__))

    def stop(self) -> None:
        with self.lock:
            tokens = list(self.tokens.values())
        for token in tokens:
            token.cancel()
        self.engine.close()


def run_engine(engine: VideoHighlightGenerator, kind: str, video_path: str, options: dict, progress, answered,
               token: CancelToken, rendering=None) -> tuple:
    """Run one job on `engine`; its outcome as the rest of a message: (DONE, result) or (ERROR, kind, sentence).

    The one place a job's exception becomes the error kind and the sentence its client reads (the analysis
    process here, and a cluster's model worker).
    """
    try:
        return m.DONE, engine.analyze(AnalysisKind(kind), video_path, progress=progress, answered=answered,
                                      cancel=token, rendering=rendering, **options)
    except Cancelled as error:
        return m.ERROR, m.CANCELLED, str(error)
    except VideoError as error:
        return m.ERROR, m.VIDEO, str(error)
    except PromptsDoNotFit as error:
        return m.ERROR, m.PARAMETERS, str(error)
    except (ModelLoadError, RunnerClosed) as error:
        return m.ERROR, m.MODEL, str(error)
    except Exception:  # noqa: BLE001  (one job's failure must not reach the others)
        log.exception("Job failed")
        return m.ERROR, m.INTERNAL, m.INTERNAL_ERROR


def child_main(connection, model_ref: str) -> None:
    """The analysis process's main function: serve the parent's messages until STOP or the pipe closes."""
    logging.basicConfig(level=Config.from_env().LOG_LEVEL.upper(),
                        format="%(asctime)s %(levelname)s analysis[%(process)d] %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole terminal; the parent decides
    yield_cpu_to_other_work()  # the computing threads give way to the web process that started this one
    child = AnalysisChild(connection, model_ref)
    threading.Thread(target=child.report_loaded, name="report-loaded", daemon=True).start()
    try:
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                break  # the parent is gone
            what = message[0]
            if what == m.RUN:
                child.start_job(*message[1:])
            elif what == m.CANCEL:
                child.cancel(message[1])
            elif what == m.CALL:
                child.answer(*message[1:])
            elif what == m.STOP:
                break
    finally:
        child.stop()
        connection.close()
