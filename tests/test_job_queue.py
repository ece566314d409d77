"""The job queue on its own: a real SessionManager and the run's real analysis process (tiny model).

Admission counts uploads being received and unfinished jobs, once; `cancel` is the one call that
cancels (the session, then the job's token); shutdown stops everything.
"""
import os
import re
import signal
import time

import pytest

from tests.support.api import upload, wait_for_status
from video_analysis.jobs.queue import JobQueue, QueueFull, ShuttingDown
from video_analysis.jobs.sessions import ProcessingStatus, SessionManager
from video_analysis.web.services import EXTENSION_KEY

NOTHING_UNFINISHED = {"pending": 0, "processing": 0}


@pytest.fixture
def sessions():
    return SessionManager()


@pytest.fixture
def make_queue(tiny_analysis, sessions):
    built = []

    def factory(workers=1, max_queued=2):
        queue = JobQueue(tiny_analysis, sessions, workers, max_queued)
        built.append(queue)
        return queue

    yield factory
    for queue in built:
        queue.shutdown(timeout=10)


def submit(queue, sessions, video, kind="highlights", **params):
    """What intake does once an upload is stored: a slot, a pending session, the job."""
    slot = queue.reserve()
    session_id = sessions.new_id()
    sessions.create(session_id, kind, os.path.basename(video), os.path.dirname(video), params)
    queue.submit(slot, session_id, video)
    return session_id


