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
from typing import Dict, Optional, Set

from video_analysis.engine.analysis import count_of
from video_analysis.jobs.analysis_process import AnalysisProcess
from video_analysis.jobs.job_runner import Job, JobRunner
from video_analysis.jobs.messages import INTERNAL
from video_analysis.jobs.sessions import ProcessingStatus, SessionManager, SessionNotFound, SessionState
from video_analysis.video import VideoInfo

log = logging.getLogger(__name__)

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


class JobQueue:
    def __init__(self, analysis: AnalysisProcess, sessions: SessionManager, workers: int = 2, max_queued: int = 16,
                 **runner_options):
        """`runner_options`: JobRunner's (the reel's limit, who counts the outputs' bytes)."""
        self.analysis = analysis
        self.sessions = sessions
        self.max_queued = max_queued
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job")
        self.runner = JobRunner(analysis, sessions, **runner_options)
        self._jobs: Dict[str, Job] = {}  # unfinished jobs, pending or running
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
        job = Job(session_id, video_path, video_info)
        with self._lock:
            if slot not in self._held:
                raise ValueError("this slot was already used or given back")
            self._held.remove(slot)
        self._enqueue(job)

    def _enqueue(self, job: Job) -> None:
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
                self.runner.finish(state.session_id, ProcessingStatus.FAILED, "The analysis failed", _VIDEO_LOST,
                                   INTERNAL)
                continue
            info = VideoInfo(**state.video_info) if state.video_info else None
            job = Job(state.session_id, state.video_path, info, restored=True,
                       resumes_running=state.status == ProcessingStatus.PROCESSING)
            if state.status == ProcessingStatus.PROCESSING:
                done = len(self.sessions.answers(state.session_id))
                self.runner.update(job, message=f"Waiting to resume after a restart ({done} of "
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

    @property
    def pause_seconds(self) -> float:
        """How long a job paused by a refused write waits before it tries again (tests shorten it)."""
        return self.runner.pause_seconds

    @pause_seconds.setter
    def pause_seconds(self, seconds: float) -> None:
        self.runner.pause_seconds = seconds

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

    def _stop(self, job: Job) -> None:
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
            self.runner.closed = True
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
    def _run(self, job: Job) -> None:
        with self._lock:
            if self._jobs.get(job.session_id) is not job:
                return  # cancelled while pending: never starts
            job.started = True
        try:
            self.runner.run(job)
        finally:
            with self._lock:
                self._jobs.pop(job.session_id, None)
            job.done.set()
