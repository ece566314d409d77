"""The state database in the app: a full disk, a moved DATA_DIR, a file that is not a database (issue 16 #6).

In-process apps on the tiny model; "the disk is full" is SQLite's own SQLITE_FULL, made real by capping the
database's size (`PRAGMA max_page_count`), the very error a full disk gives.
"""
import os
import shutil
import sqlite3
import time

import pytest

from tests.support.api import stored_entries, upload, wait_for_status
from tests.support.problems import assert_problem
from tests.support.state_db import answer_runs
from video_analysis.jobs.sessions import SessionManager
from video_analysis.jobs.state_db import StateDatabase
from video_analysis.web.services import EXTENSION_KEY


def fill_the_disk(app) -> None:
    """From now on the database cannot grow: every write that needs a page more fails with SQLITE_FULL."""
    db = app.extensions[EXTENSION_KEY].sessions.database._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")


def make_room(app) -> None:
    app.extensions[EXTENSION_KEY].sessions.database._db.execute("PRAGMA max_page_count = 1073741823")


def test_a_full_disk_pauses_jobs_refuses_uploads_and_with_room_again_they_go_on_by_themselves(make_app, videos):
    app = make_app(JOB_WORKERS=2)
    svc = app.extensions[EXTENSION_KEY]
    svc.jobs.pause_seconds = 0.3
    client = app.test_client()
    running = upload(client, videos["long"], segment_duration="1").get_json()["sessionId"]
    deadline = time.monotonic() + 60
    while client.get(f"/api/v1/video/status/{running}").get_json()["segmentsDone"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)  # the analysis process computes in the idle CPU class: leave it a core
    fill_the_disk(app)
    deadline = time.monotonic() + 30
    while "Paused" not in client.get(f"/api/v1/video/status/{running}").get_json()["message"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    paused = client.get(f"/api/v1/video/status/{running}").get_json()
    assert paused["status"] == "processing" and "disk is full" in paused["message"], paused
    saved = len(svc.sessions.answers(running))
    assert 3 <= saved < 90 and paused["segmentsDone"] == saved  # nothing shown that is not kept
    assert client.get("/health").get_json()["queue"]["processing"] == 1

    svc.sessions.database._db.execute("PRAGMA query_only = ON")  # no write at all now, as on a read-only disk
    problem = assert_problem(upload(client, videos["short"]), 507)
    assert "could not record this upload" in problem["error"]
    assert stored_entries(app) == [running]  # the refused upload left nothing
    svc.sessions.database._db.execute("PRAGMA query_only = OFF")

    make_room(app)
    ended = wait_for_status(client, running)
    assert ended[-1]["status"] == "completed" and ended[-1]["segmentsDone"] == 90, ended[-1]
    assert all(body["status"] == "processing" for body in ended[:-1])  # never failed on the way
    assert any("once its progress could be saved again" in body["message"] for body in ended), \
        {body["message"] for body in ended}
    runs = answer_runs(svc.sessions.database.path, running)
    assert runs[:saved] == [1] * saved and set(runs[saved:]) >= {2}


def test_a_job_that_cannot_even_start_on_a_full_disk_waits_and_then_runs(make_app, videos, tmp_path):
    """Its session was recorded before the disk filled; its first write (it starts) is refused."""
    app = make_app()
    svc = app.extensions[EXTENSION_KEY]
    svc.jobs.pause_seconds = 0.3
    client = app.test_client()
    directory = tmp_path / "upload"
    directory.mkdir()
    video = shutil.copy(videos["short"], directory / "upload-0.bin")
    slot = svc.jobs.reserve()
    session_id = svc.sessions.new_id()
    svc.sessions.create(session_id, "highlights", "short.mp4", str(directory), {}, video_path=str(video))
    db = svc.sessions.database._db
    db.execute("PRAGMA query_only = ON")
    try:
        svc.jobs.submit(slot, session_id, str(video))
        deadline = time.monotonic() + 30
        while "Paused" not in client.get(f"/api/v1/video/status/{session_id}").get_json()["message"]:
            assert time.monotonic() < deadline
        assert client.get(f"/api/v1/video/status/{session_id}").get_json()["status"] == "pending"
        assert client.get("/health").get_json()["queue"] == {"pending": 0, "processing": 1}  # still counted
        time.sleep(1)  # a few tries, all refused
    finally:
        db.execute("PRAGMA query_only = OFF")
    assert wait_for_status(client, session_id)[-1]["status"] == "completed"


def test_cleanup_that_cannot_be_recorded_is_a_503_and_changes_nothing(make_app, videos):
    app = make_app()
    client = app.test_client()
    session_id = upload(client, videos["short"]).get_json()["sessionId"]
    wait_for_status(client, session_id)
    sessions = app.extensions[EXTENSION_KEY].sessions
    sessions.database._db.execute("PRAGMA query_only = ON")  # every write refused, as by a read-only disk
    try:
        problem = assert_problem(client.delete(f"/api/v1/video/cleanup/{session_id}"), 503)
        assert "nothing was changed" in problem["error"]
        assert client.get(f"/api/v1/video/results/{session_id}").status_code == 200
        assert stored_entries(app) == [session_id]
    finally:
        sessions.database._db.execute("PRAGMA query_only = OFF")
    assert client.delete(f"/api/v1/video/cleanup/{session_id}").status_code == 200
    assert stored_entries(app) == []


def test_a_moved_data_dir_keeps_its_sessions(make_app, videos, tmp_path):
    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    app = make_app(DATA_DIR=old)
    client = app.test_client()
    session_id = upload(client, videos["short"]).get_json()["sessionId"]
    wait_for_status(client, session_id)
    results = client.get(f"/api/v1/video/results/{session_id}").get_json()
    app.extensions[EXTENSION_KEY].close()
    shutil.move(old, new)

    moved = make_app(DATA_DIR=new)
    client = moved.test_client()
    assert client.get(f"/api/v1/video/results/{session_id}").get_json() == results
    state = moved.extensions[EXTENSION_KEY].sessions.get(session_id)
    assert state.directory == os.path.join(new, session_id) and os.path.isfile(state.video_path)
    assert client.delete(f"/api/v1/video/cleanup/{session_id}").status_code == 200
    assert stored_entries(moved) == []


def test_a_state_db_that_is_not_a_database_stops_the_start_with_a_sentence(make_app, tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"these are my holiday notes, not a database" * 100)
    with pytest.raises(SystemExit) as stopped:
        make_app(STATE_DB=str(path))
    assert "cannot be used" in str(stopped.value) and "Move it aside" in str(stopped.value)
    assert path.read_bytes().startswith(b"these are my holiday notes")  # left as it was


def test_an_in_memory_state_db_keeps_nothing(make_app, videos, tmp_path):
    data_dir = str(tmp_path / "data")
    app = make_app(DATA_DIR=data_dir, STATE_DB=":memory:")
    client = app.test_client()
    session_id = upload(client, videos["short"]).get_json()["sessionId"]
    wait_for_status(client, session_id)
    app.extensions[EXTENSION_KEY].close()
    assert sorted(os.listdir(data_dir)) == [session_id]  # no database file
    again = make_app(DATA_DIR=data_dir, STATE_DB=":memory:")
    assert again.test_client().get(f"/api/v1/video/status/{session_id}").status_code == 404
    assert stored_entries(again) == []


def test_the_database_passes_its_integrity_check_and_answers_are_kept_in_order(tmp_path):
    path = str(tmp_path / "state.db")
    sessions = SessionManager(60, StateDatabase(path))
    sessions.create("s-1", "highlights", "a.mp4", "/data/s-1")
    sessions.update("s-1", status="processing", runs=1)
    sessions.record_answer("s-1", 0, "Significance: 3/10", segments_done=1)
    with pytest.raises(ValueError):
        sessions.record_answer("s-1", 2, "out of order")  # a gap is a fault, never stored
    sessions.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT position, answer, run FROM answers").fetchall() == [(0, "Significance: 3/10", 1)]
    again = SessionManager(60, StateDatabase(path))
    assert again.answers("s-1") == ["Significance: 3/10"] and again.get("s-1").segments_done == 1


def test_another_programs_sqlite_file_is_refused_and_left_as_it_was(make_app, tmp_path):
    path = tmp_path / "photos.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE albums (name TEXT)")
        db.execute("INSERT INTO albums VALUES ('summer')")
    os.chmod(path, 0o644)
    before = path.read_bytes()
    with pytest.raises(SystemExit) as stopped:
        make_app(STATE_DB=str(path))
    assert "another program" in str(stopped.value)
    assert path.read_bytes() == before and os.stat(path).st_mode & 0o777 == 0o644


