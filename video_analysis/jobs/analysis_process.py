"""The analysis engine in a child process: the model and every job's work run there, not in the web process.

Why: request threads and job threads in one process share one interpreter
lock. A decode-heavy job (64 frames a second of video) held it often enough
to push status polls from 3 ms to 14-20 ms at p99. In a child process the
job's decoding, the model and their Python work compete with the web
process for cores only, never for its interpreter; and the web process
never loads mlx.

`AnalysisProcess` is the parent's handle: it starts the child with the
`spawn` method (no fork of a process that has threads), mirrors the model's
state (`state()`, `loaded`, `load_error`, `name`, `device`) for /health and admission,
and runs jobs: `run(job_id, kind, path, options, progress, cancel)` blocks the
calling thread until the child answers, with progress coming back as the
child reports it; cancelling the job's token reaches the child at once, and
the job there stops within one token or one frame. Jobs handed over while
the model loads wait for it, and fail with the reason if it does not load.
If the child dies (killed, out of memory), its running jobs fail with a
sentence and a new child is started; queued jobs wait for it to load. A
load that failed only because the Hugging Face Hub could not be reached is
tried again by a new child after a back-off (`retry_seconds`, doubling, at
most every 5 minutes); any other load error is final. The child is
`analysis_child`, the pipe to it `child_connection`, and the messages
between them are described in `messages`.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from video_analysis.cancellation import CancelToken, Cancelled
from video_analysis.engine.parameters import AnalysisKind
from video_analysis.jobs import messages as m
from video_analysis.jobs.child_connection import ChildConnection
from video_analysis.model.errors import ModelLoadError, model_display_name

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
Answered = Callable[[int, str], None]
Rendering = Callable[[float, str], None]
# How often a job waiting for the model looks at its cancel token and at shutdown.
_WAIT_STEP_SECONDS = 0.25
# The longest pause before starting a child again after children died while loading.
_MAX_RESTART_DELAY = 60
# The longest pause between two tries to load a model the Hugging Face Hub did not serve.
_MAX_RETRY_DELAY = 300.0
# How long a stopping child may take to cancel its jobs and release the model before it is killed.
_STOP_SECONDS = 3.0
_DIED = ("The analysis process stopped unexpectedly (it may have run out of memory); "
         "the model is being loaded again. Try again in a minute.")


class AnalysisFailed(Exception):
    """A job ended with an error; `kind` is "video", "model" or "internal" and the message is for a person."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class ModelUnavailable(Exception):
    """The model is loading, failed to load, or the analysis process is stopping; the message says which."""


def result_of(outcome: tuple) -> dict:
    """A job's outcome, (DONE, result) or (ERROR, kind, sentence), as its result or the exception it stands for."""
    if outcome[0] == m.DONE:
        return outcome[1]
    _, error_kind, message = outcome
    if error_kind == m.CANCELLED:
        raise Cancelled(message)
    raise AnalysisFailed(error_kind, message)


@dataclass(frozen=True)
class ModelState:
    """The model as /health and admission see it, taken at one moment."""

    loaded: bool
    load_error: Optional[str]  # why it is not loaded: final, or until `next_attempt_at`
    next_attempt_at: Optional[float]  # time.time() of the next try to load it, while one is due
    failed_attempts: int  # loads in a row that failed because the Hub could not be reached
    last_error: Optional[str]  # the reason of the last of those, kept while the next try runs


@dataclass
class _Waiter:
    progress: Optional[Progress]
    answered: Optional[Answered] = None
    rendering: Optional[Rendering] = None
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Optional[tuple] = None  # (m.DONE, result) or (m.ERROR, kind, message)


