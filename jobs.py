"""Background analysis jobs: a bounded queue in front of a thread pool.

`JOB_WORKERS` threads run jobs; each reads its video's frames itself while
every model call goes through the engine's single model thread, so reading
one job's frames overlaps the model work of another. The number of unfinished
jobs is capped at `MAX_QUEUED_JOBS`: a slot is reserved before an upload is
read, so a full queue is refused before any byte is stored.

Async uploads and legacy /analyze requests both become jobs here.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, Optional

from cancellation import Cancelled
from model_runner import ModelLoadError, RunnerClosed
from session_manager import ProcessingStatus, SessionManager, SessionNotFound
from storage import Storage
from video_frames import VideoError, VideoInfo
from video_highlight_generator import VideoHighlightGenerator

log = logging.getLogger(__name__)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


class QueueFull(Exception):
    """MAX_QUEUED_JOBS jobs are already waiting or running."""


@dataclass
class Slot:
    """A reserved place in the queue; released if never used for a job."""

    queue: "JobQueue"
    used: bool = False
    released: bool = False

    def release(self) -> None:
        if not self.used and not self.released:
            self.released = True
            self.queue._release_slot()


@dataclass
class _Job:
    session_id: str
    video_path: str
    video_info: Optional[VideoInfo] = None  # what intake's probe found: the engine need not probe again
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class JobQueue:
    def __init__(self, engine: VideoHighlightGenerator, sessions: SessionManager, storage: Storage,
                 workers: int = 2, max_queued: int = 16):
        self.engine = engine
        self.sessions = sessions
        self.storage = storage
        self.max_queued = max_queued
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job")
        self._jobs: Dict[str, _Job] = {}
        self._unfinished = 0
        self._lock = threading.Lock()
        self._closed = False

    # -- admission -------------------------------------------------------------
    def reserve(self) -> Slot:
        with self._lock:
            if self._closed or self._unfinished >= self.max_queued:
                raise QueueFull()
            self._unfinished += 1
        return Slot(self)

    def _release_slot(self) -> None:
        with self._lock:
            self._unfinished -= 1

    def submit(self, slot: Slot, session_id: str, video_path: str, video_info: Optional[VideoInfo] = None) -> None:
        """Start (or queue) the session's job; the session must exist as `pending`."""
        job = _Job(session_id, video_path, video_info)
        slot.used = True
        with self._lock:
            self._jobs[session_id] = job
        self._executor.submit(self._run, job)

    # -- control ----------------------------------------------------------------
    def cancel(self, session_id: str) -> None:
        """Stop the job's work: a pending job never starts, a running one stops within a token or a frame."""
        with self._lock:
            job = self._jobs.get(session_id)
        if job is not None:
            job.cancel.set()

    def wait(self, session_id: str, timeout: Optional[float] = None) -> bool:
        """True once the session's job has finished (or when there is no job)."""
        with self._lock:
            job = self._jobs.get(session_id)
        return True if job is None else job.done.wait(timeout)

    def shutdown(self, wait: bool = True) -> None:
        """Cancel every job and stop the workers (used at process exit)."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel.set()
            try:
                self.sessions.update(job.session_id, status=ProcessingStatus.CANCELLED,
                                     message="Cancelled because the server is shutting down")
            except SessionNotFound:
                pass
        self._executor.shutdown(wait=wait, cancel_futures=True)

    # -- the work -----------------------------------------------------------------
    def _run(self, job: _Job) -> None:
        try:
            self._analyse(job)
        finally:
            with self._lock:
                self._jobs.pop(job.session_id, None)
                self._unfinished -= 1
            job.done.set()

    def _analyse(self, job: _Job) -> None:
        sid = job.session_id
        try:
            if job.cancel.is_set():
                return  # cancelled while pending: never starts
            session = self.sessions.update(sid, status=ProcessingStatus.PROCESSING, current_step="reading",
                                           message="Reading the video", progress=1)
            if session.status != ProcessingStatus.PROCESSING:
                return

            def progress(done: int, total: int, _message: str) -> None:
                if done < total:
                    step, message = "analyzing", f"Analyzing segment {done + 1} of {total}"
                else:
                    step, message = "ranking", "Putting the results together"
                try:
                    self.sessions.update(sid, current_step=step, message=message, segments_done=done,
                                         segments_total=total, progress=1 + 98 * done / max(total, 1))
                except SessionNotFound:
                    job.cancel.set()  # cleaned up under our feet: stop the work
                    raise Cancelled("The session was removed.") from None

            options = dict(session.params, progress=progress, cancel=job.cancel, video_name=session.video_name,
                           video_info=job.video_info)
            if session.analysis_type == "workout":
                result = self.engine.analyze_workout(job.video_path, **options)
                found = _count(len(result["exercise_steps"]), "exercise step")
            else:
                result = self.engine.generate_highlights(job.video_path, **options)
                found = _count(result["highlights_found"], "highlight")
            segments = _count(result["total_segments_analyzed"], "segment")
            self.sessions.update(sid, status=ProcessingStatus.COMPLETED, result=result,
                                 message=f"Found {found} in {segments}")
        except Cancelled:
            self._finish(sid, ProcessingStatus.CANCELLED, "Cancelled")
        except VideoError as error:
            self._finish(sid, ProcessingStatus.FAILED, "The analysis failed", str(error), "video")
        except (ModelLoadError, RunnerClosed) as error:
            self._finish(sid, ProcessingStatus.FAILED, "The analysis failed", str(error), "model")
        except Exception:  # noqa: BLE001  (one job's failure must not reach the others)
            log.exception("Job %s failed", sid)
            self._finish(sid, ProcessingStatus.FAILED, "The analysis failed",
                         "The analysis stopped because of an internal error; it has been logged. "
                         "Try again, or with another video.", "internal")

    def _finish(self, session_id: str, status: ProcessingStatus, message: str,
                error: Optional[str] = None, error_kind: Optional[str] = None) -> None:
        try:
            self.sessions.update(session_id, status=status, message=message, error=error, error_kind=error_kind)
        except SessionNotFound:
            pass

    def counts(self) -> Dict[str, int]:
        totals = self.sessions.counts()
        return {"pending": totals["pending"], "processing": totals["processing"]}

