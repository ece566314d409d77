"""Results of two sessions compared: what the analysis found, without what differs from run to run."""
from __future__ import annotations

# How long it took, and the links to a session's own thumbnails and reel (its id is in them; partial results have
# none yet): the outputs are compared by tests/test_outputs_api.py.
_PER_RUN = ("processing_time_seconds", "reelUrl", "reelDuration", "reelSize")
_FINDINGS = ("highlights", "exercise_steps")


def comparable(result: dict) -> dict:
    """`result` without its timing and its outputs' links."""
    kept = {key: value for key, value in result.items() if key not in _PER_RUN}
    for name in _FINDINGS:
        if name in kept:
            kept[name] = [{key: value for key, value in item.items() if key != "thumbnailUrl"} for item in kept[name]]
    return kept
