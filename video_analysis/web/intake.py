"""Receiving an upload: admission, streaming to disk, validation, probing, job submission.

Admission is a model that loads or has loaded (503 when it failed to load, for
good or until its next try), a queue slot (503 when MAX_QUEUED_JOBS are
unfinished), then room under MAX_STORAGE_MB for the declared body (507
before reading it). An upload taken while the model loads is queued, and its
job waits for the model; its prompts are checked against the model's context
then, by the job, rather than here.

Shared by the async upload route and the legacy /analyze routes so that both
refuse the same bad input the same way. Whatever goes wrong, the files this
request wrote are gone before the answer leaves.
"""
from __future__ import annotations

import math
import os
import time
from typing import Optional

from flask import request
from werkzeug.exceptions import HTTPException

from video_analysis.engine.parameters import AnalysisKind
from video_analysis.jobs.analysis_process import ModelState, ModelUnavailable
from video_analysis.jobs.queue import QueueFull, ShuttingDown
from video_analysis.jobs.sessions import KeyInUse, SessionState, StateNotSaved, StoreUnavailable, iso_utc
from video_analysis.jobs.storage import StorageError, StorageFull, UploadSpool, display_filename, storage_error
from video_analysis.video import VideoError, probe_video
from video_analysis.web.errors import ApiError
from video_analysis.web.idempotency import idempotency_key, in_progress, reused, upload_fingerprint
from video_analysis.web.parameters import check_prompts_fit, parse_analysis_request
from video_analysis.web.services import Services, services

FILE_FIELDS = ("video", "file")
_MB = 1024 * 1024


def seconds_to_next_try(state: ModelState) -> int:
    return max(1, math.ceil(state.next_attempt_at - time.time()))


def next_try_in(state: ModelState) -> str:
    """When the model's next try to load is: "in 15 s (at 2026-11-28T13:36:00.000Z)"."""
    return f"in {seconds_to_next_try(state)} s (at {iso_utc(state.next_attempt_at)})"


def _full_stop(text: str) -> str:
    return text if text.rstrip().endswith((".", "!", "?")) else text.rstrip() + "."


def _require_model() -> ModelState:
    """Refuse an upload only when no load of the model is under way; while it loads, its job will wait for it."""
    state = services().analysis.state()
    if state.next_attempt_at is not None:  # the Hub could not be reached; the next try is due at a known time
        seconds = seconds_to_next_try(state)
        raise ApiError(503, f"The service cannot analyse videos until its model has loaded. {state.load_error} "
                            f"It tries again by itself in {seconds} s; send the video after that.",
                       "Model unavailable", headers={"Retry-After": str(seconds)})
    if state.load_error:
        raise ApiError(503, "The service cannot analyse videos because its model could not be loaded. "
                            f"{_full_stop(state.load_error)} An operator must fix the MODEL setting and restart the "
                            "service (GET /health says the same).", "Model unavailable")
    return state


# What to do when MAX_STORAGE_MB is reached: room comes back only when sessions are cleaned up or expire.
# No Retry-After: the server cannot tell when that will be.
_MAKE_ROOM = ("Delete the sessions you no longer need (DELETE /api/v1/video/cleanup/<id>), wait for finished "
              "ones to expire, or send a smaller video.")


def _megabytes(nbytes: int) -> str:
    return f"{nbytes / _MB:.1f} MB"


def _reserve_declared_length(spool: UploadSpool) -> None:
    """Take room for the body's declared length before reading any of it; 507 when it cannot fit.

    A chunked body declares nothing: it is counted as it is written, and cut
    off (StorageFull from the write) the moment it would pass the bound. A
    declared length over MAX_CONTENT_LENGTH is left to werkzeug's 413.
    """
    declared = request.content_length
    if declared is None or (request.max_content_length is not None and declared > request.max_content_length):
        return
    try:
        spool.reserve(declared)
    except StorageFull as full:
        raise ApiError(507, f"The server cannot store this upload: it is {_megabytes(full.needed)}, and only "
                            f"{_megabytes(full.left)} is left of the space it keeps for uploads (MAX_STORAGE_MB). "
                            + _MAKE_ROOM, "Storage full") from None


def _storage_problem(error: StorageError) -> ApiError:
    if isinstance(error, StorageFull):
        return ApiError(507, "The server ran out of the space it keeps for uploads (MAX_STORAGE_MB) while receiving "
                             "this one, so none of it was kept. " + _MAKE_ROOM, "Storage full")
    if error.full:
        return ApiError(507, "The server has no room left to store the upload; try again later or with a smaller video.")
    return ApiError(503, "The server cannot store uploads right now (its storage is not writable); "
                         "try again later.", headers={"Retry-After": "60"})


def _read_form():
    try:
        return request.files, request.form
    except StorageError as error:
        raise _storage_problem(error) from None
    except (HTTPException, StoreUnavailable):
        raise
    except OSError as error:  # a write into DATA_DIR failed part-way
        raise _storage_problem(storage_error(error)) from None
    except ValueError:
        raise ApiError(400, "The upload could not be read as multipart/form-data: a part header (such as the "
                            "file name) is malformed or not UTF-8. Rename the file or use another client.") from None


def _the_one_video(files):
    for key in files.keys():
        if key not in FILE_FIELDS:
            raise ApiError(400, f"Unexpected file field '{key[:64]}'; send the video in a field named 'video' (or 'file').",
                           field=key[:64])
    uploads = [f for key in FILE_FIELDS for f in files.getlist(key)]
    if not uploads:
        raise ApiError(400, "No video was uploaded; send the file as multipart/form-data in a field named "
                            "'video' (or 'file').", field="video")
    if len(uploads) > 1:
        raise ApiError(400, f"Send one video per request; this request held {len(uploads)} files.", field="video")
    return uploads[0]


