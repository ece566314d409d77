"""The OpenAPI 3.1 document of every route, served at /api/v1/openapi.json.

Built from `parameters.PARAMETERS` so the documented limits are the enforced ones.
"""
from __future__ import annotations

from video_analysis.config import Config
from video_analysis.engine.parameters import HighlightsParameters, WorkoutParameters
from video_analysis.web.parameters import ANALYSIS_TYPES, PARAMETERS


def _parameter_schemas() -> dict:
    schemas = {}
    for name, spec in PARAMETERS.items():
        if spec.kind == "string":
            schemas[name] = {"type": "string", "description": (
                f"At most {spec.max_bytes} bytes of UTF-8, and at most what the loaded model's context leaves "
                "in tokens once the other prompt, the frames and max_tokens are counted (400 naming the field).")}
        else:
            defaults = {t: spec.default_for(t) for t in ANALYSIS_TYPES if spec.applies_to(t)}
            schemas[name] = {
                "type": spec.kind, "minimum": spec.minimum, "maximum": spec.maximum,
                "description": "Default: " + ", ".join(f"{t} {v}" for t, v in defaults.items()) + ".",
            }
    return schemas


def _json(schema_ref: str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": schema_ref}}}}


def _problem(description: str) -> dict:
    return {"description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def _upload_body(with_type: bool) -> dict:
    properties = {
        "video": {"type": "string", "contentMediaType": "application/octet-stream",
                  "description": "The video file (the field may also be named `file`)."},
        "params": {"type": "string", "description": "A JSON object of parameters; plain fields win over it."},
        **_parameter_schemas(),
    }
    if with_type:
        properties["analysis_type"] = {"type": "string", "enum": list(ANALYSIS_TYPES), "default": "highlights"}
    return {"required": True, "content": {"multipart/form-data": {"schema": {"type": "object", "properties": properties}}}}


_ID = [{"name": "session_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}]
_NOT_FOUND = _problem("Unknown, malformed, cleaned-up or expired session id.")


def _upload_errors() -> dict:
    return {
        "400": _problem("No file, empty file, bad `params` JSON, unknown field or parameter out of range."),
        "413": _problem("Larger than MAX_UPLOAD_MB, or too many form parts."),
        "415": _problem("Not a video OpenCV can decode (text, image, random bytes, truncated file)."),
        "503": _problem("Queue full (with Retry-After), model loading or not loadable, storage not writable."),
        "507": _problem("The upload would pass MAX_STORAGE_MB (refused before the body is read when its "
                        "Content-Length cannot fit; a chunked body is cut off), or the server's disk is full."),
    }


def _legacy_responses() -> dict:
    return {"200": _json("#/components/schemas/LegacyResult", "Done."), **_upload_errors(),
            "422": _problem("The video failed part-way through."),
            "503": _problem("Queue full, model loading or not loadable, storage not writable, "
                            "MAX_LEGACY_REQUESTS synchronous analyses already running (Retry-After: 60), "
                            "or cancelled because the server is shutting down (Retry-After: 30).")}


def openapi_document(config: Config) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Video analysis service", "version": "1.0.0",
                 "description": "Highlights and workout steps from videos with a vision-language model. "
                                f"Uploads up to {config.MAX_UPLOAD_MB} MB."},
        "paths": {
            "/api/v1/video/upload": {"post": {
                "summary": "Upload a video and queue its analysis",
                "requestBody": _upload_body(with_type=True),
                "responses": {"202": {**_json("#/components/schemas/Accepted", "Queued."),
                                      "headers": {"Location": {"schema": {"type": "string"}}}},
                              **_upload_errors()}}},
            "/api/v1/video/status/{session_id}": {"get": {
                "summary": "Progress of an analysis", "parameters": _ID,
                "responses": {"200": _json("#/components/schemas/Status", "The session's status."), "404": _NOT_FOUND}}},
            "/api/v1/video/results/{session_id}": {"get": {
                "summary": "Results of a completed analysis", "parameters": _ID,
                "responses": {"200": _json("#/components/schemas/Results", "Completed."),
                              "400": _problem("Not completed; `sessionStatus` says where it is."), "404": _NOT_FOUND}}},
            "/api/v1/video/cancel/{session_id}": {"post": {
                "summary": "Cancel a pending or running analysis (idempotent)", "parameters": _ID,
                "responses": {"200": _json("#/components/schemas/Cancelled", "Cancelled."),
                              "409": _problem("Already completed or failed."), "404": _NOT_FOUND}}},
            "/api/v1/video/cleanup/{session_id}": {"delete": {
                "summary": "Cancel if running, delete every file of the session and forget it", "parameters": _ID,
                "responses": {"200": _json("#/components/schemas/CleanedUp", "Deleted."), "404": _NOT_FOUND}}},
            "/analyze/highlights": {"post": {
                "summary": "Legacy: analyse highlights and wait for the result", "requestBody": _upload_body(False),
                "responses": _legacy_responses()}},
            "/analyze/workout": {"post": {
                "summary": "Legacy: break a workout into steps and wait for the result",
                "requestBody": _upload_body(False),
                "responses": _legacy_responses()}},
            "/health": {"get": {"summary": "Service health, model and queue",
                                "responses": {"200": _json("#/components/schemas/Health", "Healthy or degraded.")}}},
            "/api/v1/openapi.json": {"get": {"summary": "This document",
                                             "responses": {"200": {"description": "OpenAPI 3.1 document."}}}},
            "/": {"get": {"summary": "The web page", "responses": {"200": {"description": "HTML.",
                                                                          "content": {"text/html": {}}}}}},
        },
        "components": {"schemas": {
            # Each analysis's parameters with their defaults and limits; the web page reads them from here.
            "HighlightsParameters": HighlightsParameters.model_json_schema(),
            "WorkoutParameters": WorkoutParameters.model_json_schema(),
            "Problem": {"type": "object", "required": ["type", "title", "status", "detail", "error"], "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"}, "error": {"type": "string"}, "field": {"type": "string"},
                "sessionStatus": {"type": "string"}}},
            "Accepted": {"type": "object", "required": ["sessionId", "status", "analysisType", "message", "statusUrl",
                                                        "resultsUrl", "createdAt"],
                         "properties": {"sessionId": {"type": "string", "format": "uuid"},
                                        "status": {"const": "pending"}, "analysisType": {"enum": list(ANALYSIS_TYPES)},
                                        "message": {"type": "string"}, "statusUrl": {"type": "string"},
                                        "resultsUrl": {"type": "string"}, "createdAt": {"type": "string"}}},
            "Status": {"type": "object", "properties": {
                "sessionId": {"type": "string"},
                "status": {"enum": ["pending", "processing", "completed", "failed", "cancelled"]},
                "analysisType": {"type": "string"}, "progress": {"type": "number", "minimum": 0, "maximum": 100},
                "currentStep": {"enum": ["queued", "reading", "analyzing", "ranking", "done", "cancelled", "failed"]},
                "message": {"type": "string"}, "segmentsDone": {"type": "integer"},
                "segmentsTotal": {"type": ["integer", "null"]}, "createdAt": {"type": "string"},
                "updatedAt": {"type": "string"}, "startedAt": {"type": ["string", "null"]},
                "finishedAt": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]}}},
            "Results": {"type": "object", "properties": {
                "sessionId": {"type": "string"}, "status": {"const": "completed"}, "analysisType": {"type": "string"},
                "data": {"type": "object"}, "results": {"type": "object"}}},
            "Cancelled": {"type": "object", "properties": {"sessionId": {"type": "string"},
                                                           "status": {"const": "cancelled"},
                                                           "message": {"type": "string"}}},
            "CleanedUp": {"type": "object", "properties": {"sessionId": {"type": "string"},
                                                           "message": {"type": "string"}}},
            "LegacyResult": {"type": "object", "properties": {
                "success": {"const": True}, "analysis_type": {"enum": ["highlights", "workout_timestamps"]},
                "data": {"type": "object"}}},
            "Health": {"type": "object", "properties": {
                "status": {"enum": ["healthy", "degraded"]},
                "model": {"type": "object", "properties": {"id": {"type": "string"}, "loaded": {"type": "boolean"},
                                                           "device": {"type": "string"}}},
                "queue": {"type": "object", "properties": {"pending": {"type": "integer"},
                                                           "processing": {"type": "integer"}}},
                "version": {"type": "string"}, "reason": {"type": "string"}}},
        }},
    }
