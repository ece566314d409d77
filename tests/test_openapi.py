"""The OpenAPI document is valid 3.1, covers exactly the app's routes, and documents what the app enforces."""
import io
import re
import time

import pytest
from openapi_spec_validator import validate

UPLOAD = "/api/v1/video/upload"
KINDS = {"highlights": "HighlightsParameters", "workout": "WorkoutParameters"}


def _app_routes(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    return routes


def _document(client) -> dict:
    return client.get("/api/v1/openapi.json").get_json()


def _post(client, video: bytes, **fields):
    data = {"video": (io.BytesIO(video), "clip.mp4"), **fields}
    return client.post(UPLOAD, data=data, content_type="multipart/form-data")


def _numeric_limits(document):
    """(kind, name, schema) of every documented numeric parameter, from the schemas the web page reads."""
    for kind, schema_name in KINDS.items():
        for name, schema in document["components"]["schemas"][schema_name]["properties"].items():
            if schema.get("type") in ("integer", "number"):
                yield kind, name, schema


@pytest.fixture(scope="module")
def short_video(videos) -> bytes:
    with open(videos["short"], "rb") as handle:
        return handle.read()


def test_the_document_is_valid_openapi_3_1(client):
    document = _document(client)
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_the_document_covers_exactly_the_apps_routes(app, client):
    """Every route a client can use; the cluster's internal route for model workers (404 to anyone without the
    WORKER_TOKEN) is no client's, and stays out."""
    from video_analysis.cluster.video_fetch import INTERNAL_PREFIX

    document = _document(client)
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    routes = _app_routes(app)
    internal = {(path, method) for path, method in routes if path.startswith(INTERNAL_PREFIX + "/")}
    assert internal == {(INTERNAL_PREFIX + "/videos/{session_id}", "get"),
                        (INTERNAL_PREFIX + "/videos/{session_id}/outputs/{name}", "put")}
    assert documented == routes - internal


def test_a_value_just_outside_each_documented_limit_is_a_400_naming_the_field(client, short_video):
    checked = 0
    for kind, name, schema in _numeric_limits(_document(client)):
        step = 1 if schema["type"] == "integer" else 0.5
        for outside in (schema["minimum"] - step, schema["maximum"] + step):
            response = _post(client, short_video, analysis_type=kind, **{name: str(outside)})
            body = response.get_json()
            assert response.status_code == 400 and body["field"] == name, (kind, name, outside, body)
            assert f"between {schema['minimum']:g} and {schema['maximum']:g}" in body["detail"], body
            checked += 1
    assert checked == 2 * (5 + 4)  # highlights has five numeric parameters, workout four


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bound", ["minimum", "maximum"])
def test_each_documented_limit_itself_is_accepted(client, short_video, kind, bound):
    for name, schema in [(name, schema) for k, name, schema in _numeric_limits(_document(client)) if k == kind]:
        response = _post(client, short_video, analysis_type=kind, **{name: str(schema[bound])})
        assert response.status_code == 202, (name, schema[bound], response.get_json())
        client.delete(f"/api/v1/video/cleanup/{response.get_json()['sessionId']}")


@pytest.mark.parametrize("kind", KINDS)
def test_the_documented_defaults_are_what_a_job_receives(client, short_video, kind):
    schema = _document(client)["components"]["schemas"][KINDS[kind]]
    session_id = _post(client, short_video, analysis_type=kind).get_json()["sessionId"]
    deadline = time.monotonic() + 60
    while client.get(f"/api/v1/video/status/{session_id}").get_json()["status"] != "completed":
        assert time.monotonic() < deadline, "the job did not complete"
        time.sleep(0.05)
    settings = client.get(f"/api/v1/video/results/{session_id}").get_json()["data"]["settings"]
    # The prompts' default (null) stands for the analysis's own prompts, which the settings spell out.
    numbers = {name: prop["default"] for name, prop in schema["properties"].items() if "_prompt" not in name}
    assert len(numbers) == (8 if kind == "highlights" else 7)  # reel, and for workout reel_seconds_per_step too
    assert {name: settings[name] for name in numbers} == numbers


def test_the_analysis_types_are_documented_where_the_upload_reads_them(client):
    document = _document(client)
    body = document["paths"][UPLOAD]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["analysis_type"]["enum"] == list(KINDS)
    documented = set(body["properties"]) - {"video", "params", "analysis_type"}
    for kind, schema_name in KINDS.items():
        assert set(document["components"]["schemas"][schema_name]["properties"]) <= documented


def _validator(document, schema):
    from jsonschema import Draft202012Validator

    return Draft202012Validator({**schema, "components": document["components"]})


@pytest.mark.parametrize("key", ["a", "8e03978e-40d5-43e8-bc93-6894a57f9324", "~" * 255, "", "é", "x" * 256, "tab\tkey"])
def test_the_documented_idempotency_key_is_the_one_the_upload_takes(client, short_video, key):
    document = _document(client)
    (header,) = [p for p in document["paths"][UPLOAD]["post"]["parameters"] if p["name"] == "Idempotency-Key"]
    documented = _validator(document, header["schema"]).is_valid(key)
    response = client.post(UPLOAD, data={"video": (io.BytesIO(short_video), "clip.mp4")},
                           content_type="multipart/form-data", headers={"Idempotency-Key": key})
    assert (response.status_code == 202) == documented, (key, response.status_code)


def test_partial_and_final_results_match_the_documented_schema(client, videos):
    document = _document(client)
    results = _validator(document, {"$ref": "#/components/schemas/Results"})
    with open(videos["long"], "rb") as handle:
        session_id = client.post(UPLOAD, data={"video": (handle, "long.mp4"), "segment_duration": "3"},
                                 content_type="multipart/form-data").get_json()["sessionId"]
    partial = client.get(f"/api/v1/video/results/{session_id}?partial=true").get_json()
    results.validate(partial)
    assert partial["partial"] is True
    while client.get(f"/api/v1/video/status/{session_id}").get_json()["status"] != "completed":
        time.sleep(0.05)
    results.validate(client.get(f"/api/v1/video/results/{session_id}").get_json())
    names = [p["name"] for p in document["paths"]["/api/v1/video/results/{session_id}"]["get"]["parameters"]]
    assert "partial" in names


def _undocumented(body: dict, schema: dict) -> list:
    """Members of `body` (and of its documented objects and arrays of objects) that `schema` does not name."""
    missing = []
    for name, value in body.items():
        member = schema.get("properties", {}).get(name)
        if member is None:
            missing.append(name)
        elif isinstance(value, dict) and "properties" in member:
            missing += [f"{name}.{inner}" for inner in _undocumented(value, member)]
        elif isinstance(value, list) and "properties" in member.get("items", {}):
            missing += [f"{name}[].{inner}" for item in value for inner in _undocumented(item, member["items"])]
    return missing


def test_cluster_mode_sends_what_the_document_says(cluster, videos):
    """Cluster mode's additions (a status's `worker`, /health's `workers` and `queue.depth`) are documented,
    with the types the service sends, by the document a cluster's API serves."""
    import requests

    cluster.start_api()
    worker = cluster.add_worker()
    document = requests.get(cluster.base + "/api/v1/openapi.json", timeout=10).json()
    schemas = document["components"]["schemas"]
    health = cluster.health()
    _validator(document, {"$ref": "#/components/schemas/Health"}).validate(health)
    assert _undocumented(health, schemas["Health"]) == []
    assert [w["id"] for w in health["workers"]] == [worker.name] and "depth" in health["queue"]

    with open(videos["short"], "rb") as handle:
        accepted = requests.post(cluster.base + UPLOAD, files={"video": ("clip.mp4", handle)}, timeout=30).json()
    status = _validator(document, {"$ref": "#/components/schemas/Status"})
    seen = []
    while not seen or seen[-1]["status"] not in ("completed", "failed", "cancelled"):
        body = requests.get(cluster.base + accepted["statusUrl"], timeout=10).json()
        status.validate(body)
        assert _undocumented(body, schemas["Status"]) == []
        seen.append(body)
        time.sleep(0.05)
    assert seen[-1]["status"] == "completed", seen[-1]
    assert seen[-1]["worker"] == worker.name