class AnalysisProcess:
    """The parent's handle on the child that holds the model; every method may be called from any thread."""

    def __init__(self, model: str, retry_seconds: float = 15.0):
        """`retry_seconds`: the first pause before loading again after the Hub could not be reached."""
        self.model_ref = model
        self.name = model_display_name(model)
        self.device = "cpu"
        self.load_error: Optional[str] = None
        self.retry_seconds = retry_seconds
        self._next_attempt_at: Optional[float] = None
        self._failed_loads = 0  # in a row, for want of the Hub
        self._last_hub_error: Optional[str] = None
        self._retiring: Optional[ChildConnection] = None  # a child told to exit so that another tries again
        self._lock = threading.Lock()
        self._loaded = threading.Event()
        self._jobs: Dict[str, _Waiter] = {}
        self._calls: Dict[int, _Waiter] = {}
        self._call_ids = itertools.count(1)
        self._closed = False
        self._stopped = threading.Event()  # set by close(): cuts a restart's back-off short
        self._failed_starts = 0  # children in a row that died before loading the model
        self._child: Optional[ChildConnection] = None
        self._start()

    # -- state, for /health and admission ----------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._loaded.is_set() and self.load_error is None

    def state(self) -> ModelState:
        with self._lock:
            return ModelState(self._loaded.is_set() and self.load_error is None, self.load_error,
                              self._next_attempt_at, self._failed_loads, self._last_hub_error)

    @property
    def pid(self) -> Optional[int]:
        child = self._child
        return child.process.pid if child is not None else None

    def alive(self) -> bool:
        child = self._child
        return child is not None and child.process.is_alive()

    def wait_until_loaded(self, timeout: Optional[float] = None) -> None:
        """Block until the model is ready; raise ModelLoadError if it failed or is still loading."""
        if not self._loaded.wait(timeout):
            raise ModelLoadError(f"Model '{self.name}' is still loading.")
        if self.load_error:
            raise ModelLoadError(self.load_error)

    def prompt_problem(self, *args, **kwargs):
        """`ModelRunner.prompt_problem` in the child: (field, sentence) when the prompts do not fit, else None."""
        return self.call("prompt_problem", *args, **kwargs)

    # -- jobs ------------------------------------------------------------------------------------------
    def run(self, job_id: str, kind: "AnalysisKind | str", video_path: str, options: Dict[str, Any],
            progress: Optional[Progress] = None, cancel: Optional[CancelToken] = None,
            answered: Optional[Answered] = None, started: Optional[Callable[[], None]] = None,
            through_retries: bool = False, rendering: Optional[Rendering] = None) -> dict:
        """Analyse one video in the child and return its result object.

        Waits while the model loads. Raises Cancelled (once `cancel` is cancelled), AnalysisFailed
        or ModelUnavailable (the model did not load: the reason); ValueError for an unknown kind.
        `started` is called once the model is ready, before the job is handed over; `progress` and
        `answered` (each segment's answer) and `rendering` (the outputs after them) from the parent's reader
        thread as the child reports.
        `through_retries`: while a load that failed is to be tried again (the Hub could not be
        reached), wait for that try rather than fail: for jobs queued again after a restart, which
        were accepted when the model worked and may have finished segments behind them.
        """
        kind = AnalysisKind(kind)
        cancel = cancel or CancelToken()
        self._wait_for_model(cancel, through_retries)
        if started is not None:
            started()
        waiter = _Waiter(progress, answered, rendering)
        with self._lock:
            if self._closed:
                raise ModelUnavailable("The analysis process is shutting down.")
            self._jobs[job_id] = waiter
        try:
            self._send((m.RUN, job_id, kind.value, video_path, options))
            # After RUN: a token cancelled before the child heard of the job is forwarded now.
            cancel.when_cancelled(lambda: self._cancel_in_child(job_id))
            waiter.done.wait()
        finally:
            with self._lock:
                self._jobs.pop(job_id, None)
        return result_of(waiter.outcome)

    def _wait_for_model(self, cancel: CancelToken, through_retries: bool = False) -> None:
        """Wait while a child (re)loads the model: a queued job outlives a crash of the child before it."""
        while not self._loaded.wait(_WAIT_STEP_SECONDS) or (through_retries and self.state().next_attempt_at):
            if self._closed:
                raise ModelUnavailable("The analysis process is shutting down.")
            if cancel.cancelled:
                raise Cancelled("Cancelled while the model was loading.")
            if self._loaded.is_set():  # between two tries: the next one clears it
                cancel.wait(_WAIT_STEP_SECONDS)
        if self.load_error:
            raise ModelUnavailable(self.load_error)

    def _cancel_in_child(self, job_id: str) -> None:
        """Tell the child to stop the job (within one token or one frame); nothing for a job already over."""
        with self._lock:
            known = job_id in self._jobs
        if known:
            self._send((m.CANCEL, job_id), quiet=True)

    def call(self, method: str, *args, timeout: float = 10.0, **kwargs):
        """Ask the child one of its queries (`messages.QUERIES`) and return its answer."""
        waiter = _Waiter(None)
        call_id = next(self._call_ids)
        with self._lock:
            self._calls[call_id] = waiter
        try:
            self._send((m.CALL, call_id, method, args, kwargs))
            if not waiter.done.wait(timeout):
                raise ModelUnavailable("The analysis process did not answer in time.")
        finally:
            with self._lock:
                self._calls.pop(call_id, None)
        if waiter.outcome[0] == m.ERROR:
            raise ModelUnavailable(waiter.outcome[2])
        return waiter.outcome[1]

    def close(self, timeout: float = _STOP_SECONDS) -> None:
        """Cancel every job, stop the child and wait for it (killing it past `timeout`); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            child = self._child
        self._stopped.set()
        self._send((m.STOP,), quiet=True)
        if child is not None:
            process = child.process
            process.join(timeout)
            if process.is_alive():
                log.warning("The analysis process did not stop in %.0f s; killing it", timeout)
                process.kill()
                process.join(timeout)
        self._fail_everything(m.CANCELLED, "The server is shutting down.")

    # -- plumbing ---------------------------------------------------------------------------------------
    def _start(self) -> None:
        self._loaded.clear()
        self.load_error = None
        self._next_attempt_at = None
        self._retiring = None
        self._child = ChildConnection(self.model_ref, self._dispatch, self._child_exited)

    def _retry_delay(self) -> float:
        """15, 30, 60 ... s (from `retry_seconds`), at most _MAX_RETRY_DELAY (or `retry_seconds` if longer)."""
        return min(max(self.retry_seconds, _MAX_RETRY_DELAY), self.retry_seconds * 2 ** (self._failed_loads - 1))

    def _send(self, message: tuple, quiet: bool = False) -> None:
        """Queue a message for the child, never waiting on it; ModelUnavailable (unless `quiet`) when the
        child has stopped reading."""
        if not self._child.send(message) and not quiet:
            raise ModelUnavailable("The analysis process is not taking work right now; try again in a minute.")

    def _child_exited(self, child: ChildConnection) -> None:
        """On the child's exit (after its pipe closed): one told to exit because the Hub could not be reached
        is followed by a new try when it is due; after a death, its jobs fail and another child starts."""
        with self._lock:
            if self._closed or child is not self._child:
                return
            retry_at = self._next_attempt_at if child is self._retiring else None
        if retry_at is not None:
            # Meanwhile load_error stands: uploads are refused until the try, jobs still queued fail with it.
            if self._stopped.wait(max(0.0, retry_at - time.time())):
                return
        else:
            if not self._loaded.is_set():
                self._failed_starts += 1  # it died before it had loaded the model
            self._loaded.clear()  # from now on uploads are told the model is loading; queued jobs wait
            self._fail_everything(m.MODEL, _DIED)
            # A child that keeps dying while it loads is started again less and less often (2, 4, ... 60 s):
            # a model the child reports it cannot load is a load_error instead, and the child stays up.
            delay = min(_MAX_RESTART_DELAY, 2 ** self._failed_starts) if self._failed_starts else 0
            log.error("The analysis process exited unexpectedly (exit code %s); starting a new one%s",
                      child.process.exitcode, f" in {delay} s" if delay else "")
            if delay and self._stopped.wait(delay):
                return
        with self._lock:
            if self._closed:
                return
            self._start()

    def _dispatch(self, message: tuple) -> None:
        what = message[0]
        if what == m.LOADED:
            self._loaded_or_not(message[1])
            return
        table = self._calls if what == m.REPLY else self._jobs
        with self._lock:
            waiter = table.get(message[1])
        if waiter is None:
            return  # a job already given up on, or a call that timed out
        if what == m.PROGRESS:
            if waiter.progress is not None:
                waiter.progress(*message[2:])
            return
        if what == m.ANSWER:
            if waiter.answered is not None:
                waiter.answered(*message[2:])
            return
        if what == m.RENDERING:
            if waiter.rendering is not None:
                waiter.rendering(*message[2:])
            return
        if what == m.REPLY:
            ok, value = message[2], message[3]
            waiter.outcome = (m.DONE, value) if ok else (m.ERROR, m.INTERNAL, value)
        elif what == m.DONE:
            waiter.outcome = (m.DONE, message[2])
        else:
            waiter.outcome = (m.ERROR, message[2], message[3])
        waiter.done.set()

    def _loaded_or_not(self, info: dict) -> None:
        """The child's LOADED: ready, failed for good, or failed for want of the Hub (then: try again later)."""
        error = info["load_error"]
        retry = bool(error) and bool(info.get("hub_unreachable"))
        with self._lock:
            self.device = info["device"]
            self.load_error = error
            self._failed_starts = 0
            if retry:
                self._failed_loads += 1
                self._last_hub_error = error
                delay = self._retry_delay()
                self._next_attempt_at = time.time() + delay
                self._retiring = self._child
            else:
                self._failed_loads, self._last_hub_error = 0, None
            self._loaded.set()  # jobs waiting for the model run now, or fail with load_error
        if retry:
            log.warning("%s Loading it again in %.0f s.", error, delay)
            # The child exits; _child_exited starts the next try when it is due, in a fresh process.
            self._send((m.STOP,), quiet=True)

    def _fail_everything(self, kind: str, sentence: str) -> None:
        with self._lock:
            waiters = list(self._jobs.values()) + list(self._calls.values())
        for waiter in waiters:
            if not waiter.done.is_set():
                waiter.outcome = (m.ERROR, kind, sentence)
                waiter.done.set()