def wait_until(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def running_long(queue, sessions, videos):
    """A job of 90 one-second segments (~5 s on the tiny model), once it has done two of them."""
    session_id = submit(queue, sessions, videos["long"], segment_duration=1)
    wait_until(lambda: sessions.get(session_id).segments_done >= 2)
    return session_id


def test_admission_counts_held_slots_and_unfinished_jobs(make_queue, sessions, videos):
    queue = make_queue(max_queued=2)
    first, second = queue.reserve(), queue.reserve()
    with pytest.raises(QueueFull):  # the web layer's 503 "already queued"
        queue.reserve()
    queue.release(first)
    queue.release(first)  # a second release gives back nothing more
    third = queue.reserve()
    with pytest.raises(QueueFull):
        queue.reserve()
    with pytest.raises(ValueError):
        queue.submit(first, "given-back", videos["short"])  # a slot given back cannot become a job
    queue.release(second)
    queue.release(third)
    done = [submit(queue, sessions, videos["short"]) for _ in range(2)]
    with pytest.raises(QueueFull):  # two unfinished jobs fill it just as two slots did
        queue.reserve()
    for session_id in done:
        assert queue.wait(session_id, 60)
        assert sessions.get(session_id).status == ProcessingStatus.COMPLETED
    assert queue.counts() == NOTHING_UNFINISHED
    queue.release(queue.reserve())


def test_cancelling_a_pending_job_frees_its_slot_at_once_and_it_never_starts(make_queue, sessions, videos):
    queue = make_queue(workers=1, max_queued=2)
    running = running_long(queue, sessions, videos)
    pending = submit(queue, sessions, videos["short"])
    assert queue.counts() == {"pending": 1, "processing": 1}
    with pytest.raises(QueueFull):
        queue.reserve()
    state = queue.cancel(pending)
    assert (state.status, state.message) == (ProcessingStatus.CANCELLED, "Cancelled at your request")
    assert queue.counts() == {"pending": 0, "processing": 1} and queue.wait(pending, 0)
    queue.release(queue.reserve())  # its slot is free now, while the long job still runs
    queue.cancel(running)
    assert queue.wait(running, 10)
    assert sessions.get(pending).started_at is None  # never started


def test_cancelling_a_running_job_stops_it_promptly_and_marks_its_session(make_queue, sessions, videos):
    queue = make_queue()
    session_id = running_long(queue, sessions, videos)
    state = queue.cancel(session_id)
    cancelled_at = time.monotonic()
    assert state.status == ProcessingStatus.CANCELLED
    assert queue.counts() == {"pending": 0, "processing": 1}  # until it has stopped, it holds its slot
    assert queue.wait(session_id, 10)
    assert time.monotonic() - cancelled_at < 2.0  # the 88 segments left would take seconds
    final = sessions.get(session_id)
    assert (final.status, final.message, final.current_step) == (
        ProcessingStatus.CANCELLED, "Cancelled at your request", "cancelled")
    assert final.segments_done < 90 and queue.counts() == NOTHING_UNFINISHED
    # The analysis process is free for the next job at once.
    after = submit(queue, sessions, videos["short"])
    assert queue.wait(after, 30) and sessions.get(after).status == ProcessingStatus.COMPLETED


def test_a_job_whose_session_is_deleted_under_it_stops(make_queue, sessions, videos):
    queue = make_queue()
    session_id = running_long(queue, sessions, videos)
    sessions.delete(session_id)  # as a cleanup does: the next progress report finds no session
    deleted_at = time.monotonic()
    assert queue.wait(session_id, 10)
    assert time.monotonic() - deleted_at < 2.0
    assert queue.counts() == NOTHING_UNFINISHED


def test_cancelling_an_unknown_or_finished_session_changes_nothing(make_queue, sessions, videos):
    queue = make_queue()
    assert queue.cancel("no-such-session") is None
    session_id = submit(queue, sessions, videos["short"])
    assert queue.wait(session_id, 60)
    assert queue.cancel(session_id).status == ProcessingStatus.COMPLETED


@pytest.mark.parametrize("kind, found", [("highlights", r"\d+ highlights?"), ("workout", r"\d+ exercise steps?")])
def test_a_finished_job_says_what_it_found(make_queue, sessions, videos, kind, found):
    queue = make_queue()
    session_id = submit(queue, sessions, videos["short"], kind, segment_duration=3)
    assert queue.wait(session_id, 60)
    state = sessions.get(session_id)
    assert state.status == ProcessingStatus.COMPLETED, state.error
    assert re.match(rf"^Found {found} in 2 segments$", state.message), state.message


def test_shutdown_stops_every_job_takes_no_more_and_leaves_async_sessions_as_saved(make_queue, sessions, videos):
    """An async session's job goes on after a restart, so shutdown leaves it pending or processing; a legacy
    request's job is cancelled (its client is answered now)."""
    queue = make_queue(workers=1, max_queued=4)
    running = running_long(queue, sessions, videos)
    pending = submit(queue, sessions, videos["short"])
    slot = queue.reserve()
    legacy = sessions.new_id()
    sessions.create(legacy, "highlights", "old.mp4", os.path.dirname(videos["short"]), legacy=True)
    queue.submit(slot, legacy, videos["short"])
    done_before = sessions.get(running).segments_done
    started = time.monotonic()
    queue.shutdown(timeout=10)
    assert time.monotonic() - started < 5
    assert sessions.get(running).status == ProcessingStatus.PROCESSING
    assert sessions.get(running).segments_done >= done_before
    assert len(sessions.answers(running)) == sessions.get(running).segments_done
    assert sessions.get(pending).status == ProcessingStatus.PENDING
    assert (sessions.get(legacy).status, sessions.get(legacy).message) == (
        ProcessingStatus.CANCELLED, "Cancelled because the server is shutting down")
    assert queue.counts() == NOTHING_UNFINISHED
    with pytest.raises(ShuttingDown):
        queue.reserve()


# -- one count of unfinished jobs, for admission and /health alike ---------------------------------------
def test_a_cancelled_job_that_has_not_stopped_yet_is_counted_by_health_and_admission_alike(make_app, videos):
    """The child is stopped (SIGSTOP) so that the cancelled job cannot end: it still holds its slot, and /health
    says so, until the child runs again and the job stops."""
    app = make_app(own_analysis=True, MAX_QUEUED_JOBS=1, JOB_WORKERS=1)
    client = app.test_client()
    analysis = app.extensions[EXTENSION_KEY].analysis
    session_id = upload(client, videos["long"], segment_duration="1").get_json()["sessionId"]
    wait_for_status(client, session_id, statuses=("processing",))
    os.kill(analysis.pid, signal.SIGSTOP)
    try:
        assert client.post(f"/api/v1/video/cancel/{session_id}").get_json()["status"] == "cancelled"
        time.sleep(0.3)
        assert client.get("/health").get_json()["queue"] == {"pending": 0, "processing": 1}
        refused = upload(client, videos["short"])
        assert refused.status_code == 503 and "already queued" in refused.get_json()["error"]
    finally:
        os.kill(analysis.pid, signal.SIGCONT)
    wait_until(lambda: client.get("/health").get_json()["queue"] == NOTHING_UNFINISHED, timeout=10)
    accepted = upload(client, videos["short"])
    assert accepted.status_code == 202
    assert wait_for_status(client, accepted.get_json()["sessionId"])[-1]["status"] == "completed"
