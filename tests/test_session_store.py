"""The session store on its own (video_analysis.jobs.sessions): its rules, without an app around it.

Progress never goes back, a terminal status never changes, reads are
copies, ended sessions expire after the TTL, and concurrent writers lose
nothing. Real objects and real time; no HTTP.
"""
import re
import sys
import threading
import time

import pytest

from session_manager import ProcessingStatus, SessionManager, SessionState
from video_analysis.jobs.sessions import SessionNotFound, iso_utc

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TERMINAL = [ProcessingStatus.COMPLETED, ProcessingStatus.FAILED, ProcessingStatus.CANCELLED]


@pytest.fixture(params=["sqlite", "redis"])
def store(request):
    """The embedded store (SQLite in memory) and cluster mode's (a redis-server of the test's own): the same rules."""
    if request.param == "sqlite":
        return SessionManager(ttl_seconds=3600)
    from video_analysis.cluster.connection import connect
    from video_analysis.cluster.sessions import RedisSessionStore

    return RedisSessionStore(connect(request.getfixturevalue("redis_server").url), ttl_seconds=3600, node="node-a")


def new_session(store, session_id=None, **options) -> str:
    session_id = session_id or store.new_id()
    store.create(session_id, "highlights", "match.mp4", f"/data/{session_id}", **options)
    return session_id


# -- create, get, delete --------------------------------------------------------------------------------
def test_a_new_session_is_pending_and_its_status_body_is_the_contracts():
    store = SessionManager()
    before = time.time()
    created = store.create("s-1", "workout", "gym.mp4", "/data/s-1", {"segment_duration": 5})
    assert isinstance(created, SessionState)
    assert store.get("s-1") == created
    assert created.params == {"segment_duration": 5} and created.legacy is False and created.result is None
    assert before <= created.created_at <= created.updated_at <= time.time()
    assert created.status_body() == {
        "sessionId": "s-1", "status": "pending", "analysisType": "workout", "progress": 0.0,
        "currentStep": "queued", "message": "Waiting for a free worker", "segmentsDone": 0, "segmentsTotal": None,
        "createdAt": iso_utc(created.created_at), "updatedAt": iso_utc(created.updated_at),
        "startedAt": None, "finishedAt": None, "error": None,
    }
    assert ISO_Z.match(created.status_body()["createdAt"])


def test_timestamps_are_utc_with_milliseconds():
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1_700_000_000.1234) == "2023-11-14T22:13:20.123Z"
    assert iso_utc(None) is None


