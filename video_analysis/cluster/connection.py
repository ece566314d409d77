"""The Redis connection of cluster mode, and what an unreachable Redis is called everywhere.

Short timeouts: an API request must answer 503 within a few seconds while
Redis is down, not hang. redis-py reconnects by itself on the next command,
so the service recovers as soon as Redis is back.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Callable, TypeVar

import redis

from video_analysis.jobs.sessions import StoreUnavailable

log = logging.getLogger(__name__)

# Every key this service writes starts with this, so one Redis can be shared with other programs.
PREFIX = "va:"
# The RQ queue the API puts jobs on and the model workers take them from.
QUEUE_NAME = "video-analysis"
# Seconds a client should wait before trying again while Redis cannot be reached.
RETRY_AFTER_SECONDS = 5
# A write that must not be lost (`eventually`) is tried again this often, for at most this long.
_AGAIN_SECONDS = 2.0
_GIVE_UP_SECONDS = 3600.0
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


def connect(url: str, socket_timeout: float = 5) -> redis.Redis:
    """A client for `url` (redis://, rediss:// for TLS, with a password in it when set)."""
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=socket_timeout,
                                health_check_interval=15)


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


def _missed(error: Exception) -> bool:
    """True when `error` says Redis did not take a write (away, or refusing writes): worth trying again later."""
    if isinstance(error, (StoreUnavailable, *ERRORS)):
        return True
    return isinstance(error, redis.exceptions.ResponseError) and refuses_writes(error)


def eventually(action: Callable[[], object], what: str) -> None:
    """Do `action` (a write to Redis) now or, while Redis is away or refuses writes, again every few seconds from a
    thread of its own until Redis takes it. For what a request gives back as it ends (its queue slot, its room
    under MAX_STORAGE_MB), which would otherwise stay taken after Redis came back: no request would give it back."""
    try:
        action()
        return
    except Exception as error:  # noqa: BLE001  (anything but a missed write is the caller's)
        if not _missed(error):
            raise
    threading.Thread(target=_again, args=(action, what), name="redis-again", daemon=True).start()


def _again(action: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + _GIVE_UP_SECONDS
    while time.monotonic() < deadline:
        time.sleep(_AGAIN_SECONDS)
        try:
            action()
            return
        except Exception as error:  # noqa: BLE001  (a thread of its own: nothing above it to tell)
            if not _missed(error):
                log.exception("Could not %s", what)
                return
    log.error("Could not %s: Redis did not take it for %.0f s", what, _GIVE_UP_SECONDS)
