"""tools/redis_server.py: the redis-server a test or benchmark starts for itself, and stops, kills and restarts."""
from __future__ import annotations

import os
import time

import pytest
import redis

from tools.redis_server import TRY_ONCE, RedisServer


def once(**options) -> redis.Redis:
    """A client that tries once: redis-py retries a refused connection or password a few times by default."""
    return redis.Redis(retry=TRY_ONCE, socket_connect_timeout=1, **options)


def group_members(pgid: int) -> list:
    """The live processes (zombies count as gone) of process group `pgid` now (Linux /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            continue  # not a process, or gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def assert_group_gone(pgid: int, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while group_members(pgid):
        assert time.monotonic() < deadline, f"still running: {group_members(pgid)}"
        time.sleep(0.05)


def start_slow_background_save(server: RedisServer) -> int:
    """A BGSAVE whose child sleeps 10 s per key: a child process of the server's that outlives a SIGKILL of the
    server alone (it notices its parent gone only when it next reports to it). Its pid."""
    client = server.client()
    client.mset({"one": 1, "two": 2})  # no key, nothing to wait for
    client.config_set("rdb-key-save-delay", 10_000_000)  # microseconds per key
    client.bgsave()
    deadline = time.monotonic() + 5
    while len(group_members(server.process.pid)) < 2:
        assert time.monotonic() < deadline, "BGSAVE started no child"
        time.sleep(0.05)
    return [pid for pid in group_members(server.process.pid) if pid != server.process.pid][0]


def test_the_server_is_our_own_on_a_loopback_port(redis_server, redis_url):
    assert redis_server.port != 6379
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0"
    info = redis.Redis.from_url(redis_url).info("server")
    assert info["process_id"] == redis_server.process.pid
    assert info["executable"].endswith("redis-server")
    assert redis_server.client().config_get("dir")["dir"] == redis_server.directory


def test_data_written_before_restart_is_read_back_from_the_aof(redis_server):
    client = redis_server.client()
    client.set("answer", "42")
    client.rpush("queue", "a", "b")
    first_pid, port = redis_server.process.pid, redis_server.port
    redis_server.restart()
    assert redis_server.process.pid != first_pid and redis_server.port == port
    client = redis_server.client()
    assert client.get("answer") == b"42"
    assert client.lrange("queue", 0, -1) == [b"a", b"b"]


def test_without_aof_a_restart_forgets_everything(tmp_path):
    """The test above could fail: the data it finds comes from the AOF, nowhere else."""
    with RedisServer(tmp_path / "redis", appendonly=False) as server:
        server.client().set("answer", "42")
        server.restart()
        assert server.client().get("answer") is None
        assert not os.path.exists(tmp_path / "redis" / "appendonlydir")


def test_every_write_acknowledged_before_a_sigkill_is_there_after_restart(redis_server):
    client = redis_server.client()
    for number in range(200):
        client.incr("counter")
        client.hset("jobs", f"job-{number}", "queued")
    redis_server.kill()
    assert not redis_server.running
    with pytest.raises(redis.ConnectionError):
        client.ping()
    redis_server.restart()
    client = redis_server.client()
    assert client.get("counter") == b"200"
    assert client.hlen("jobs") == 200


def test_a_password_is_required_when_one_is_set(tmp_path):
    with RedisServer(tmp_path / "redis", password="s3cret:@/") as server:
        assert server.url == f"redis://:s3cret%3A%40%2F@127.0.0.1:{server.port}/0"
        assert redis.Redis.from_url(server.url, retry=TRY_ONCE).ping()
        with pytest.raises(redis.AuthenticationError):
            once(port=server.port).set("key", "value")
        with pytest.raises(redis.AuthenticationError):
            once(port=server.port, password="wrong").ping()
        assert server.client().set("key", "value")
        server.restart()
        assert server.client().get("key") == b"value"


def test_two_servers_get_their_own_ports_directories_and_data(tmp_path):
    with RedisServer(tmp_path / "one") as one, RedisServer(tmp_path / "two") as two:
        assert one.port != two.port
        assert one.directory != two.directory
        one.client().set("key", "one")
        assert two.client().get("key") is None
        assert os.path.exists(os.path.join(one.directory, "redis.log"))


def test_a_server_that_cannot_start_says_why_from_its_log(redis_server, tmp_path):
    """The port is taken by another server: its PING must not pass for ours."""
    second = RedisServer(tmp_path / "second", port=redis_server.port)
    with pytest.raises(RuntimeError, match="(?s)exited with status.*Address already in use"):
        second.start()
    assert not second.running
    assert redis_server.client().ping()


def test_nothing_outlives_stop_even_a_background_save(redis_server):
    start_slow_background_save(redis_server)
    pid = redis_server.process.pid
    redis_server.stop()
    assert not redis_server.running
    assert_group_gone(pid)
    with pytest.raises(redis.ConnectionError):
        once(port=redis_server.port).ping()
    redis_server.stop()  # again: nothing to do, no error


def test_kill_takes_the_background_save_down_with_the_server(redis_server):
    child = start_slow_background_save(redis_server)
    pid = redis_server.process.pid
    redis_server.kill()
    assert_group_gone(pid, within=2.0)  # the child alone would live on ~10 s
    assert child not in group_members(pid)
    redis_server.restart()
    assert redis_server.client().ping()
