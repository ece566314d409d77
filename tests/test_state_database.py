"""The state database in the app: a full disk, a moved DATA_DIR, a file that is not a database (issue 16 #6).

In-process apps on the tiny model; "the disk is full" is SQLite's own SQLITE_FULL, made real by capping the
database's size (`PRAGMA max_page_count`), the very error a full disk gives.
"""
import os
import shutil
import sqlite3

import pytest

from tests.support.api import stored_entries, upload, wait_for_status
from tests.support.problems import assert_problem
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


def test_a_full_disk_stops_the_job_with_a_sentence_and_refuses_uploads_and_a_restart_shows_the_same(
        make_app, videos, tmp_path):
    data_dir = str(tmp_path / "data")
    app = make_app(DATA_DIR=data_dir)
    client = app.test_client()
    session_id = upload(client, videos["long"], segment_duration="1").get_json()["sessionId"]
    wait_for_status(client, session_id, statuses=("processing",))
    while client.get(f"/api/v1/video/status/{session_id}").get_json()["segmentsDone"] < 3:
        pass
    fill_the_disk(app)
    ended = wait_for_status(client, session_id)[-1]
    assert ended["status"] == "failed" and "disk is full" in ended["error"], ended
    saved = len(app.extensions[EXTENSION_KEY].sessions.answers(session_id))
    assert 3 <= saved < 90
    database = app.extensions[EXTENSION_KEY].sessions.database._db
    database.execute("PRAGMA query_only = ON")  # now no write at all succeeds, as on a full or read-only disk
    refused = upload(client, videos["short"])
    problem = assert_problem(refused, 507)
    assert "could not record this upload" in problem["error"]
    assert stored_entries(app) == [session_id]  # the refused upload left nothing
    database.execute("PRAGMA query_only = OFF")
    make_room(app)
    app.extensions[EXTENSION_KEY].close()

    # The failure fitted in the database (a changed row needs no new page): a restart shows what the client saw.
    again = make_app(DATA_DIR=data_dir)
    state = again.test_client().get(f"/api/v1/video/status/{session_id}").get_json()
    assert (state["status"], state["error"], state["segmentsDone"]) == ("failed", ended["error"], saved)
    assert again.extensions[EXTENSION_KEY].sessions.answers(session_id) == \
        app.extensions[EXTENSION_KEY].sessions.answers(session_id)


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