def accept_upload(kind: Optional[AnalysisKind] = None, legacy: bool = False) -> SessionState:
    """Store, check and queue the request's video; returns the new (pending) session.

    `kind` fixes the analysis (legacy routes); otherwise the form's `analysis_type` chooses it.
    An async upload sent again with the same Idempotency-Key returns the session the first one made.
    Raises ApiError with the contract's status for every refusal.
    """
    svc = services()
    key = None if legacy else idempotency_key()
    if key is not None:
        try:
            earlier = svc.sessions.claim_key(key)
        except KeyInUse:
            raise in_progress() from None
        if earlier is not None:
            return _same_upload_again(svc, earlier)
    try:
        return _accept_new(svc, kind, legacy, key)
    finally:
        svc.sessions.release_key(key)  # a no-op once the session holds it


def _accepted(kind: AnalysisKind, name: str, model_loaded: bool, cluster: bool = False) -> str:
    """The 202's message; it says when the job waits for the model (the contract asks so), or in cluster mode
    for a model worker."""
    queued = f"Upload received; the {AnalysisKind(kind).value} analysis of '{name}' is queued."
    if model_loaded:
        return queued
    if cluster:
        return queued + " No model worker is running right now: the analysis starts once one is."
    return queued + " The model is still loading: the analysis starts once it is ready."


def _same_upload_again(svc: Services, earlier: SessionState) -> SessionState:
    """A retry with a known key: read it (counted against the bound like any upload), compare, keep nothing."""
    spool = UploadSpool(svc.storage, svc.storage.session_dir(svc.sessions.new_id()))
    request.spool_uploads_to(spool)
    try:
        _reserve_declared_length(spool)
        files, form = _read_form()
        upload = _the_one_video(files)
        try:
            upload.stream.flush()
            if upload_fingerprint(spool.paths[0], form) != earlier.fingerprint:
                raise reused()
        finally:
            upload.close()
        return earlier
    finally:
        spool.discard()


def _accept_new(svc: Services, kind: Optional[AnalysisKind], legacy: bool, key: Optional[str]) -> SessionState:
    model = _require_model()
    try:
        slot = svc.jobs.reserve()
    except QueueFull:
        raise ApiError(503, f"The server is busy: {svc.config.MAX_QUEUED_JOBS} analyses are already queued. "
                            "Try again in a minute.", "Queue full", headers={"Retry-After": "30"}) from None
    except ShuttingDown:
        raise ApiError(503, "The server is shutting down and takes no new analyses; try again in a minute.",
                       "Shutting down", headers={"Retry-After": "30"}) from None

    session_id = svc.sessions.new_id()
    spool = UploadSpool(svc.storage, svc.storage.session_dir(session_id))
    request.spool_uploads_to(spool)
    upload = None
    try:
        _reserve_declared_length(spool)
        files, form = _read_form()
        if not files and any(key in form for key in FILE_FIELDS):
            raise ApiError(400, "The 'video' field held text, not a file; attach the video file itself.", field="video")
        upload = _the_one_video(files)
        upload.stream.flush()
        path = spool.paths[0]
        size = os.path.getsize(path)
        if size == 0:
            raise ApiError(400, "The uploaded file is empty; choose a video file and upload it again.", field="video")
        if size > svc.config.MAX_UPLOAD_MB * _MB:
            raise ApiError(413, f"The video is larger than the limit of {svc.config.MAX_UPLOAD_MB} MB; "
                                "upload a shorter or more compressed video.")
        kind, parameters = parse_analysis_request(form, kind, reel=not legacy)
        if model.loaded:  # otherwise the job checks, once the model has loaded
            try:
                check_prompts_fit(svc.analysis.prompt_problem, kind, parameters)
            except ModelUnavailable:  # the analysis process is restarting, or did not answer in time
                raise ApiError(503, "The model is not answering right now (it may be restarting); try again in a "
                                    "minute.", "Model unavailable", headers={"Retry-After": "30"}) from None
        name = display_filename(upload.filename)
        try:
            info = probe_video(path, name)
        except VideoError as error:
            raise ApiError(415, str(error), "Unsupported video", field="video") from None
        fingerprint = upload_fingerprint(path, form) if key is not None else None
        try:
            if not legacy and svc.sessions.durable:  # on the disk itself before a session says it is
                spool.sync()
            session = svc.sessions.create(session_id, kind, name, spool.directory, parameters.model_dump(),
                                          legacy=legacy, video_path=path, video_info=info.as_dict(),
                                          idempotency_key=key, fingerprint=fingerprint,
                                          upload_message=_accepted(kind, name, model.loaded, svc.config.cluster))
        except StorageError as error:
            raise _storage_problem(error) from None
        except StoreUnavailable:
            raise
        except StateNotSaved:
            raise ApiError(507, "The server could not record this upload (its disk is full or not writable), so "
                                "it kept none of it; try again later.", "Storage full") from None
        spool.claim()  # before its job exists: nothing can remove the directory before it is counted as kept
        svc.jobs.submit(slot, session_id, path, info)
        return session
    finally:
        if upload is not None:
            upload.close()
        spool.discard()  # a refused request's files are closed and deleted, and the room it took is given back
        svc.jobs.release(slot)
