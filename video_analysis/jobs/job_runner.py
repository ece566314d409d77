"""One job's run: the session moved through its states as the analysis reports, each answer kept as it comes.

Shared by the embedded queue (`queue.JobQueue`, its job threads) and the
cluster's model workers (`cluster.task`): both hand a `Job` to `JobRunner.run`,
which reads the session, runs the analysis through `analysis.run` (the
analysis process's, or a worker's own engine) and writes the progress, each
segment's answer and the end back to the session store (SQLite or Redis).

A run after an earlier one (a restart, a worker that stopped) goes on after
the last kept answer and says so. A write the store refuses pauses the job:
it tries again after `pause_seconds` from its last saved answer.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional

from video_analysis.cancellation import CancelToken, Cancelled
from video_analysis.engine.kinds import analysis_class
from video_analysis.engine.outputs import DEFAULT_MAX_REEL_SECONDS, FINDINGS, OutputRequest
from video_analysis.jobs.analysis_process import AnalysisFailed, ModelUnavailable
from video_analysis.jobs.messages import INTERNAL, INTERNAL_ERROR, MODEL
from video_analysis.jobs.sessions import ProcessingStatus, SessionNotFound, SessionState, StateNotSaved
from video_analysis.video import VideoInfo
from video_analysis.video.reel import leftovers

log = logging.getLogger(__name__)

_NOT_SAVED = "not saved"  # `stopped_because` when the store refused a write: the job pauses
PAUSED = ("Paused: the server's disk is full or not writable, so the analysis's progress cannot be saved. It goes on "
          "by itself, from its last saved segment, once there is room again.")
# How long a paused job waits before it tries to save again.
PAUSE_SECONDS = 30.0
# Where a session's outputs go, in the directory of its video.
THUMBNAILS_DIR, REEL_FILE = "thumbnails", "reel.mp4"
# The share of the progress bar the outputs take after the segments (making thumbnails alone is quick).
_RENDERING_SHARE = {True: 9.0, False: 1.0}  # with a reel, without


@dataclass
class Job:
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



class JobRunner:
    """Runs jobs against `analysis` (`.loaded`, `.run(...)`), keeping their progress in `sessions`."""

    def __init__(self, analysis, sessions, pause_seconds: float = PAUSE_SECONDS, paused_message: str = PAUSED,
                 resumed_because: str = "after a restart", max_reel_seconds: float = DEFAULT_MAX_REEL_SECONDS,
                 outputs_written: Optional[Callable[[str, int], None]] = None):
        """`outputs_written(directory, bytes)` hears of the thumbnails and reel a job wrote (the storage bound
        counts them)."""
        self.analysis = analysis
        self.max_reel_seconds = max_reel_seconds
        self.outputs_written = outputs_written
        self.sessions = sessions
        self.pause_seconds = pause_seconds
        self.paused_message = paused_message
        self.resumed_because = resumed_because
        # Set when the service (or worker) stops: a job cancelled then is left as saved, to go on later.
        self.closed = False

    def run(self, job: Job) -> None:
        """Run the job to its end, pausing while the store refuses writes; returns when it has ended or stopped."""
        while self._analyse(job) and self._wait_for_room(job):
            pass

    def _wait_for_room(self, job: Job) -> bool:
        """A paused job (its progress could not be saved) tries again after `pause_seconds`; False when it was
        cancelled or the service stops meanwhile (then it stays as saved, and goes on at the next start)."""
        try:
            self.sessions.update(job.session_id, saved=False, message=self.paused_message)  # not kept: cannot be
        except SessionNotFound:
            return False
        except StateNotSaved:
            pass
        job.stopped_because = None
        job.resumed_because = "once its progress could be saved again"
        job.cancel = CancelToken()
        return not job.cancel.wait(self.pause_seconds) and not self.closed

    def _analyse(self, job: Job) -> bool:
        """Run the job once; True when it paused because the store refused a write."""
        sid = job.session_id
        try:
            before = self.sessions.get(sid, with_result=False)
            resume = self.sessions.answers(sid)
        except SessionNotFound:
            return False
        except StateNotSaved:
            return True
        # A session that ran before goes on after its last kept answer, and says so.
        resumed_at = len(resume) + 1 if before.runs else None
        if resumed_at is not None and before.segments_total and resumed_at > before.segments_total:
            ready_message = (f"Resumed {job.resumed_because}: all {before.segments_total} segments were answered; "
                             "putting the results together")
        elif resumed_at is not None:
            of = f" of {before.segments_total}" if before.segments_total else ""
            ready_message = f"Resumed {job.resumed_because} at segment {resumed_at}{of}"
        else:
            ready_message = "Reading the video"
        # A job that starts while the analysis process (re)loads the model waits for it, and says so.
        waiting = not self.analysis.loaded
        message = "Waiting for the model to load" if waiting else ready_message
        session = self.update(job, status=ProcessingStatus.PROCESSING, current_step="reading", message=message,
                              progress=1, runs=before.runs + 1, resumed_at=resumed_at, **self.started_fields())
        if session is None:
            return job.stopped_because == _NOT_SAVED
        if session.status != ProcessingStatus.PROCESSING:
            return False
        total = [before.segments_total or 0]
        because = job.resumed_because
        outputs = self.outputs(job, session)
        counted = self._outputs_bytes(outputs)  # a run before this one's, counted already
        reel = outputs is not None and outputs.reel_path is not None
        top = 99.0 - _RENDERING_SHARE[reel] if outputs is not None else 99.0  # where the segments' share ends

        def progress(done: int, segments: int, message: str) -> None:
            if segments == 0:  # still planning (finding the scenes): the engine's sentence says how far
                self.update(job, message=message)
                return
            total[0] = segments
            if done < segments and done + 1 == resumed_at:  # the resume's own message stays until an answer
                self.update(job, segments_done=done, segments_total=segments)
            else:
                self.update(job, **self._progress(done, segments, resumed_at, because, top))

        def started() -> None:  # the model is ready: the job goes to the analysis process now
            if waiting:
                self.update(job, message=ready_message)

        def answered(position: int, answer: str) -> None:
            self.update(job, answer=(position, answer),
                        **self._progress(position + 1, total[0], resumed_at, because, top))

        def rendering(fraction: float, message: str) -> None:
            self.update(job, current_step="rendering", message=message, progress=top + (99.0 - top) * fraction)

        options = dict(session.params, video_name=session.video_name, video_info=job.video_info, resume=resume,
                       outputs=outputs)
        try:
            analysis = analysis_class(session.analysis_type)
            try:
                result = self.analysis.run(sid, analysis.kind, job.video_path, options, progress, job.cancel,
                                           answered, started, through_retries=job.restored, rendering=rendering)
                result = self.deliver(job, session, outputs, result)  # may be cancelled too (a worker stopping)
            finally:
                self._count_outputs(outputs, counted)
        except Cancelled:
            if job.stopped_because == _NOT_SAVED:
                return True
            if self.closed:
                return False  # stopped by the shutdown: left as saved, and resumed at the next start
            if job.stopped_because is not None:
                ended = self.finish(sid, ProcessingStatus.FAILED, "The analysis failed", job.stopped_because, INTERNAL)
            else:
                ended = self.finish(sid, ProcessingStatus.CANCELLED, "Cancelled")
        except AnalysisFailed as error:
            ended = self.finish(sid, ProcessingStatus.FAILED, "The analysis failed", str(error), error.kind)
        except ModelUnavailable as error:
            ended = self.finish(sid, ProcessingStatus.FAILED, "The analysis failed", str(error), MODEL)
        except Exception:  # noqa: BLE001  (one job's failure must not reach the others)
            log.exception("Job %s failed", sid)
            ended = self.finish(sid, ProcessingStatus.FAILED, "The analysis failed", INTERNAL_ERROR, INTERNAL)
        else:
            summary = analysis.summary(result)
            if result.get("reel_refused"):
                summary += ". " + result["reel_refused"]
            ended = self.finish(sid, ProcessingStatus.COMPLETED, summary, result=result)
        # An end the store refused pauses the job like any refused write: the next run has every answer
        # kept, asks the model nothing and only writes the end.
        return not ended

    def outputs(self, job: Job, session: SessionState) -> Optional[OutputRequest]:
        """The thumbnails and reel a job makes, beside its video (a legacy request's makes none)."""
        if session.legacy:
            return None
        directory = os.path.dirname(os.path.abspath(job.video_path))
        reel = os.path.join(directory, REEL_FILE) if session.params.get("reel") else None
        return OutputRequest(os.path.join(directory, THUMBNAILS_DIR), reel, self.max_reel_seconds)

    def deliver(self, job: Job, session: SessionState, outputs: Optional[OutputRequest], result: dict) -> dict:
        """Put the outputs where clients fetch them from, before the job completes: here they are already (a cluster's
        worker sends them to the API node that keeps the session); the result, as it is then."""
        return result

    def _outputs_bytes(self, outputs: Optional[OutputRequest]) -> int:
        """What the outputs' files hold on disk now, a half-written one left by a crash included."""
        if outputs is None or self.outputs_written is None:
            return 0
        total = 0
        for path in _files(outputs):
            try:
                total += os.path.getsize(path)
            except FileNotFoundError:  # replaced or removed meanwhile
                pass
        return total

    def _count_outputs(self, outputs: Optional[OutputRequest], counted: int) -> None:
        """Count what this run added to the outputs' files (less, when it replaced or removed some)."""
        if outputs is None or self.outputs_written is None:
            return
        directory = os.path.dirname(outputs.thumbnails_dir)
        if os.path.isdir(directory):  # else cleaned up meanwhile: given back already
            change = self._outputs_bytes(outputs) - counted
            if change:
                self.outputs_written(directory, change)

    def started_fields(self) -> dict:
        """More session fields written when a run starts (a cluster worker adds its name)."""
        return {}

    @staticmethod
    def _progress(done: int, total: int, resumed_at: Optional[int], because: str, top: float = 99.0) -> dict:
        """What the session shows with `done` of `total` segments answered."""
        if done < total:
            step, message = "analyzing", f"Analyzing segment {done + 1} of {total}"
            if resumed_at is not None:
                message += f" (resumed {because} at segment {resumed_at})"
        else:
            step, message = "ranking", "Putting the results together"
        return dict(current_step=step, message=message, segments_done=done, segments_total=total,
                    progress=1 + (top - 1) * done / max(total, 1))

    def update(self, job: Job, answer: Optional[tuple] = None, **changes) -> Optional[SessionState]:
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

    def finish(self, session_id: str, status: ProcessingStatus, message: str, error: Optional[str] = None,
               error_kind: Optional[str] = None, result: Optional[dict] = None) -> bool:
        """End the session; False when the store refused the write (then nothing changed)."""
        try:
            self.sessions.update(session_id, status=status, message=message, error=error, error_kind=error_kind,
                                 result=result)
        except SessionNotFound:
            pass
        except StateNotSaved:
            return False
        return True


def sent_outputs(outputs: OutputRequest, result: dict) -> List[str]:
    """The output files `result` names, relative to the session's directory (thumbnails/0.jpg, reel.mp4)."""
    names = [f"{THUMBNAILS_DIR}/{item['thumbnail']}" for key, _, _ in FINDINGS.values()
             for item in result.get(key, ()) if item.get("thumbnail")]
    if result.get("reel") and outputs.reel_path is not None:
        names.append(REEL_FILE)
    return names


def _files(outputs: OutputRequest) -> Iterator[str]:
    """The output files on disk now, and what a crash left half-written of them (`leftovers`)."""
    if os.path.isdir(outputs.thumbnails_dir):
        for entry in os.scandir(outputs.thumbnails_dir):
            if entry.is_file():
                yield entry.path
    directory = os.path.dirname(outputs.thumbnails_dir)
    reel = os.path.join(directory, REEL_FILE)
    if os.path.isfile(reel):
        yield reel
    yield from leftovers(reel)