def test_new_ids_are_distinct_uuid4_strings(store):
    ids = {store.new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.match(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", i) for i in ids)


def test_an_id_in_use_cannot_be_created_again(store):
    session_id = new_session(store)
    store.update(session_id, message="first")
    with pytest.raises(ValueError, match="already in use"):
        store.create(session_id, "workout", "other.mp4", "/elsewhere")
    assert store.get(session_id).message == "first" and store.get(session_id).analysis_type == "highlights"


@pytest.mark.parametrize("operation", ["get", "update", "delete"])
def test_an_unknown_id_is_session_not_found(store, operation):
    new_session(store)
    with pytest.raises(SessionNotFound):
        getattr(store, operation)("no-such-session")


def test_delete_returns_the_session_and_forgets_it(store):
    session_id = new_session(store)
    store.update(session_id, status="processing", progress=40)
    deleted = store.delete(session_id)
    assert deleted.session_id == session_id and deleted.progress == 40.0
    with pytest.raises(SessionNotFound):
        store.get(session_id)
    with pytest.raises(SessionNotFound):
        store.delete(session_id)


def test_reads_and_writes_hand_out_copies(store):
    params = {"segment_duration": 5}
    session_id = new_session(store, params=params)
    params["segment_duration"] = 600  # the caller's dict is not the store's
    read = store.get(session_id)
    read.params["segment_duration"] = 1
    read.status = ProcessingStatus.FAILED
    returned = store.update(session_id, result={"highlights": [1]})
    returned.result["highlights"].append(2)
    stored = store.get(session_id)
    assert stored.params == {"segment_duration": 5} and stored.status == ProcessingStatus.PENDING
    assert stored.result == {"highlights": [1]}


def test_a_read_without_the_result_leaves_only_the_result_out(store):
    session_id = new_session(store)
    store.update(session_id, status="completed", result={"highlights": ["x"] * 1000})
    light = store.get(session_id, with_result=False)
    assert light.result is None and light.status == ProcessingStatus.COMPLETED and light.progress == 100.0
    assert store.get(session_id).result == {"highlights": ["x"] * 1000}


# -- state transitions ------------------------------------------------------------------------------------
def test_starting_stamps_started_at_once(store):
    session_id = new_session(store)
    started = store.update(session_id, status="processing", current_step="reading").started_at
    assert started is not None and store.get(session_id).status == ProcessingStatus.PROCESSING
    time.sleep(0.01)
    again = store.update(session_id, status=ProcessingStatus.PROCESSING, current_step="analyzing")
    assert again.started_at == started and again.current_step == "analyzing"
    assert again.updated_at > started


def test_progress_only_moves_forward_and_stays_below_100_until_completed(store):
    session_id = new_session(store)
    store.update(session_id, status="processing")
    assert store.update(session_id, progress=40).progress == 40.0
    assert store.update(session_id, progress=25).progress == 40.0  # a late report from an earlier step
    assert store.update(session_id, progress=100).progress == 99.9  # not done until it says so
    assert store.update(session_id, progress=250).progress == 99.9
    done = store.update(session_id, status="completed")
    assert done.progress == 100.0 and done.status_body()["progress"] == 100


def test_the_status_body_rounds_progress_to_a_tenth(store):
    session_id = new_session(store)
    body = store.update(session_id, status="processing", progress=100 / 3, segments_done=1, segments_total=3,
                        message="Analysing segment 2 of 3").status_body()
    assert body["progress"] == 33.3 and body["segmentsDone"] == 1 and body["segmentsTotal"] == 3
    assert body["status"] == "processing" and body["message"] == "Analysing segment 2 of 3"
    assert ISO_Z.match(body["startedAt"]) and body["finishedAt"] is None


@pytest.mark.parametrize("status,step", [(ProcessingStatus.COMPLETED, "done"), (ProcessingStatus.FAILED, "failed"),
                                         (ProcessingStatus.CANCELLED, "cancelled")])
def test_entering_a_terminal_status_stamps_finished_at_and_the_final_step(store, status, step):
    session_id = new_session(store)
    store.update(session_id, status="processing", progress=30, current_step="analyzing")
    ended = store.update(session_id, status=status.value, error="why" if status != ProcessingStatus.COMPLETED else None)
    assert status.terminal and ended.status == status
    assert ended.current_step == step and ended.finished_at is not None
    assert ended.progress == (100.0 if status == ProcessingStatus.COMPLETED else 30.0)
    assert ISO_Z.match(ended.status_body()["finishedAt"])


@pytest.mark.parametrize("status", TERMINAL)
def test_a_terminal_session_never_changes_again(store, status):
    session_id = new_session(store)
    store.update(session_id, status="processing", progress=50)
    ended = store.update(session_id, status=status, error="the first word")
    for changes in ({"status": "processing"}, {"status": "completed", "result": {"late": True}},
                    {"status": "failed", "error": "a second word"}, {"progress": 99}, {"message": "late"}):
        assert store.update(session_id, **changes) == ended
    assert store.get(session_id) == ended


def test_only_the_three_end_states_are_terminal():
    assert [s for s in ProcessingStatus if s.terminal] == TERMINAL
    assert not ProcessingStatus.PENDING.terminal and not ProcessingStatus.PROCESSING.terminal


def test_an_unknown_status_is_refused_and_changes_nothing(store):
    session_id = new_session(store)
    with pytest.raises(ValueError, match="'finished'"):
        store.update(session_id, status="finished")
    assert store.get(session_id).status == ProcessingStatus.PENDING


# -- expiry -------------------------------------------------------------------------------------------------
def test_ended_sessions_expire_after_the_ttl_and_running_ones_never():
    store = SessionManager(ttl_seconds=0.3)
    ended, running, pending = new_session(store), new_session(store), new_session(store)
    store.update(ended, status="cancelled")
    store.update(running, status="processing")
    assert store.expire() == []  # not yet: it ended just now
    time.sleep(0.35)
    expired = store.expire()
    assert [s.session_id for s in expired] == [ended] and expired[0].status == ProcessingStatus.CANCELLED
    with pytest.raises(SessionNotFound):
        store.get(ended)
    assert store.get(running).status == ProcessingStatus.PROCESSING and store.get(pending)
    assert store.expire(now=time.time() + 10 ** 6) == []  # unfinished sessions have no age to expire by


def test_expiry_counts_from_the_end_not_the_start():
    store = SessionManager(ttl_seconds=100)
    session_id = new_session(store)
    finished_at = store.update(session_id, status="completed").finished_at
    assert store.expire(now=finished_at + 99.9) == []
    assert [s.session_id for s in store.expire(now=finished_at + 100)] == [session_id]


# -- concurrency ----------------------------------------------------------------------------------------------
@pytest.fixture
def frequent_thread_switches():
    """Switch threads every microsecond (5 ms by default), so that writers interleave inside each update."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def test_concurrent_writers_of_different_fields_lose_nothing(store, frequent_thread_switches):
    """The job's progress reports and the request threads' writes hit one session at once. Each update reads
    the session and writes it back whole: without the lock, one writer's stale copy would undo another's
    change. Every writer checks, after each of its updates, that no other writer's last change was undone."""
    session_id = new_session(store)
    store.update(session_id, status="processing")
    rounds = 1000
    values = {  # each field only grows, so "undone" is "smaller than what its writer last wrote"
        "segments_done": lambda i: i,
        "segments_total": lambda i: 1000 + i,
        "progress": lambda i: 90 * i / rounds,
        "message": lambda i: f"step {i:06d}",
    }
    written = {field: value(0) for field, value in values.items()}
    store.update(session_id, **written)
    undone = []
    start = threading.Barrier(len(values))

    def write(field):
        start.wait()
        for i in range(1, rounds):
            store.update(session_id, **{field: values[field](i)})
            written[field] = values[field](i)
            expected = dict(written)  # every change finished before this read began
            state = store.get(session_id, with_result=False)
            undone.extend(f"{other}: {getattr(state, other)!r} < {value!r}"
                          for other, value in expected.items() if getattr(state, other) < value)

    writers = [threading.Thread(target=write, args=(field,)) for field in values]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert undone == []
    final = store.get(session_id)
    assert {field: getattr(final, field) for field in values} == {field: v(rounds - 1) for field, v in values.items()}
