"""The messages between the web process and the analysis process that holds the model.

This is the contract a worker elsewhere (Redis/RQ, issue 17) can reuse: a job
is (id, kind, path, options), it reports progress (done, total, message), and
it ends done (result) or with an error kind and a sentence for a person.
Every message is a tuple of plain picklable values; its first item names it.

Parent to child:
    (RUN, job_id, kind, video_path, options)
        analyse one video. `kind` is an AnalysisKind value ("highlights",
        "workout"); `options` are the engine's keyword arguments: the kind's
        parameters, plus `video_name`, `video_info` (the upload's probe) and
        `resume` (the answers of the segments a run before a restart finished).
    (CANCEL, job_id)
        stop that job within one token or one frame; ignored for an unknown id.
    (CALL, call_id, method, args, kwargs)
        a query answered by REPLY (`QUERIES` names them).
    (STOP,)
        cancel every job, release the model and exit.

Child to parent:
    (LOADED, {"device": "cpu" | "gpu", "load_error": None | sentence, "hub_unreachable": bool})
        once, when the model is ready or failed to load; `hub_unreachable`: it failed only because
        the Hugging Face Hub could not be reached, so loading it again later may work.
    (ANSWER, job_id, position, answer)
        the model's answer for the segment at `position` (0-based), sent before
        the PROGRESS that counts it: the parent keeps it for a resume.
    (PROGRESS, job_id, done, total, message)
        segments done of `total`; `message` describes the step.
    (RENDERING, job_id, fraction, message)
        after the segments, how far making the thumbnails and the reel has got (0-1), and a sentence.
    (DONE, job_id, result)
        the contract's result object.
    (ERROR, job_id, error_kind, sentence)
        `error_kind` is CANCELLED, VIDEO, MODEL, PARAMETERS or INTERNAL; the sentence is for a person.
    (REPLY, call_id, ok, value)
        the query's answer, or when not ok the reason it failed.
"""
from __future__ import annotations

RUN, CANCEL, CALL, STOP = "run", "cancel", "call", "stop"
LOADED, ANSWER, PROGRESS, RENDERING, DONE, ERROR, REPLY = ("loaded", "answer", "progress", "rendering", "done",
                                                           "error", "reply")

# How a job can fail: cancelled by its caller, a video we cannot read, no model, a fault of ours, or
# parameters the loaded model cannot take (prompts too long for its context: an upload taken while the
# model loaded could not be checked before it was queued; the sentence names the field).
CANCELLED, VIDEO, MODEL, INTERNAL, PARAMETERS = "cancelled", "video", "model", "internal", "parameters"

# The queries a CALL may name (the model runner's methods of the same name).
QUERIES = ("prompt_problem",)

# What a person is told of a job that failed for a reason of ours (logged in the child with its traceback).
INTERNAL_ERROR = ("The analysis stopped because of an internal error; it has been logged. "
                  "Try again, or with another video.")
