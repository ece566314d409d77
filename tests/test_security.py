"""Security properties (guides/security.md): unguessable ids, owner-only files, request limits,
CORS by configuration, nothing served from DATA_DIR, nothing deleted outside it."""
import io
import os
import stat
import uuid

import pytest

from tests.support.api import stored_entries, upload, wait_for_status
from tests.support.http import multipart
from tests.support.problems import assert_problem
from video_analysis.jobs.storage import Storage
from video_analysis.web.services import EXTENSION_KEY

MB = 1024 * 1024
UPLOAD = "/api/v1/video/upload"
MULTIPART = "multipart/form-data; boundary=hostile-boundary"  # the boundary `multipart` writes


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_session_ids_are_random_uuid4(client, videos):
    ids = [upload(client, videos["short"]).get_json()["sessionId"] for _ in range(5)]
    for session_id in ids:
        parsed = uuid.UUID(session_id)
        assert parsed.version == 4 and str(parsed) == session_id
    assert len(set(ids)) == len(ids)
    for session_id in ids:
        wait_for_status(client, session_id)


def test_uploads_are_owner_only_under_server_made_names_even_with_a_permissive_umask(make_app, tmp_path, videos):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o777)
    os.chmod(data_dir, 0o777)
    previous = os.umask(0)
    try:
        app = make_app(DATA_DIR=str(data_dir))
        client = app.test_client()
        session_id = upload(client, videos["short"], filename="../../holiday.mp4").get_json()["sessionId"]
    finally:
        os.umask(previous)
    assert _mode(data_dir) == 0o700
    session_dir = data_dir / session_id
    assert _mode(session_dir) == 0o700
    assert os.listdir(session_dir) == ["upload-0.bin"]
    assert _mode(session_dir / "upload-0.bin") == 0o600
    assert not (tmp_path / "holiday.mp4").exists()
    wait_for_status(client, session_id)


def test_request_limits_hold_exactly_at_their_settings(make_app, videos):
    """Form parts, a text field's size and the body's size are each bounded (the first two well below werkzeug's
    defaults). At the bound a request is parsed (and then refused for its unknown field); one part, byte or
    byte of body more is a 413 before anything is stored."""
    app = make_app(MAX_UPLOAD_MB=1)
    config = app.config["SERVICE"]
    assert config.MAX_FORM_PARTS <= 1000 and config.MAX_FORM_MEMORY_SIZE <= MB
    client = app.test_client()
    with open(videos["short"], "rb") as handle:
        video = handle.read()

    def post(**fields):
        data = {"video": (io.BytesIO(video), "clip.mp4"), **fields}
        return client.post(UPLOAD, data=data, content_type="multipart/form-data")

    parts = config.MAX_FORM_PARTS - 1  # besides the file
    assert assert_problem(post(**{f"extra{i}": "x" for i in range(parts)}), 400)["field"].startswith("extra")
    body = assert_problem(post(**{f"extra{i}": "x" for i in range(parts + 1)}), 413)
    assert f"at most {config.MAX_FORM_PARTS} form fields" in body["error"]
    assert assert_problem(post(extra="x" * config.MAX_FORM_MEMORY_SIZE), 400)["field"] == "extra"
    assert_problem(post(extra="x" * (config.MAX_FORM_MEMORY_SIZE + 1)), 413)
    # The body may pass the file's 1 MB by 1 MB of form fields; beyond that it is refused by its declared length.
    # (A file in a field of another name is not the video: the size check of the video itself does not apply.)
    def body_of(size: int) -> bytes:
        return multipart([(b"pad", b"pad.bin", b"x" * (size - len(multipart([(b"pad", b"pad.bin", b"")]))))])

    at_limit = client.post(UPLOAD, data=body_of(2 * MB), content_type=MULTIPART)
    assert assert_problem(at_limit, 400)["field"] == "pad"
    body = assert_problem(client.post(UPLOAD, data=body_of(2 * MB + 1), content_type=MULTIPART), 413)
    assert "uploads up to 1 MB" in body["error"]
    assert stored_entries(app) == []


