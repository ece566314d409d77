"""The session store of cluster mode: every session in Redis, shared by all API processes and model workers.

The same methods and rules as `jobs.sessions.SessionManager` (progress never
decreases, an ended session never changes, each answer is the next one),
kept with optimistic transactions (WATCH/MULTI): an API process cancelling
and a worker reporting progress can never undo each other. An ended
session's keys expire after SESSION_TTL_SECONDS in Redis itself (the TTL of
the API node that took the upload, whoever ends the session); the sweeper
of that node deletes the file (`expire`).

Keys (all under connection.PREFIX):
    s:<id>          the session (SessionState.to_record as JSON, with the TTL of the node that took it)
    a:<id>          its answers, one JSON [answer, run] per finished segment
    key:<key>       Idempotency-Key -> session id; recv:<key> while that upload is received
    sessions        sorted set of every session id by creation time
    unfinished      set of the ids of sessions not ended (admission counts them)
    ended:<node>    sorted set of the ended sessions whose upload <node> keeps, by finish time
    trash:<node>    session directories <node> must delete (cleaned up through another node)
"""
from __future__ import annotations

import copy
import json
import logging
import os
import time
from dataclasses import replace
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import redis

from video_analysis.cluster.connection import PREFIX, eventually, reachable
from video_analysis.cluster.processes import alive
from video_analysis.jobs.session_ids import new_session_id
from video_analysis.jobs.sessions import (KeyInUse, ProcessingStatus, SessionNotFound, SessionState, changed_state)

log = logging.getLogger(__name__)

# How long an Idempotency-Key is held for an upload being received (an API process that died lets it go).
_RECEIVING_SECONDS = 3600


