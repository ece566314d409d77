"""The storage bound's count for every API process of one node, in Redis (see `jobs.storage.Ledger`).

In cluster mode gunicorn runs several API processes on a node, all writing
to its one DATA_DIR: an upload received by one may be cleaned up by
another, so the count must be theirs together. Each change is one atomic
Redis command or script.
"""
from __future__ import annotations

from typing import Optional

import redis

from video_analysis.cluster.connection import PREFIX, eventually, reachable
from video_analysis.jobs.storage import Ledger, StorageFull

_TAKE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = tonumber(ARGV[1])
if ARGV[2] ~= '' and used + n > tonumber(ARGV[2]) then return {0, used} end
return {1, redis.call('INCRBY', KEYS[1], n)}
"""
_FORGET = """
local n = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('DECRBY', KEYS[1], n)
"""


class RedisLedger(Ledger):
    def __init__(self, connection: redis.Redis, node: str):
        self.redis = connection
        self._used_key = f"{PREFIX}storage:{node}:used"
        self._kept_key = f"{PREFIX}storage:{node}:kept"
        self._take = connection.register_script(_TAKE)
        self._forget = connection.register_script(_FORGET)

    @property
    @reachable
    def used(self) -> int:
        return int(self.redis.get(self._used_key) or 0)

    @reachable
    def take(self, nbytes: int, limit: Optional[int]) -> None:
        ok, used = self._take(keys=[self._used_key], args=[nbytes, "" if limit is None else limit])
        if not ok:
            raise StorageFull(nbytes, max(limit - int(used), 0))

    def give_back(self, nbytes: int) -> None:
        # Never raises: an upload refused because Redis went away mid-body gives its room back once Redis is back.
        eventually(lambda: self.redis.decrby(self._used_key, nbytes), f"give back {nbytes} bytes of MAX_STORAGE_MB")

    @reachable
    def keep(self, directory: str, nbytes: int) -> None:
        self.redis.hincrby(self._kept_key, directory, nbytes)

    def forget(self, directory: str) -> None:
        eventually(lambda: self._forget(keys=[self._used_key, self._kept_key], args=[directory]),
                   f"give back the room {directory} took under MAX_STORAGE_MB")

    @reachable
    def reset(self) -> None:
        self.redis.delete(self._used_key, self._kept_key)
