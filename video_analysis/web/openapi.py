"""The OpenAPI 3.1 document of every route, served at /api/v1/openapi.json.

The analysis parameters are generated from engine/parameters.py's pydantic
models, which also validate every request: the documented defaults and
limits are the enforced ones. The web page reads them from
`components.schemas.HighlightsParameters` and `WorkoutParameters`.
"""
from __future__ import annotations

from typing import Dict

from video_analysis.config import Config
from video_analysis.engine.parameters import REEL_PARAMETERS, AnalysisKind
from video_analysis.web.parameters import PARAMETER_SCHEMAS

_KINDS = [kind.value for kind in AnalysisKind]


def _parameter_schemas() -> Dict[str, dict]:
    """Each analysis's parameters, named as the models are (HighlightsParameters, WorkoutParameters)."""
    return {kind.parameters.__name__: kind.parameters.model_json_schema() for kind in AnalysisKind}


# What the models cannot say about a prompt: its length in tokens depends on the loaded model.
_PROMPT_TOKENS = (" Also at most what the loaded model's context leaves in tokens once the other prompt, the frames "
                  "and max_tokens are counted (400 naming the field).")


def _form_fields(reel: bool) -> Dict[str, dict]:
    """The parameters as multipart fields: type and limits from the models, with every analysis's default.
    `reel=False` (the legacy routes): without the reel's."""
    fields = {}
    for name, schema in PARAMETER_SCHEMAS.items():
        if name in REEL_PARAMETERS and not reel:
            continue
        if schema.get("type") == "boolean":
            fields[name] = {"type": "boolean", "default": schema["default"],
                            "description": schema["description"] + " A form sends true or false."}
        elif schema.get("type") in ("integer", "number"):
            defaults = [f"{kind.value} {kind.parameters.model_fields[name].default}" for kind in AnalysisKind
                        if name in kind.parameters.model_fields]
            fields[name] = {"type": schema["type"], "minimum": schema["minimum"], "maximum": schema["maximum"],
                            "description": f"{schema['description']} Default: {', '.join(defaults)}."}
        elif "enum" in schema:
            fields[name] = {"type": "string", "enum": schema["enum"], "default": schema["default"],
                            "description": schema["description"]}
        else:
            fields[name] = {"type": "string", "description": schema["description"] + _PROMPT_TOKENS}
    return fields


_THUMBNAIL_URL = {"type": ["string", "null"],
                  "description": "/api/v1/video/thumbnail/<id>/<n>.jpg, n its place in the list from 0; null in "
                                 "partial results."}


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
        **_form_fields(reel=with_type),
    }
    if with_type:
        properties["analysis_type"] = {"type": "string", "enum": _KINDS, "default": AnalysisKind.HIGHLIGHTS.value}
    return {"required": True, "content": {"multipart/form-data": {"schema": {"type": "object", "properties": properties}}}}


