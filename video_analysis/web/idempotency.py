"""`Idempotency-Key` on uploads (the IETF httpapi draft's header): a client may send an upload again safely.

- the same key with the same file bytes and fields as an earlier upload: that
  upload's answer again (202, same session), no second job or file;
- the same key while the first upload with it is still being received: 409;
- the same key with another file or other fields: 422;
- a malformed key: 400. Keys live as long as their session (they are kept
  in it, so they survive restarts too).
The draft sends the key as a structured-field string (`"abc"`); the bare
form (`abc`) is taken too, as most clients send it, without commas (two
header lines arrive joined by one).
"""
from __future__ import annotations

import hashlib
import json
from typing import Optional

from flask import request

from video_analysis.web.errors import ApiError

HEADER = "Idempotency-Key"
_LONGEST = 255


def idempotency_key() -> Optional[str]:
    """The request's key, or None when it sent none; 400 when it is malformed."""
    values = request.headers.getlist(HEADER)
    if not values:
        return None
    text = values[0].strip()
    # Header lines sent twice reach us joined by a comma: a bare key with a comma may be two keys.
    key = _quoted(text) if text.startswith('"') else (None if "," in text else text)
    if len(values) > 1 or key is None or not 1 <= len(key) <= _LONGEST or not all(" " <= c <= "~" for c in key):
        raise ApiError(400, f"The {HEADER} header must be one string of 1 to {_LONGEST} printable ASCII "
                            "characters, sent once (a UUID is a good choice); send the upload again with such a "
                            "key, or without the header.", f"Invalid {HEADER}", field=HEADER)
    return key


def _quoted(text: str) -> Optional[str]:
    """A structured-field string (`"ab\\"c"`): its content, or None unless `text` is exactly one."""
    content, escaped = [], False
    for position, char in enumerate(text[1:], start=1):
        if escaped:
            if char not in '"\\':
                return None
            content.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return "".join(content) if position == len(text) - 1 else None
        else:
            content.append(char)
    return None  # never closed


def upload_fingerprint(path: str, form) -> str:
    """What makes two uploads the same one: the file's bytes and every form field as sent."""
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256")
    fields = sorted(form.items(multi=True))
    digest.update(json.dumps(fields, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def in_progress() -> ApiError:
    return ApiError(409, f"An upload with this {HEADER} is still being received; wait for its answer (or for it "
                         "to fail) before sending it again.", "Upload in progress", field=HEADER)


def reused() -> ApiError:
    return ApiError(422, f"This {HEADER} was already used for a different upload (another file or other "
                         "fields); send a new upload with a new key.", f"{HEADER} reused", field=HEADER)
