"""Each blueprint answers its own errors: the legacy routes add `"success": false`, the others do not.

Flask picks a blueprint's handlers for errors raised in its views, also
while the body is read (werkzeug's 413); routing errors (404, 405) come
before any blueprint is chosen and go to the blueprint whose prefix holds
the path.
"""
import io
import os

import pytest

LEGACY = "/analyze/highlights"
UPLOAD = "/api/v1/video/upload"


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status and body["error"] == body["detail"] and body["detail"].endswith(".")
    return body


@pytest.mark.parametrize("path,legacy", [("/analyze/nothing-here", True), ("/api/v1/video/nothing-here", False),
                                         ("/no/such/page", False), ("/analyze", False)])
def test_unknown_addresses_are_answered_by_the_blueprint_whose_prefix_holds_them(client, path, legacy):
    assert problem(client.get(path), 404).get("success") is (False if legacy else None)


@pytest.mark.parametrize("path,legacy", [(LEGACY, True), ("/analyze/workout", True), (UPLOAD, False),
                                         ("/health", False)])
def test_a_wrong_method_is_answered_in_the_routes_own_shape(client, path, legacy):
    response = client.put(path)
    assert problem(response, 405).get("success") is (False if legacy else None)
    assert response.headers["Allow"]


@pytest.mark.parametrize("path,legacy", [(LEGACY, True), (UPLOAD, False)])
def test_a_body_over_the_limit_refused_while_it_is_read_keeps_the_routes_shape(make_app, path, legacy):
    client = make_app(MAX_UPLOAD_MB=1).test_client()
    response = client.post(path, data={"video": (io.BytesIO(os.urandom(3 * 1024 * 1024)), "big.mp4")},
                           content_type="multipart/form-data")
    body = problem(response, 413)
    assert body.get("success") is (False if legacy else None) and "1 MB" in body["detail"]


@pytest.mark.parametrize("path,legacy", [(LEGACY, True), (UPLOAD, False)])
def test_a_refused_parameter_keeps_the_routes_shape(client, videos, path, legacy):
    with open(videos["short"], "rb") as handle:
        response = client.post(path, data={"video": (handle, "clip.mp4"), "min_significance": "99"},
                               content_type="multipart/form-data")
    body = problem(response, 400)
    assert body["field"] == "min_significance" and body.get("success") is (False if legacy else None)
