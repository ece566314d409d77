"""The analysis engine in a child process: the model and every job's work run there, not in the web process.

Why: request threads and job threads in one process share one interpreter
lock. A decode-heavy job (64 frames a second of video) held it often enough
to push status polls from 3 ms to 14-20 ms at p99. In a child process the
job's decoding, the model and their Python work compete with the web
process for cores only, never for its interpreter.

The parent (`AnalysisProcess`) starts the child with the `spawn` method (no
fork of a process that has threads), mirrors the model's state (`loaded`,
`load_error`, `name`, `device`) for /health and admission, and runs jobs:
`run(job_id, kind, path, options, progress)` blocks the calling thread until
the child answers, with progress coming back as the child reports it, and
`cancel(job_id)` reaches the running job within one token or one frame. If
the child dies (killed, out of memory), its running jobs fail with a
sentence and a new child is started; queued jobs wait for it to load.

The child (`_child_main`) holds one `VideoHighlightGenerator` and runs each
job on a thread of its own; how many run at once is the parent's business
(`JOB_WORKERS` job threads wait on it). The message shapes are the contract
a Redis/RQ worker can reuse: a job is (id, kind, path, options), it reports
progress (done, total, message), and it ends done (result) or with an error
kind (cancelled, video, model, internal) and a sentence.
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing
import queue
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from video_analysis.cancellation import Cancelled
from video_analysis.config import Config

log = logging.getLogger(__name__)

ANALYSIS_KINDS = ("highlights", "workout")
Progress = Callable[[int, int, str], None]
# How often a job waiting for the model looks at its cancel event and at shutdown.
_WAIT_STEP_SECONDS = 0.25
# The longest pause before starting a child again after children died while loading.
_MAX_RESTART_DELAY = 60
# Messages waiting for a child that does not read them before callers are told it is not taking work.
_OUTBOX_LIMIT = 256
# How long a stopping child may take to cancel its jobs and release the model before it is killed.
_STOP_SECONDS = 3.0
_DIED = ("The analysis process stopped unexpectedly (it may have run out of memory); "
         "the model is being loaded again. Try again in a minute.")


# What a person is told of a job that failed for a reason of ours (logged in the child with its traceback).
INTERNAL_ERROR = ("The analysis stopped because of an internal error; it has been logged. "
                  "Try again, or with another video.")


class AnalysisFailed(Exception):
    """A job ended with an error; `kind` is "video", "model" or "internal" and the message is for a person."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class ModelUnavailable(Exception):
    """The model is loading, failed to load, or the analysis process is stopping; the message says which."""


@dataclass
class _Waiter:
    progress: Optional[Progress]
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Optional[tuple] = None  # ("done", result) or ("error", kind, message)


