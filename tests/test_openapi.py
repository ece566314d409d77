"""The OpenAPI document is valid 3.1 and covers exactly the app's routes."""
import re

from openapi_spec_validator import validate

from video_analysis.web.parameters import PARAMETERS


def _app_routes(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    return routes


def test_the_document_is_valid_openapi_3_1(client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_the_document_covers_exactly_the_apps_routes(app, client):
    document = client.get("/api/v1/openapi.json").get_json()
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == _app_routes(app)


def test_documented_limits_are_the_enforced_ones(client):
    document = client.get("/api/v1/openapi.json").get_json()
    schema = document["paths"]["/api/v1/video/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    for name, spec in PARAMETERS.items():
        if spec.kind != "string":
            assert (schema["properties"][name]["minimum"], schema["properties"][name]["maximum"]) == (spec.minimum, spec.maximum)