_ID = [{"name": "session_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}]
_NOT_FOUND = _problem("Unknown, malformed, cleaned-up or expired session id.")
# Cluster mode: every route that reads or writes sessions answers this while Redis cannot be reached.
_REDIS_DOWN = ("Cluster mode (REDIS_URL): the service cannot reach its Redis server, so nothing was read or changed "
               "(Retry-After: 5).")
_NOT_RECORDED = _problem("The change could not be recorded (the server's disk is full or not writable), so nothing "
                         "changed; Retry-After says when to try again. " + _REDIS_DOWN)
_UNAVAILABLE = _problem(_REDIS_DOWN)
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
    "description": "Makes the upload safe to send again (IETF httpapi draft): the same key with the same file bytes "
                   "and fields answers the first upload's 202 again (same session, no second job or file); 409 while "
                   "the first is still being received; 422 with another file or other fields. Quoted as the draft "
                   "writes it (\"abc\") or bare (abc, without commas). Keys live as long as their session, across "
                   "restarts too.",
}
_PARTIAL = {
    "name": "partial", "in": "query", "required": False, "schema": {"enum": ["true", "false"], "default": "false"},
    "description": "true: while the analysis is pending or processing, answer 200 with the result built from the "
                   "segments finished so far and `partial: true`; once completed, the final result with "
                   "`partial: false`. Failed or cancelled sessions answer 400 either way.",
}


def _upload_errors() -> dict:
    return {
        "400": _problem("No file, empty file, bad `params` JSON, unknown field or parameter out of range, prompts "
                        "that do not fit the loaded model's context, or a malformed Idempotency-Key."),
        "413": _problem("Larger than MAX_UPLOAD_MB, or too many form parts."),
        "415": _problem("Not a video OpenCV can decode (text, image, random bytes, truncated file)."),
        "503": _problem("Queue full (with Retry-After); the model could not be loaded, for good or until its next "
                        "try (then with Retry-After: the seconds until it); storage not writable. While the model "
                        "is still loading, uploads are accepted (202) and their jobs wait for it (in cluster mode: "
                        "while no model worker is running). " + _REDIS_DOWN),
        "507": _problem("The upload would pass MAX_STORAGE_MB (refused before the body is read when its "
                        "Content-Length cannot fit; a chunked body is cut off), or the server's disk is full "
                        "(the upload or its session could not be recorded)."),
    }


def _legacy_responses() -> dict:
    errors = _upload_errors()
    return {"200": _json("#/components/schemas/LegacyResult", "Done (sent while the model loaded: once it had)."),
            **errors,
            "400": _problem(errors["400"]["description"] + " Sent while the model loaded, the prompts are checked "
                            "once it has, with the same sentence."),
            "422": _problem("The video failed part-way through."),
            "503": _problem("Queue full; the model could not be loaded (before or while the request waited; for "
                            "good, or until its next try: Retry-After); storage not writable; "
                            "MAX_LEGACY_REQUESTS synchronous analyses already running (Retry-After: 60); "
                            "or cancelled because the server is shutting down (Retry-After: 30). " + _REDIS_DOWN)}


def openapi_document(config: Config) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Video analysis service", "version": "1.0.0",
                 "description": "Highlights and workout steps from videos with a vision-language model. "
                                f"Uploads up to {config.MAX_UPLOAD_MB} MB."},
        "paths": {
            "/api/v1/video/upload": {"post": {
                "summary": "Upload a video and queue its analysis",
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": _upload_body(with_type=True),
                "responses": {"202": {**_json("#/components/schemas/Accepted",
                                              "Queued; also while the model is still loading (the job waits for it, "
                                              "and fails with the reason if it does not load; `message` says so). "
                                              "Sent again with the same Idempotency-Key: the first upload's answer "
                                              "again, word for word."),
                                      "headers": {"Location": {"schema": {"type": "string"}}}},
                              **_upload_errors(),
                              "409": _problem("An upload with this Idempotency-Key is still being received."),
                              "422": _problem("This Idempotency-Key was used for another file or other fields.")}}},
            "/api/v1/video/status/{session_id}": {"get": {
                "summary": "Progress of an analysis", "parameters": _ID,
                "responses": {"200": _json("#/components/schemas/Status", "The session's status."), "404": _NOT_FOUND,
                              "503": _UNAVAILABLE}}},
            "/api/v1/video/results/{session_id}": {"get": {
                "summary": "Results of a completed analysis, or with ?partial=true the results so far",
                "parameters": [*_ID, _PARTIAL],
                "responses": {"200": _json("#/components/schemas/Results",
                                           "Completed; with ?partial=true also while pending or processing."),
                              "400": _problem("Not completed (without ?partial=true), failed or cancelled; "
                                              "`sessionStatus` says where it is. Or `partial` is not true or false."),
                              "404": _NOT_FOUND, "503": _UNAVAILABLE}}},
            "/api/v1/video/cancel/{session_id}": {"post": {
                "summary": "Cancel a pending or running analysis (idempotent)", "parameters": _ID,
                "responses": {"200": _json("#/components/schemas/Cancelled", "Cancelled."),
                              "409": _problem("Already completed or failed."), "404": _NOT_FOUND,
                              "503": _NOT_RECORDED}}},
            "/api/v1/video/cleanup/{session_id}": {"delete": {
                "summary": "Cancel if running, delete every file of the session and forget it", "parameters": _ID,
                "responses": {"200": _json("#/components/schemas/CleanedUp", "Deleted."), "404": _NOT_FOUND,
                              "503": _NOT_RECORDED}}},
            "/api/v1/video/thumbnail/{session_id}/{n}.jpg": {"get": {
                "summary": "The thumbnail of a completed analysis's highlight or exercise step n (from 0)",
                "parameters": [*_ID, {"name": "n", "in": "path", "required": True,
                                      "schema": {"type": "integer", "minimum": 0}}],
                "responses": {"200": {"description": "A JPEG from inside the highlight or step, at most 320 px "
                                                     "wide, its aspect kept. ETag; Cache-Control: private, "
                                                     "max-age=86400.",
                                      "content": {"image/jpeg": {}}},
                              "304": {"description": "If-None-Match named its ETag."},
                              "404": _problem("Unknown session, not completed, or no finding n (see its "
                                              "thumbnailUrl)."),
                              "503": _UNAVAILABLE}}},
            "/api/v1/video/reel/{session_id}.mp4": {"get": {
                "summary": "The reel of a completed analysis (asked for with reel=true), seekable with Range",
                "parameters": [*_ID, {"name": "Range", "in": "header", "required": False,
                                      "schema": {"type": "string"}, "description": "bytes=0-99, bytes=100- or "
                                                                                  "bytes=-100."}],
                "responses": {"200": {"description": "The whole MP4 (H.264, AAC when the video has sound); "
                                                     "Accept-Ranges: bytes; ETag; Cache-Control: private, "
                                                     "max-age=86400.",
                                      "content": {"video/mp4": {}}},
                              "206": {"description": "The bytes asked for with Range, with Content-Range.",
                                      "content": {"video/mp4": {}}},
                              "304": {"description": "If-None-Match named its ETag."},
                              "404": _problem("Unknown session, not completed, or no reel (none was asked for, "
                                              "there was nothing to put in it, or it was refused: reelUrl is "
                                              "null and the status message says why)."),
                              "416": _problem("The Range lies outside the file (Content-Range: bytes */size)."),
                              "503": _UNAVAILABLE}}},
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
            **_parameter_schemas(),
            "Problem": {"type": "object", "required": ["type", "title", "status", "detail", "error"], "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"}, "error": {"type": "string"}, "field": {"type": "string"},
                "sessionStatus": {"type": "string"}}},
            "Accepted": {"type": "object", "required": ["sessionId", "status", "analysisType", "message", "statusUrl",
                                                        "resultsUrl", "createdAt"],
                         "properties": {"sessionId": {"type": "string", "format": "uuid"},
                                        "status": {"const": "pending"},
                                        "analysisType": {"enum": _KINDS},
                                        "message": {"type": "string"}, "statusUrl": {"type": "string"},
                                        "resultsUrl": {"type": "string"}, "createdAt": {"type": "string"}}},
            "Status": {"type": "object", "properties": {
                "sessionId": {"type": "string"},
                "status": {"enum": ["pending", "processing", "completed", "failed", "cancelled"]},
                "analysisType": {"type": "string"}, "progress": {"type": "number", "minimum": 0, "maximum": 100},
                "currentStep": {"enum": ["queued", "reading", "analyzing", "ranking", "rendering", "done",
                                         "cancelled", "failed"],
                                "description": "rendering: making the thumbnails and the reel, after the segments."},
                "message": {"type": "string"}, "segmentsDone": {"type": "integer"},
                "segmentsTotal": {"type": ["integer", "null"]}, "createdAt": {"type": "string"},
                "updatedAt": {"type": "string"}, "startedAt": {"type": ["string", "null"]},
                "finishedAt": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]},
                "worker": {"type": ["string", "null"],
                           "description": "Cluster mode (REDIS_URL) only, absent otherwise: the model worker running "
                                          "the job, or the last one that ran it, as \"host:pid\"; null until a "
                                          "worker has started it."}}},
            "Results": {"type": "object", "properties": {
                "sessionId": {"type": "string"},
                "status": {"enum": ["pending", "processing", "completed"],
                           "description": "completed, unless asked with ?partial=true."},
                "analysisType": {"type": "string"},
                "data": {"type": "object", "description": "The result object; with `partial: true` built from the "
                                                          "segments finished so far (total_segments_analyzed of "
                                                          "them), the same shape as the final one. Each row of "
                                                          "`all_analyses` (highlights) and `segment_analyses` "
                                                          "(workout) has `frames_analyzed` (frames sent to the "
                                                          "model, 0 when the answer was reused) and `reused_from` "
                                                          "(the segment whose answer it repeats, or null); "
                                                          "`settings` has `segmentation` and `frame_selection`, "
                                                          "and `reel` (and for workout `reel_seconds_per_step`).",
                         "properties": {
                             "highlights": {"type": "array", "items": {"type": "object", "properties": {
                                 "thumbnailUrl": _THUMBNAIL_URL}}},
                             "exercise_steps": {"type": "array", "items": {"type": "object", "properties": {
                                 "thumbnailUrl": _THUMBNAIL_URL}}},
                             "reelUrl": {"type": ["string", "null"],
                                         "description": "/api/v1/video/reel/<id>.mp4; null when no reel was asked "
                                                        "for, there was nothing to put in it, it would have lasted "
                                                        "more than MAX_REEL_SECONDS (the status message says so), "
                                                        "or the results are partial."},
                             "reelDuration": {"type": ["number", "null"], "description": "The reel's seconds."},
                             "reelSize": {"type": ["integer", "null"], "description": "The reel's bytes."}}},
                "results": {"type": "object", "description": "The same as `data`."},
                "partial": {"type": "boolean", "description": "Present only when asked with ?partial=: whether the "
                                                              "analysis is still going."}}},
            "Cancelled": {"type": "object", "properties": {"sessionId": {"type": "string"},
                                                           "status": {"const": "cancelled"},
                                                           "message": {"type": "string"}}},
            "CleanedUp": {"type": "object", "properties": {"sessionId": {"type": "string"},
                                                           "message": {"type": "string"}}},
            "LegacyResult": {"type": "object", "properties": {
                "success": {"const": True}, "analysis_type": {"enum": ["highlights", "workout_timestamps"]},
                "data": {"type": "object"}}},
            "Health": {"type": "object", "properties": {
                "status": {"enum": ["healthy", "degraded"],
                           "description": "degraded: the model could not be loaded (`reason` says why and what to do), or "
                                          "`problems` lists what keeps the service from keeping uploads. In "
                                          "cluster mode also while Redis cannot be reached or no model worker "
                                          "has been seen for 60 s (`reason` says which). /health answers 200 "
                                          "either way."},
                "model": {"type": "object", "properties": {
                    "id": {"type": "string"},
                    "loaded": {"type": "boolean", "description": "In cluster mode: at least one model worker is "
                                                                "there."},
                    "device": {"type": "string", "description": "Where the model runs (cpu here); `workers` in "
                                                               "cluster mode."},
                    "nextAttemptAt": {"type": "string", "format": "date-time",
                                      "description": "When the model is loaded again, after a try that failed "
                                                     "because the Hugging Face Hub could not be reached; present "
                                                     "only while such a try is due."},
                    "failedAttempts": {"type": "integer", "minimum": 1,
                                       "description": "Tries in a row that failed because the Hub could not be "
                                                      "reached; absent once the model has loaded."}}},
                "queue": {"type": "object", "properties": {
                    "pending": {"type": "integer"}, "processing": {"type": "integer"},
                    "depth": {"type": "integer", "minimum": 0,
                              "description": "Cluster mode only: jobs waiting in the Redis queue for a model worker "
                                             "(a job handed back by a worker that stopped counts again)."}}},
                "workers": {"type": "array", "description": "Cluster mode only: the model workers heard from in "
                                                            "the last 60 s.",
                            "items": {"type": "object", "required": ["id", "model", "state", "job"], "properties": {
                                "id": {"type": "string", "description": "host:pid, as in a status's `worker`."},
                                "model": {"type": ["string", "null"], "description": "The model it loaded."},
                                "state": {"type": "string", "description": "RQ's word for it: idle (waiting for a "
                                                                               "job), busy (running one), started "
                                                                               "or suspended."},
                                "job": {"type": ["string", "null"],
                                        "description": "The session id of the job it runs, or null."},
                                "cores": {"type": ["integer", "null"],
                                          "description": "The CPU cores its model was given for its last job: "
                                                         "MODEL_CORES, or its machine's cores split among the "
                                                         "workers running jobs there; null before its first job."}}}},
                "version": {"type": "string"},
                "problems": {"type": "array", "items": {"type": "string"},
                             "description": "Present when the service cannot keep what it is given (DATA_DIR or "
                                            "the state database deleted while it runs): sentences for an "
                                            "operator; `status` is then degraded."},
                "reason": {"type": "string", "description": "Why the model is not loaded yet (still loading, or the "
                                                           "failure and what to do), in plain words; in cluster "
                                                           "mode why the service is degraded (Redis unreachable, "
                                                           "no model worker seen for 60 s)."}}},
        }},
    }