class AnalysisProcess:
    """The parent's handle on the child that holds the model; every method may be called from any thread."""

    def __init__(self, model: str):
        from video_analysis.model.runner import model_display_name

        self.model_ref = model
        self.name = model_display_name(model)
        self.device = "cpu"
        self.load_error: Optional[str] = None
        self._lock = threading.Lock()
        self._loaded = threading.Event()
        self._jobs: Dict[str, _Waiter] = {}
        self._calls: Dict[int, _Waiter] = {}
        self._call_ids = itertools.count(1)
        self._closed = False
        self._stopped = threading.Event()  # set by close(): cuts a restart's back-off short
        self._failed_starts = 0  # children in a row that died before loading the model
        self._process = None
        self._outbox: Optional["queue.Queue[Optional[tuple]]"] = None
        self.restarts = 0
        self._start()

    # -- state, for /health and admission ----------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._loaded.is_set() and self.load_error is None

    @property
    def pid(self) -> Optional[int]:
        process = self._process
        return process.pid if process is not None else None

    def alive(self) -> bool:
        process = self._process
        return process is not None and process.is_alive()

    def wait_until_loaded(self, timeout: Optional[float] = None) -> None:
        """Block until the model is ready; raise ModelLoadError if it failed or is still loading."""
        from video_analysis.model.runner import ModelLoadError

        if not self._loaded.wait(timeout):
            raise ModelLoadError(f"Model '{self.name}' is still loading.")
        if self.load_error:
            raise ModelLoadError(self.load_error)

    @property
    def completed_generations(self) -> int:
        """Finished (not cancelled) generations in the current child, for tests."""
        return self.call("completed_generations")

    def prompt_problem(self, *args, **kwargs):
        """`ModelRunner.prompt_problem` in the child: (field, sentence) when the prompts do not fit, else None."""
        return self.call("prompt_problem", *args, **kwargs)

    # -- jobs ------------------------------------------------------------------------------------------
    def run(self, job_id: str, kind: str, video_path: str, options: Dict[str, Any],
            progress: Optional[Progress] = None, cancel: Optional[threading.Event] = None) -> dict:
        """Analyse one video in the child and return its result object.

        Raises Cancelled, AnalysisFailed or ModelUnavailable. `progress` is
        called from the parent's reader thread as the child reports.
        """
        if kind not in ANALYSIS_KINDS:
            raise ValueError(f"unknown analysis kind {kind!r}")
        self._wait_for_model(cancel)
        waiter = _Waiter(progress)
        with self._lock:
            if self._closed:
                raise ModelUnavailable("The analysis process is shutting down.")
            self._jobs[job_id] = waiter
        try:
            self._send(("run", job_id, kind, video_path, options))
            if cancel is not None and cancel.is_set():  # cancelled before the child heard of the job
                self.cancel(job_id)
            waiter.done.wait()
        finally:
            with self._lock:
                self._jobs.pop(job_id, None)
        outcome = waiter.outcome
        if outcome[0] == "done":
            return outcome[1]
        _, error_kind, message = outcome
        if error_kind == "cancelled":
            raise Cancelled(message)
        raise AnalysisFailed(error_kind, message)

    def _wait_for_model(self, cancel: Optional[threading.Event]) -> None:
        """Wait while a child (re)loads the model: a queued job outlives a crash of the child before it."""
        while not self._loaded.wait(_WAIT_STEP_SECONDS):
            if self._closed:
                raise ModelUnavailable("The analysis process is shutting down.")
            if cancel is not None and cancel.is_set():
                raise Cancelled("Cancelled while the model was loading.")
        if self.load_error:
            raise ModelUnavailable(self.load_error)

    def cancel(self, job_id: str) -> None:
        """Stop the job in the child within one token or one frame; nothing happens for an unknown id."""
        with self._lock:
            known = job_id in self._jobs
        if known:
            self._send(("cancel", job_id), quiet=True)

    def call(self, method: str, *args, timeout: float = 10.0, **kwargs):
        """Call one of the child's query methods (see `_ChildService.calls`) and return its answer."""
        waiter = _Waiter(None)
        call_id = next(self._call_ids)
        with self._lock:
            self._calls[call_id] = waiter
        try:
            self._send(("call", call_id, method, args, kwargs))
            if not waiter.done.wait(timeout):
                raise ModelUnavailable("The analysis process did not answer in time.")
        finally:
            with self._lock:
                self._calls.pop(call_id, None)
        if waiter.outcome[0] == "error":
            raise ModelUnavailable(waiter.outcome[2])
        return waiter.outcome[1]

    def close(self, timeout: float = _STOP_SECONDS) -> None:
        """Cancel every job, stop the child and wait for it (killing it past `timeout`); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            process = self._process
        self._stopped.set()
        self._send(("stop",), quiet=True)
        if process is not None:
            process.join(timeout)
            if process.is_alive():
                log.warning("The analysis process did not stop in %.0f s; killing it", timeout)
                process.kill()
                process.join(timeout)
        self._fail_everything("cancelled", "The server is shutting down.")

    # -- plumbing ---------------------------------------------------------------------------------------
    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe(duplex=True)
        process = context.Process(target=_child_main, args=(child_end, self.model_ref),
                                  name="analysis", daemon=True)
        self._loaded.clear()
        self.load_error = None
        process.start()
        child_end.close()
        outbox: "queue.Queue[Optional[tuple]]" = queue.Queue(maxsize=_OUTBOX_LIMIT)
        self._process, self._outbox = process, outbox
        threading.Thread(target=self._read, args=(process, parent_end, outbox), name="analysis-reader",
                         daemon=True).start()
        threading.Thread(target=_write, args=(outbox, parent_end), name="analysis-writer", daemon=True).start()

    def _send(self, message: tuple, quiet: bool = False) -> None:
        """Queue a message for the child; never waits on it.

        The writer thread does the writing: a child that stops reading (wedged,
        stopped) fills the pipe, and a caller blocked there would hold a request
        thread and its queue slot for good. Past _OUTBOX_LIMIT unsent messages
        the child is taken as not taking work.
        """
        try:
            self._outbox.put_nowait(message)
        except queue.Full:
            if not quiet:
                raise ModelUnavailable("The analysis process is not taking work right now; try again in a "
                                       "minute.") from None

    def _read(self, process, connection, outbox: "queue.Queue[Optional[tuple]]") -> None:
        """Hand the child's messages to their waiters; on the child's death fail its jobs and start another."""
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                break
            try:
                self._dispatch(message)
            except Exception:  # noqa: BLE001  (a bad progress callback must not stop the reader)
                log.exception("Handling %r from the analysis process failed", message[:2])
        connection.close()
        try:
            outbox.put_nowait(None)  # this child's writer stops (a full outbox: its send fails instead)
        except queue.Full:
            pass
        process.join(_STOP_SECONDS)
        with self._lock:
            if self._closed:
                return
        if not self._loaded.is_set():
            self._failed_starts += 1  # it died before it had loaded the model
        self._loaded.clear()  # from now on uploads are told the model is loading; queued jobs wait
        self._fail_everything("model", _DIED)
        # A child that keeps dying while it loads is started again less and less often (2, 4, ... 60 s):
        # a model the child reports it cannot load is a load_error instead, and the child stays up.
        delay = min(_MAX_RESTART_DELAY, 2 ** self._failed_starts) if self._failed_starts else 0
        log.error("The analysis process exited unexpectedly (exit code %s); starting a new one%s",
                  process.exitcode, f" in {delay} s" if delay else "")
        if delay and self._stopped.wait(delay):
            return
        with self._lock:
            if self._closed:
                return
            self.restarts += 1
            self._start()

    def _dispatch(self, message: tuple) -> None:
        what = message[0]
        if what == "loaded":
            info = message[1]
            self.device = info["device"]
            self.load_error = info["load_error"]
            self._failed_starts = 0
            self._loaded.set()
            return
        table, key = (self._calls, message[1]) if what == "reply" else (self._jobs, message[1])
        with self._lock:
            waiter = table.get(key)
        if waiter is None:
            return  # a job already given up on, or a call that timed out
        if what == "progress":
            if waiter.progress is not None:
                waiter.progress(*message[2:])
            return
        if what == "reply":
            ok, value = message[2], message[3]
            waiter.outcome = ("done", value) if ok else ("error", "internal", value)
        elif what == "done":
            waiter.outcome = ("done", message[2])
        else:
            waiter.outcome = ("error", message[2], message[3])
        waiter.done.set()

    def _fail_everything(self, kind: str, sentence: str) -> None:
        with self._lock:
            waiters = list(self._jobs.values()) + list(self._calls.values())
        for waiter in waiters:
            if not waiter.done.is_set():
                waiter.outcome = ("error", kind, sentence)
                waiter.done.set()


def _write(outbox: "queue.Queue[Optional[tuple]]", connection) -> None:
    """The parent's writer thread for one child: sends what `_send` queued until the pipe breaks."""
    while True:
        message = outbox.get()
        if message is None:
            return
        try:
            connection.send(message)
        except (OSError, ValueError):
            return  # the child is gone: the reader sees it and starts another (with another writer)


