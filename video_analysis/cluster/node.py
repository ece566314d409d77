"""An API node of a cluster: its connection, stores and queue, and what is done once when the node starts.

`prepare_node` runs once per start of a node, before its API processes
(gunicorn's master calls it, gunicorn.conf.py; `python app.py` calls it
itself): it deletes what an earlier run left in DATA_DIR that no session in
Redis owns, counts the rest against the storage bound again, forgets the
legacy requests of this node (their clients went with the old processes)
and publishes the token's fingerprint for workers to check theirs against.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Tuple

import redis

from video_analysis.cluster.connection import ERRORS, connect
from video_analysis.cluster.queue import ClusterJobQueue
from video_analysis.cluster.sessions import RedisSessionStore
from video_analysis.cluster.storage_ledger import RedisLedger
from video_analysis.cluster.worker_token import TOKEN_KEY, token_fingerprint
from video_analysis.cluster.workers import WorkerPool
from video_analysis.config import Config
from video_analysis.jobs.sessions import SessionNotFound
from video_analysis.jobs.storage import Storage

log = logging.getLogger(__name__)


@dataclass
class ClusterParts:
    connection: redis.Redis
    sessions: RedisSessionStore
    jobs: ClusterJobQueue
    storage: Storage
    workers: WorkerPool


def _stores(config: Config, connection: redis.Redis) -> Tuple[RedisSessionStore, Storage]:
    """This node's sessions and its DATA_DIR, the storage bound counted in Redis."""
    return (RedisSessionStore(connection, config.SESSION_TTL_SECONDS, node=config.api_url),
            Storage(config.DATA_DIR, config.MAX_STORAGE_MB, RedisLedger(connection, config.api_url)))


def cluster_parts(config: Config, owner: str) -> ClusterParts:
    """What one API process of the node uses; nothing is asked of Redis yet (it may be down: requests get 503)."""
    connection = connect(config.REDIS_URL)
    sessions, storage = _stores(config, connection)
    jobs = ClusterJobQueue(connection, sessions, config.MAX_QUEUED_JOBS, token_fingerprint(config.WORKER_TOKEN))
    return ClusterParts(connection, sessions, jobs, storage, WorkerPool(connection, config.MODEL, owner))


def prepare_node(config: Config) -> None:
    """Once per start of the node, before its API processes take requests (see the module's text)."""
    connection = connect(config.REDIS_URL)
    sessions, storage = _stores(config, connection)
    try:
        connection.set(TOKEN_KEY, token_fingerprint(config.WORKER_TOKEN))
        mine = [state for state in sessions.list() if state.node == config.api_url]
        for state in mine:
            if state.legacy:  # its client's connection went with the process that held it
                try:
                    sessions.delete(state.session_id)
                except SessionNotFound:
                    pass
        kept = [state.directory for state in mine if not state.legacy]
    except ERRORS as error:
        log.warning("Redis (REDIS_URL) cannot be reached (%s): DATA_DIR is left as it is; the service answers 503 "
                    "until Redis is back", error)
        storage.prepare(remove_strays=False)
        return
    storage.prepare(sessions=kept)
    if kept:
        log.info("%d session(s) of this node are in Redis; their uploads are kept", len(kept))
    connection.close()