# Replace a key's holder only if it is still the one found dead (or the hold has gone meanwhile).
_TAKE_OVER = """
local now = redis.call('GET', KEYS[1])
if now and now ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


def _session_key(session_id: str) -> str:
    return f"{PREFIX}s:{session_id}"


def _answers_key(session_id: str) -> str:
    return f"{PREFIX}a:{session_id}"


# The session's TTL, kept in its record beside SessionState's fields: the API node that took the upload has
# SESSION_TTL_SECONDS, and whoever ends the session (a model worker, a reaper in any process) applies that one.
_TTL = "ttl_seconds"


def _record(state: SessionState, ttl_seconds: float) -> str:
    return json.dumps(dict(state.to_record(), **{_TTL: ttl_seconds}))


_ALL = PREFIX + "sessions"
# The sessions whose job has not ended, legacy ones included: what admission counts.
UNFINISHED = PREFIX + "unfinished"


class Superseded(SessionNotFound):
    """Another run of the session's job started after this one (its worker was taken for dead, and the job queued
    again): this run must write nothing more. A SessionNotFound, so that the job runner stops quietly, as it does
    for a session cleaned up under its feet."""


class RedisSessionStore:
    """Sessions in Redis; `node` is this API node's API_URL (None in a worker, which keeps no uploads)."""

    durable = True

    def __init__(self, connection: redis.Redis, ttl_seconds: float = 86400, node: Optional[str] = None):
        self.redis = connection
        self._take_over = connection.register_script(_TAKE_OVER)
        self.ttl_seconds = ttl_seconds
        self.node = node

    @staticmethod
    def new_id() -> str:
        return new_session_id()

    def close(self) -> None:
        pass  # the connection pool is the caller's

    def file_problem(self) -> Optional[str]:
        return None  # nothing on this node's disk: Redis's own persistence is the operator's (guides/operations.md)

    # -- reading ------------------------------------------------------------------------------------------
    @reachable
    def get(self, session_id: str, with_result: bool = True) -> SessionState:
        raw = self.redis.get(_session_key(session_id))
        if raw is None:
            raise SessionNotFound(session_id)
        state = SessionState.from_record(json.loads(raw))
        return state if with_result else replace(state, result=None)

    @reachable
    def answers(self, session_id: str) -> List[str]:
        with self.redis.pipeline() as pipe:
            pipe.exists(_session_key(session_id))
            pipe.lrange(_answers_key(session_id), 0, -1)
            exists, rows = pipe.execute()
        if not exists:
            raise SessionNotFound(session_id)
        return [json.loads(row)[0] for row in rows]

    @reachable
    def answer_runs(self, session_id: str) -> List[int]:
        """Which run (1, 2, ...) kept each answer: a resume on another worker shows as a new run."""
        return [json.loads(row)[1] for row in self.redis.lrange(_answers_key(session_id), 0, -1)]

    @reachable
    def list(self) -> List[SessionState]:
        return self.get_many(raw.decode() for raw in self.redis.zrange(_ALL, 0, -1))

    @reachable
    def get_many(self, session_ids: Iterable[str]) -> List[SessionState]:
        """The sessions of `session_ids` that exist, in one read."""
        keys = [_session_key(session_id) for session_id in session_ids]
        records = self.redis.mget(keys) if keys else []
        return [SessionState.from_record(json.loads(raw)) for raw in records if raw is not None]

    def unfinished(self) -> List[SessionState]:
        waiting = [s for s in self.list() if not s.status.terminal]
        return sorted(waiting, key=lambda s: (s.status != ProcessingStatus.PROCESSING, s.created_at))

    def counts(self) -> Dict[str, int]:
        totals = {status.value: 0 for status in ProcessingStatus}
        for state in self.list():
            totals[state.status.value] += 1
        return totals

    # -- Idempotency-Key --------------------------------------------------------------------------------
    @reachable
    def claim_key(self, key: str) -> Optional[SessionState]:
        session_id = self.redis.get(f"{PREFIX}key:{key}")
        if session_id is not None:
            try:
                return self.get(session_id.decode(), with_result=False)
            except SessionNotFound:
                pass  # expired between the two reads: the key is free again
        holder = f"{self.node}\t{os.getpid()}"
        receiving = f"{PREFIX}recv:{key}"
        if not self.redis.set(receiving, holder, nx=True, ex=_RECEIVING_SECONDS):
            dead = self.redis.get(receiving)
            # Taken over only from that dead holder: of two retries racing for it, one wins.
            if not self._holder_died(dead) or not self._take_over(keys=[receiving],
                                                                  args=[dead or b"", holder, _RECEIVING_SECONDS]):
                raise KeyInUse(key)
        return None

    def _holder_died(self, holder: Optional[bytes]) -> bool:
        """True when the upload holding a key was being received by a process of this node that is gone (killed
        mid-upload): its client's retry may take the key now, not only after _RECEIVING_SECONDS."""
        if holder is None:
            return True
        node, _, pid = holder.decode().partition("\t")
        return node == str(self.node) and pid.isdigit() and not alive(int(pid))

    def release_key(self, key: Optional[str]) -> None:
        if key:  # now, or once Redis is back: else the client's retry would get 409 for _RECEIVING_SECONDS
            eventually(lambda: self.redis.delete(f"{PREFIX}recv:{key}"), "let go of an Idempotency-Key")

    # -- writing --------------------------------------------------------------------------------------------
    @reachable
    def create(self, session_id: str, analysis_type: str, video_name: str, directory: str,
               params: Optional[dict] = None, legacy: bool = False, **details) -> SessionState:
        state = SessionState(session_id, analysis_type, video_name, directory, dict(params or {}), legacy=legacy,
                             node=self.node, **details)
        with self.redis.pipeline() as pipe:
            pipe.set(_session_key(session_id), _record(state, self.ttl_seconds), nx=True)
            pipe.zadd(_ALL, {session_id: state.created_at})
            pipe.sadd(UNFINISHED, session_id)
            if state.idempotency_key:
                pipe.set(f"{PREFIX}key:{state.idempotency_key}", session_id)
                pipe.delete(f"{PREFIX}recv:{state.idempotency_key}")
            created = pipe.execute()[0]
        if not created:
            raise ValueError("session id already in use")
        return state

    def update(self, session_id: str, saved: bool = True, run: Optional[int] = None, **changes) -> SessionState:
        """As SessionManager.update. `saved=False` (a paused job's message) is written when Redis takes it.
        `run`: the session's `runs` as the writing run left it; Superseded when another run has started since."""
        return self._change(session_id, changes, run=run)

    def record_answer(self, session_id: str, position: int, answer: str, run: Optional[int] = None,
                      **changes) -> SessionState:
        return self._change(session_id, changes, (position, answer), run)

    @reachable
    def _change(self, session_id: str, changes: dict, answer: Optional[Tuple[int, str]] = None,
                run: Optional[int] = None) -> SessionState:
        key, answers_key = _session_key(session_id), _answers_key(session_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key, answers_key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise SessionNotFound(session_id)
                    record = json.loads(raw)
                    state = SessionState.from_record(record)
                    if state.status.terminal:
                        return state
                    ttl = record.get(_TTL, self.ttl_seconds)
                    if run is not None and state.runs != run:
                        raise Superseded(session_id)
                    done = pipe.llen(answers_key)
                    if answer is not None and answer[0] != done:
                        raise ValueError(f"segment {answer[0] + 1} answered before segment {done + 1}")
                    updated = changed_state(state, changes)
                    if updated == state and answer is None:
                        return state
                    updated = replace(updated, updated_at=time.time())
                    pipe.multi()
                    pipe.set(key, _record(updated, ttl))
                    if answer is not None:
                        pipe.rpush(answers_key, json.dumps([answer[1], updated.runs]))
                    if updated.status.terminal:
                        self._ended(pipe, updated, ttl)
                    pipe.execute()
                    return copy.deepcopy(updated)
                except redis.WatchError:
                    continue  # another process changed it meanwhile: apply the rules to what it wrote

    @staticmethod
    def _ended(pipe, state: SessionState, ttl_seconds: float) -> None:
        """An ended session expires in Redis after the TTL; its node's sweeper deletes the upload then."""
        ttl = max(1, int(ttl_seconds))
        pipe.expire(_session_key(state.session_id), ttl)
        pipe.expire(_answers_key(state.session_id), ttl)
        if state.idempotency_key:
            pipe.expire(f"{PREFIX}key:{state.idempotency_key}", ttl)
        pipe.zadd(f"{PREFIX}ended:{state.node}", {state.session_id: state.finished_at})
        pipe.srem(UNFINISHED, state.session_id)

    def move_files(self, directory_of: Callable[[str], str]) -> int:
        return 0  # each node keeps its own uploads under its own DATA_DIR; nothing to follow

    @reachable
    def delete(self, session_id: str) -> SessionState:
        state = self.get(session_id, with_result=False)
        with self.redis.pipeline() as pipe:
            self._forget(pipe, state.session_id, state.idempotency_key)
            pipe.zrem(f"{PREFIX}ended:{state.node}", state.session_id)  # else its id stays there until the TTL
            if state.node is not None and state.node != self.node:
                pipe.sadd(f"{PREFIX}trash:{state.node}", state.session_id)  # the node keeping it deletes the file
            deleted = pipe.execute()[0]
        if not deleted:
            raise SessionNotFound(session_id)  # a concurrent cleanup won
        return state

    @staticmethod
    def _forget(pipe, session_id: str, idempotency_key: Optional[str]) -> None:
        pipe.delete(_session_key(session_id), _answers_key(session_id))
        pipe.zrem(_ALL, session_id)
        pipe.srem(UNFINISHED, session_id)
        if idempotency_key:
            pipe.delete(f"{PREFIX}key:{idempotency_key}")

    @reachable
    def expire(self, now: Optional[float] = None) -> List[SessionState]:
        """The ended sessions of this node past their TTL, forgotten now (their keys may have expired already:
        then a bare state with the id and its directory is returned, for the sweeper to delete the file)."""
        now = time.time() if now is None else now
        ended = f"{PREFIX}ended:{self.node}"
        due = [raw.decode() for raw in self.redis.zrangebyscore(ended, "-inf", now - self.ttl_seconds)]
        trash = [raw.decode() for raw in self.redis.smembers(f"{PREFIX}trash:{self.node}")]
        gone = []
        for session_id in due:
            try:
                state = self.get(session_id, with_result=False)
            except SessionNotFound:
                state = None
            with self.redis.pipeline() as pipe:
                self._forget(pipe, session_id, state.idempotency_key if state else None)
                pipe.zrem(ended, session_id)
                if not pipe.execute()[-1]:
                    continue  # another process of this node took it
            gone.append(state or SessionState(session_id, "", "", ""))
        for session_id in trash:
            if self.redis.srem(f"{PREFIX}trash:{self.node}", session_id):
                self.redis.zrem(ended, session_id)
                gone.append(SessionState(session_id, "", "", ""))
        return gone