# -- the child ------------------------------------------------------------------------------------------
class _ChildService:
    """What runs in the child: the engine, a thread per job, and the answers sent back."""

    def __init__(self, connection, model_ref: str):
        from video_analysis.engine.analyzer import VideoHighlightGenerator

        self.connection = connection
        self.engine = VideoHighlightGenerator(model_ref)
        self.cancels: Dict[str, threading.Event] = {}
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
        except Exception:  # noqa: BLE001  (load_error says why)
            pass
        self.send(("loaded", {"device": runner.device, "load_error": runner.load_error}))

    def calls(self) -> Dict[str, Callable]:
        runner = self.engine.runner
        calls = {"completed_generations": lambda: runner.completed_generations}
        for name in ("prompt_problem",):
            method = getattr(runner, name, None)
            if method is not None:
                calls[name] = method
        return calls

    def start_job(self, job_id: str, kind: str, video_path: str, options: dict) -> None:
        cancel = threading.Event()
        with self.lock:
            self.cancels[job_id] = cancel
        threading.Thread(target=self._job, args=(job_id, kind, video_path, options, cancel),
                         name=f"job-{job_id[:8]}", daemon=True).start()

    def _job(self, job_id: str, kind: str, video_path: str, options: dict, cancel: threading.Event) -> None:
        from video_analysis.model.runner import ModelLoadError, RunnerClosed
        from video_analysis.video.frames import VideoError

        def progress(done: int, total: int, message: str) -> None:
            self.send(("progress", job_id, done, total, message))

        analyse = self.engine.analyze_workout if kind == "workout" else self.engine.generate_highlights
        try:
            result = analyse(video_path, progress=progress, cancel=cancel, **options)
            outcome = ("done", job_id, result)
        except Cancelled as error:
            outcome = ("error", job_id, "cancelled", str(error))
        except VideoError as error:
            outcome = ("error", job_id, "video", str(error))
        except (ModelLoadError, RunnerClosed) as error:
            outcome = ("error", job_id, "model", str(error))
        except Exception:  # noqa: BLE001  (one job's failure must not reach the others)
            log.exception("Job %s failed", job_id)
            outcome = ("error", job_id, "internal", INTERNAL_ERROR)
        finally:
            with self.lock:
                self.cancels.pop(job_id, None)
        self.send(outcome)

    def cancel(self, job_id: str) -> None:
        with self.lock:
            event = self.cancels.get(job_id)
        if event is not None:
            event.set()

    def answer(self, call_id: int, method: str, args: tuple, kwargs: dict) -> None:
        function = self.calls().get(method)
        try:
            if function is None:
                raise LookupError(f"unknown call {method!r}")
            self.send(("reply", call_id, True, function(*args, **kwargs)))
        except Exception as error:  # noqa: BLE001  (the caller gets the reason)
            log.exception("Call %s failed", method)
            self.send(("reply", call_id, False, str(error) or type(error).__name__))

    def stop(self) -> None:
        with self.lock:
            events = list(self.cancels.values())
        for event in events:
            event.set()
        self.engine.close()


def _child_main(connection, model_ref: str) -> None:
    logging.basicConfig(level=Config.from_env().LOG_LEVEL.upper(),
                        format="%(asctime)s %(levelname)s analysis[%(process)d] %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole terminal; the parent decides
    service = _ChildService(connection, model_ref)
    threading.Thread(target=service.report_loaded, name="report-loaded", daemon=True).start()
    try:
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                break  # the parent is gone
            what = message[0]
            if what == "run":
                service.start_job(*message[1:])
            elif what == "cancel":
                service.cancel(message[1])
            elif what == "call":
                service.answer(*message[1:])
            elif what == "stop":
                break
    finally:
        service.stop()
        connection.close()
