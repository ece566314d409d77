"""What every refusal must look like: RFC 9457 problem+json whose `error` is a sentence, nothing leaked.

`assert_problem` checks one response; `refused` adds what the hostile-input
tests demand of every case: no server path in the answer, the server still
healthy, and DATA_DIR holding only what it held before.
"""
from __future__ import annotations

import os

from tests.support.api import stored_entries
from tools.service_process import REPO
from video_analysis.web.services import EXTENSION_KEY


def assert_problem(response, status: int) -> dict:
    """The response is the problem `status` with the contract's fields; returns its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status and body["error"] == body["detail"]
    assert {"type", "title", "status", "detail", "error"} <= set(body)
    assert body["error"].strip().endswith((".", "?", ")")) and len(body["error"]) > 15
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "/tmp" not in text and os.getcwd() not in text
    return body


def refused(app, response, status: int, keep=(), field=None) -> dict:
    """The response is the problem `status`; nothing leaked; the server is fine; DATA_DIR holds only `keep`."""
    body = assert_problem(response, status)
    text = response.get_data(as_text=True)
    for path in _server_paths(app):
        assert path not in text, f"{path} leaked in {text}"
    assert "Traceback" not in text and 'File "' not in text
    if field is not None:
        assert body.get("field") == field, body
    if _asked_a_legacy_route(response):
        assert body["success"] is False
    assert_healthy(app)
    assert stored_entries(app) == sorted(keep)
    return body


def _server_paths(app) -> list:
    svc = app.extensions[EXTENSION_KEY]
    root = svc.storage.root
    return [root, os.path.dirname(root), REPO, svc.config.MODEL]


def assert_healthy(app) -> None:
    response = app.test_client().get("/health")
    assert response.status_code == 200 and response.get_json()["status"] == "healthy", response.get_data(as_text=True)


def _asked_a_legacy_route(response) -> bool:
    request = getattr(response, "request", None)  # a test client's response knows its request; RawResponse does not
    return request is not None and request.path.startswith("/analyze/")
