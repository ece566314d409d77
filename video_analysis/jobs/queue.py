"""Background analysis jobs: a bounded queue in front of the analysis process.

`JOB_WORKERS` threads each hand one job at a time to the child process that
holds the model (`analysis_process`) and wait for it there, applying its
progress to the session as it comes. The number of unfinished jobs (pending
or running, `_jobs`), plus uploads being received (`_held` slots), is capped
at `MAX_QUEUED_JOBS`: a slot is reserved before an upload is read, so a full
queue is refused before any byte is stored. /health reports the same
`_jobs` (`counts`): a cancelled job still running holds its slot and shows
as processing until it has stopped; a pending one gives its slot back at once.

`cancel` is the one call that cancels: it marks the session cancelled and
cancels the job's token, which the analysis process forwards to the child.
Async uploads and legacy /analyze requests both become jobs here.

Each segment's answer is kept with the session as it comes (one write with
the progress it makes). After a restart `resume_unfinished` queues the jobs
that had not ended again, running ones first: a job that was running
starts after its last kept answer, so no segment is sent to the model twice.
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, Optional, Set

from video_analysis.cancellation import CancelToken, Cancelled
from video_analysis.engine.analysis import count_of
from video_analysis.engine.kinds import analysis_class
from video_analysis.jobs.analysis_process import AnalysisFailed, AnalysisProcess, ModelUnavailable
from video_analysis.jobs.messages import INTERNAL, INTERNAL_ERROR, MODEL
from video_analysis.jobs.sessions import ProcessingStatus, SessionManager, SessionNotFound, SessionState, StateNotSaved
from video_analysis.video import VideoInfo

log = logging.getLogger(__name__)

_NOT_SAVED = "not saved"  # `stopped_because` when the database refused a write: the job pauses
_PAUSED = ("Paused: the server's disk is full or not writable, so the analysis's progress cannot be saved. It goes on "
           "by itself, from its last saved segment, once there is room again.")
# How long a paused job waits before it tries to save again.
PAUSE_SECONDS = 30.0
_VIDEO_LOST = ("The uploaded video was no longer on the server when it restarted (DATA_DIR was emptied), so the "
               "analysis cannot go on. Upload the video again.")


class QueueFull(Exception):
    """MAX_QUEUED_JOBS jobs (and uploads being received) are already waiting or running."""


class ShuttingDown(Exception):
    """The service is stopping and takes no new jobs."""


class Slot:
    """A place in the queue held for one upload while it is received: it becomes the job, or is given back.

    Only a token: which slots are held is the queue's to know.
    """

    __slots__ = ()


@dataclass
class _Job:
    session_id: str
    video_path: str
    video_info: Optional[VideoInfo] = None  # what intake's probe found: the engine need not probe again
    started: bool = False
    cancel: CancelToken = field(default_factory=CancelToken)
    done: threading.Event = field(default_factory=threading.Event)
    stopped_because: Optional[str] = None  # keeping its progress failed, so the job stopped: why, for its client
    restored: bool = False  # queued again after a restart: the model's retries are waited through
    resumes_running: bool = False  # was running before the restart: /health counts it as processing, as its status says
    resumed_because: str = "after a restart"  # what its status says when it goes on after its last kept answer


class JobQueue:
    def __init__(self, analysis: AnalysisProcess, sessions: SessionManager, workers: int = 2, max_queued: int = 16):
        self.analysis = analysis
        self.sessions = sessions
        self.max_queued = max_queued
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job")
        self.pause_seconds = PAUSE_SECONDS
        self._jobs: Dict[str, _Job] = {}  # unfinished jobs, pending or running
        self._held: Set[Slot] = set()  # slots of uploads still being received
        self._lock = threading.Lock()
        self._closed = False

    # -- admission -------------------------------------------------------------
    def reserve(self) -> Slot:
        """A slot for an upload about to be received; QueueFull or ShuttingDown when there is none."""
        with self._lock:
            if self._closed:
                raise ShuttingDown()
            if len(self._held) + len(self._jobs) >= self.max_queued:
                raise QueueFull()
            slot = Slot()
            self._held.add(slot)
        return slot

    def release(self, slot: Slot) -> None:
        """Give back a slot that did not become a job (the upload was refused); no-op once used."""
        with self._lock:
            self._held.discard(slot)

    def submit(self, slot: Slot, session_id: str, video_path: str, video_info: Optional[VideoInfo] = None) -> None:
        """Start (or queue) the session's job in `slot`'s place; the session must exist as `pending`."""
        job = _Job(session_id, video_path, video_info)
        with self._lock:
            if slot not in self._held:
                raise ValueError("this slot was already used or given back")
            self._held.remove(slot)
        self._enqueue(job)

    def _enqueue(self, job: _Job) -> None:
        with self._lock:
            self._jobs[job.session_id] = job
        self._executor.submit(self._run, job)

    def resume_unfinished(self) -> int:
        """After a restart: queue again the jobs of sessions that had not ended; returns how many.

        Running ones first, then pending ones in the order they came. Admission is not asked again:
        these were admitted before the restart.
        """
        resumed = 0
        for state in self.sessions.unfinished():
            if not state.video_path or not os.path.isfile(state.video_path):
                self._finish(state.session_id, ProcessingStatus.FAILED, "The analysis failed", _VIDEO_LOST, INTERNAL)
                continue
            info = VideoInfo(**state.video_info) if state.video_info else None
            job = _Job(state.session_id, state.video_path, info, restored=True,
                       resumes_running=state.status == ProcessingStatus.PROCESSING)
            if state.status == ProcessingStatus.PROCESSING:
                done = len(self.sessions.answers(state.session_id))
                self._update(job, message=f"Waiting to resume after a restart ({done} of "
                                          f"{count_of(state.segments_total or 0, 'segment')} done)")
            self._enqueue(job)
            resumed += 1
        if resumed:
            log.info("Queued %d unfinished job(s) again after a restart", resumed)
        return resumed

    def counts(self) -> Dict[str, int]:
        """Pending and running jobs: what admission counts too (besides uploads being received)."""
        with self._lock:
            running = sum(1 for job in self._jobs.values() if job.started or job.resumes_running)
            return {"pending": len(self._jobs) - running, "processing": running}

    # -- control ----------------------------------------------------------------
    def cancel(self, session_id: str, message: str = "Cancelled at your request") -> Optional[SessionState]:
        """Cancel the session and its job; returns the session as it now is (None when there is none).

        A session that has ended keeps its status. A pending job leaves the queue now (its slot
        is free at once); a running one stops within a token or a frame.
        """
        try:
            # The session first: the job, once stopped, must find it cancelled with this message.
            state = self.sessions.update(session_id, status=ProcessingStatus.CANCELLED, message=message)
        except SessionNotFound:
            state = None
        with self._lock:
            job = self._jobs.get(session_id)
        if job is not None:
            self._stop(job)
        return state

    def _stop(self, job: _Job) -> None:
        """Cancel the job's token; a pending one leaves the queue now (`_run` finds it gone) and is done."""
        with self._lock:
            if not job.started and self._jobs.get(job.session_id) is job:
                del self._jobs[job.session_id]
        job.cancel.cancel()
        if not job.started:
            job.done.set()

    def wait(self, session_id: str, timeout: Optional[float] = None) -> bool:
        """True once the session's job has finished (or when there is no job)."""
        with self._lock:
            job = self._jobs.get(session_id)
        return True if job is None else job.done.wait(timeout)

    def begin_shutdown(self) -> None:
        """Take no new jobs and stop every job: waiting requests are answered at once. Idempotent.

        A legacy request's job is cancelled (its client is answered now and gone after a restart); an
        async session is left as saved, pending or processing, and its job goes on after a restart.
        """
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
        for job in jobs:
            try:
                legacy = self.sessions.get(job.session_id, with_result=False).legacy
            except SessionNotFound:
                legacy = False
            if legacy:
                self.cancel(job.session_id, "Cancelled because the server is shutting down")
            else:
                self._stop(job)  # the session stays as saved

    def shutdown(self, timeout: float = 5.0) -> None:
        """`begin_shutdown`, then wait up to `timeout` for running jobs to stop (used at process exit)."""
        self.begin_shutdown()
        with self._lock:
            running = list(self._jobs.values())
        for job in running:
            job.done.wait(timeout)
        self._executor.shutdown(wait=False)

    # -- the work -----------------------------------------------------------------
    def _run(self, job: _Job) -> None:
        with self._lock:
            if self._jobs.get(job.session_id) is not job:
                return  # cancelled while pending: never starts
            job.started = True
        try:
            while self._analyse(job) and self._wait_for_room(job):
                pass
        finally:
            with self._lock:
                self._jobs.pop(job.session_id, None)
            job.done.set()

    def _wait_for_room(self, job: _Job) -> bool:
        """A paused job (its progress could not be saved) tries again after `pause_seconds`; False when it was
        cancelled or the service stops meanwhile (then it stays as saved, and goes on at the next start)."""
        try:
            self.sessions.update(job.session_id, saved=False, message=_PAUSED)  # the one change not on disk
        except SessionNotFound:
            return False
        job.stopped_because = None
        job.resumed_because = "once its progress could be saved again"
        job.cancel = CancelToken()
        return not job.cancel.wait(self.pause_seconds) and not self._closed

    def _analyse(self, job: _Job) -> bool:
        """Run the job once; True when it paused because the database refused a write."""
        sid = job.session_id
        try:
            before = self.sessions.get(sid, with_result=False)
            resume = self.sessions.answers(sid)
        except SessionNotFound:
            return False
        # A session that ran before goes on after its last kept answer, and says so.
        resumed_at = len(resume) + 1 if before.runs else None
        if resumed_at is not None:
            of = f" of {before.segments_total}" if before.segments_total else ""
            ready_message = f"Resumed {job.resumed_because} at segment {resumed_at}{of}"
        else:
            ready_message = "Reading the video"
        # A job that starts while the analysis process (re)loads the model waits for it, and says so.
        waiting = not self.analysis.loaded
        message = "Waiting for the model to load" if waiting else ready_message
        session = self._update(job, status=ProcessingStatus.PROCESSING, current_step="reading", message=message,
                               progress=1, runs=before.runs + 1, resumed_at=resumed_at)
        if session is None:
            return job.stopped_because == _NOT_SAVED
        if session.status != ProcessingStatus.PROCESSING:
            return False
        total = [before.segments_total or 0]
        because = job.resumed_because

        def progress(done: int, segments: int, _message: str) -> None:
            total[0] = segments
            if done < segments and done + 1 == resumed_at:  # the resume's own message stays until an answer
                self._update(job, segments_done=done, segments_total=segments)
            else:
                self._update(job, **self._progress(done, segments, resumed_at, because))

        def started() -> None:  # the model is ready: the job goes to the analysis process now
            if waiting:
                self._update(job, message=ready_message)

        def answered(position: int, answer: str) -> None:
            self._update(job, answer=(position, answer), **self._progress(position + 1, total[0], resumed_at, because))

        options = dict(session.params, video_name=session.video_name, video_info=job.video_info, resume=resume)
        try:
            analysis = analysis_class(session.analysis_type)
            result = self.analysis.run(sid, analysis.kind, job.video_path, options, progress, job.cancel, answered,
                                       started, through_retries=job.restored)
        except Cancelled:
            if job.stopped_because == _NOT_SAVED:
                return True
            if self._closed and not session.legacy:
                return False  # stopped by the shutdown: left as saved, and resumed at the next start
            if job.stopped_because is not None:
                ended = self._finish(sid, ProcessingStatus.FAILED, "The analysis failed", job.stopped_because, INTERNAL)
            else:
                ended = self._finish(sid, ProcessingStatus.CANCELLED, "Cancelled")
        except AnalysisFailed as error:
            ended = self._finish(sid, ProcessingStatus.FAILED, "The analysis failed", str(error), error.kind)
        except ModelUnavailable as error:
            ended = self._finish(sid, ProcessingStatus.FAILED, "The analysis failed", str(error), MODEL)
        except Exception:  # noqa: BLE001  (one job's failure must not reach the others)
            log.exception("Job %s failed", sid)
            ended = self._finish(sid, ProcessingStatus.FAILED, "The analysis failed", INTERNAL_ERROR, INTERNAL)
        else:
            ended = self._finish(sid, ProcessingStatus.COMPLETED, analysis.summary(result), result=result)
        # An end the database refused pauses the job like any refused write: the next run has every answer
        # kept, asks the model nothing and only writes the end.
        return not ended

    @staticmethod
    def _progress(done: int, total: int, resumed_at: Optional[int], because: str) -> dict:
        """What the session shows with `done` of `total` segments answered."""
        if done < total:
            step, message = "analyzing", f"Analyzing segment {done + 1} of {total}"
            if resumed_at is not None:
                message += f" (resumed {because} at segment {resumed_at})"
        else:
            step, message = "ranking", "Putting the results together"
        return dict(current_step=step, message=message, segments_done=done, segments_total=total,
                    progress=1 + 98 * done / max(total, 1))

    def _update(self, job: _Job, answer: Optional[tuple] = None, **changes) -> Optional[SessionState]:
        """Change the job's session (keeping `answer` with it); None once the session is gone.

        A session cleaned up under the job's feet stops the job; so does a change that cannot be
        kept (the job then ends failed, saying why): a job that went on would lose its answers.
        """
        if job.stopped_because is not None:
            return None  # its last answer was not kept: nothing after it may say otherwise
        try:
            if answer is None:
                return self.sessions.update(job.session_id, **changes)
            return self.sessions.record_answer(job.session_id, *answer, **changes)
        except SessionNotFound:
            pass
        except StateNotSaved:
            job.stopped_because = _NOT_SAVED
        except Exception:  # noqa: BLE001  (an answer out of order: a fault of ours, never to be hidden)
            log.exception("Job %s could not keep its progress", job.session_id)
            job.stopped_because = INTERNAL_ERROR
        job.cancel.cancel()
        return None

    def _finish(self, session_id: str, status: ProcessingStatus, message: str, error: Optional[str] = None,
                error_kind: Optional[str] = None, result: Optional[dict] = None) -> bool:
        """End the session; False when the database refused the write (then nothing changed)."""
        try:
            self.sessions.update(session_id, status=status, message=message, error=error, error_kind=error_kind,
                                 result=result)
        except SessionNotFound:
            pass
        except StateNotSaved:
            return False
        return True