@pytest.mark.parametrize("method,path", [
    ("get", "/health"),
    ("get", "/api/v1/video/status/00000000-0000-4000-8000-000000000000"),
    ("post", "/analyze/highlights"),
    ("options", "/api/v1/video/upload"),
])
def test_a_disallowed_origin_gets_no_cors_headers(make_app, method, path):
    client = make_app(CORS_ORIGINS=["http://good.example"]).test_client()
    headers = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    evil = getattr(client, method)(path, headers=headers)
    assert not [name for name in evil.headers.keys() if name.lower().startswith("access-control-")], evil.headers
    good = getattr(client, method)(path, headers={**headers, "Origin": "http://good.example"})
    assert good.headers["Access-Control-Allow-Origin"] == "http://good.example"
    assert "Access-Control-Allow-Credentials" not in good.headers


def test_the_app_serves_no_file_from_data_dir_or_the_repo(app, client, videos):
    session_id = upload(client, videos["short"]).get_json()["sessionId"]
    wait_for_status(client, session_id)
    root = app.extensions[EXTENSION_KEY].storage.root
    with open(os.path.join(root, session_id, "upload-0.bin"), "rb") as handle:
        secret = handle.read()
    name = os.path.basename(root)
    attempts = [
        f"/{name}/{session_id}/upload-0.bin",
        f"/data/{session_id}/upload-0.bin",
        f"/{session_id}/upload-0.bin",
        f"/static/../{name}/{session_id}/upload-0.bin",
        f"/static/..%2f{name}%2f{session_id}%2fupload-0.bin",
        f"/static/%2e%2e/%2e%2e/{name}/{session_id}/upload-0.bin",
        f"/static/{root}/{session_id}/upload-0.bin",
        f"/static//{root.lstrip('/')}/{session_id}/upload-0.bin",
        "/static/../data",
        "/static/../app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e%2fconfig.py",
        "/static/../../../../etc/passwd",
        f"/api/v1/video/results/{session_id}/../../../{name}",
        f"/api/v1/video/status/..%2f..%2f{name}%2f{session_id}",
    ]
    for path in attempts:
        response = client.get(path, follow_redirects=True)  # werkzeug redirects "//" to "/" first
        assert response.status_code in (400, 404), (path, response.status_code)
        assert_problem(response, response.status_code)
        assert secret[:64] not in response.data and b"import " not in response.data, path
    assert client.get("/static/app.py").status_code == 404


def test_no_route_deletes_outside_data_dir(app, client, tmp_path):
    root = app.extensions[EXTENSION_KEY].storage.root
    victim = os.path.join(os.path.dirname(root), "victim")
    os.mkdir(victim)
    for bad in ("..%2Fvictim", "..", "%2e%2e", "../victim"):
        response = client.delete(f"/api/v1/video/cleanup/{bad}")
        assert response.status_code in (404, 405)
    assert os.path.isdir(victim)
    with pytest.raises(ValueError):
        app.extensions[EXTENSION_KEY].storage.remove(victim)
    assert os.path.isdir(victim)


def test_startup_cleans_only_what_the_service_made(tmp_path):
    """A DATA_DIR pointed by mistake at a directory with other files must not lose them."""
    root = tmp_path / "shared"
    root.mkdir()
    (root / "thesis.docx").write_text("years of work")
    (root / "photos").mkdir()
    leftover = root / str(uuid.uuid4())
    leftover.mkdir()
    (leftover / "upload-0.bin").write_bytes(b"partial")
    Storage(str(root)).prepare()
    assert sorted(os.listdir(root)) == ["photos", "thesis.docx"]


def test_errors_reveal_no_versions_of_the_stack(client):
    """Server banners are the WSGI server's; the app adds no framework or Python version to errors."""
    response = client.get("/no/such/page")
    assert_problem(response, 404)
    text = response.get_data(as_text=True).lower()
    assert "werkzeug" not in text and "flask" not in text and "python" not in text
