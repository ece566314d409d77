"""Session ids: random UUID4 strings in canonical form, made and recognised here only.

The id names a session in URLs and its directory under DATA_DIR, so anything
else is refused before it reaches the store or the disk.
"""
from __future__ import annotations

import uuid


def new_session_id() -> str:
    return str(uuid.uuid4())  # os.urandom underneath: unguessable


def is_session_id(text: str) -> bool:
    """Whether `text` is an id `new_session_id` could have made: lower-case, hyphenated, version 4."""
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        return False
    # UUID() also reads braces, "urn:uuid:", upper case and no hyphens; only the canonical form is an id.
    return parsed.version == 4 and str(parsed) == text
