"""WORKER_TOKEN: the secret a model worker shows an API node to fetch an upload, and how a wrong one is told.

The API publishes a salted hash of its token in Redis (never the token);
a worker compares its own at start and refuses to run with a sentence
rather than fail every job it takes on a 404.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Optional

import redis

from video_analysis.cluster.connection import PREFIX

TOKEN_KEY = PREFIX + "worker-token"


def token_fingerprint(token: str) -> str:
    return hashlib.sha256(b"video-analysis worker token\0" + token.encode()).hexdigest()


def token_matches(expected: Optional[str], header: Optional[str]) -> bool:
    """True when `header` is "Bearer <expected>" (compared in constant time); never when no token is set."""
    if not expected or not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer "):].encode(), expected.encode())


def token_problem(connection: redis.Redis, token: str) -> Optional[str]:
    """A sentence when `token` differs from the API's (the worker could fetch no video), else None."""
    published = connection.get(TOKEN_KEY)
    if published is not None and published.decode() != token_fingerprint(token):
        return ("WORKER_TOKEN differs from the one the API servers use, so this worker could fetch no video. Set "
                "the same WORKER_TOKEN on the API servers and on every worker.")
    return None