def test_a_second_service_on_the_same_state_db_is_refused(make_app, tmp_path):
    data_dir = str(tmp_path / "data")
    make_app(DATA_DIR=data_dir)
    with pytest.raises(SystemExit) as stopped:
        make_app(DATA_DIR=data_dir)
    assert "Another service is using the state database" in str(stopped.value)


@pytest.mark.parametrize("damage", ["status", "json", "page"])
def test_a_damaged_state_db_stops_the_start_with_the_sentence(make_app, tmp_path, damage):
    path = str(tmp_path / "state.db")
    sessions = SessionManager(60, StateDatabase(path))
    sessions.create("s-1", "highlights", "a.mp4", "/data/s-1")
    sessions.close()
    if damage == "page":
        with open(path, "r+b") as handle:  # the header stays, the first page's content goes
            handle.seek(100)
            handle.write(b"\xff" * 3000)
    else:
        with sqlite3.connect(path) as db:
            bad = '{"status": "paused"}' if damage == "status" else "not json"
            db.execute("UPDATE sessions SET state = ?", (bad,))
    with pytest.raises(SystemExit) as stopped:
        make_app(STATE_DB=path)
    assert "cannot be used" in str(stopped.value) and "Move it aside" in str(stopped.value)


def test_health_says_when_the_state_db_or_data_dir_was_deleted_under_it(make_app, tmp_path):
    data_dir = str(tmp_path / "data")
    app = make_app(DATA_DIR=data_dir)
    client = app.test_client()
    assert client.get("/health").get_json()["status"] == "healthy"
    os.unlink(os.path.join(data_dir, "state.db"))
    health = client.get("/health").get_json()
    assert health["status"] == "degraded" and "was deleted or replaced" in health["problems"][0]
    shutil.rmtree(data_dir)
    health = client.get("/health").get_json()
    assert len(health["problems"]) == 2 and "DATA_DIR" in health["problems"][0]
