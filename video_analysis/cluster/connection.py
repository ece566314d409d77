"""The Redis connection of cluster mode, and what an unreachable Redis is called everywhere.

Short timeouts: an API request must answer 503 within a few seconds while
Redis is down, not hang. redis-py reconnects by itself on the next command,
so the service recovers as soon as Redis is back.
"""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

import redis

from video_analysis.jobs.sessions import StoreUnavailable

# Every key this service writes starts with this, so one Redis can be shared with other programs.
PREFIX = "va:"
# The RQ queue the API puts jobs on and the model workers take them from.
QUEUE_NAME = "video-analysis"
# Seconds a client should wait before trying again while Redis cannot be reached.
RETRY_AFTER_SECONDS = 5
UNREACHABLE = ("The service cannot reach its Redis server (REDIS_URL), where sessions and jobs are kept; nothing "
               "was changed. Try again in a few seconds.")
ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
REFUSING = ("The service's Redis server (REDIS_URL) refuses to store anything right now (it is out of memory, "
            "read-only, or cannot write to its disk), so nothing was changed. Try again later; an operator must look "
            "at Redis's log.")


class StoreRefusing(StoreUnavailable):
    """Redis answers but refuses writes: maxmemory reached (with noeviction, as it must be), a read-only replica,
    or a disk it cannot write its AOF or snapshot to. `sentence` says so for a person."""

    sentence = REFUSING


def refuses_writes(error: redis.exceptions.RedisError) -> bool:
    return (isinstance(error, (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError))
            or str(error).startswith(("MISCONF", "OOM", "READONLY")))


T = TypeVar("T")


def connect(url: str) -> redis.Redis:
    """A client for `url` (redis://, rediss:// for TLS, with a password in it when set)."""
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=15)


def reachable(function: Callable[..., T]) -> Callable[..., T]:
    """Turn redis-py's connection errors, and a Redis refusing writes, into StoreUnavailable (a StateNotSaved: jobs
    pause, requests get 503)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ERRORS as error:
            raise StoreUnavailable(f"{UNREACHABLE} ({error})") from None
        except redis.exceptions.ResponseError as error:
            if not refuses_writes(error):
                raise
            raise StoreRefusing(f"{REFUSING} ({error})") from None

    return wrapper
