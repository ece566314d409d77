"""A redis-server of a test's or benchmark's own: a free loopback port, a directory of its own, never port 6379.

    with RedisServer(tmp_path / "redis") as server:   # started, and stopped after
        server.client().set("key", "value")
        server.kill()                                  # SIGKILL, as a crash would
        server.restart()                               # same port, directory and settings: the AOF is read back

The settings go on the command line (no config file). With `appendonly` every write is in the AOF before its
reply, so it survives a SIGKILL of the server, and fsynced (`appendfsync always`), so it would survive the
machine's crash too. Like ServiceProcess (tools/service_process.py) the server gets a process group of its
own, so a background save's child dies with it, and its output goes to `redis.log` in its directory, whose end
is quoted when it fails to start.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.parse
from typing import List, NoReturn, Optional

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tools.service_process import free_port

MISSING = ("redis-server is not installed: install it with `apt-get install redis-server` (Debian, Ubuntu) "
           "or `brew install redis` (macOS), or put its directory on PATH.")
# For our own probes: redis-py retries a refused connection a few times, with backoff, by default.
TRY_ONCE = Retry(NoBackoff(), 0)


def redis_server_binary() -> str:
    """The path of redis-server; RuntimeError with what to install when there is none."""
    found = shutil.which("redis-server")
    for candidate in ([found] if found else []) + ["/usr/sbin/redis-server", "/usr/bin/redis-server"]:
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(MISSING)


class RedisServer:
    """One redis-server; `start()` runs it, `url` and `client()` reach it, `stop()`, `kill()`, `restart()`."""

    def __init__(self, directory, *, port: Optional[int] = None, appendonly: bool = True,
                 appendfsync: str = "always", password: Optional[str] = None):
        """`appendfsync`: "always" (the tests'), or "everysec" (Redis's default once the AOF is on) for the
        benchmarks to compare."""
        self.binary = redis_server_binary()
        self.directory = os.path.abspath(directory)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.password = password
        self.log_path = os.path.join(self.directory, "redis.log")
        self.process: Optional[subprocess.Popen] = None
        self._group = False  # its process group may still have members: kill() signals it

    @property
    def url(self) -> str:
        secret = f":{urllib.parse.quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{secret}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> List[str]:
        words = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.directory,
                 "--appendonly", "yes" if self.appendonly else "no", "--save", "", "--daemonize", "no",
                 "--protected-mode", "yes", "--logfile", self.log_path]
        if self.appendonly:
            words += ["--appendfsync", self.appendfsync]
        if self.password:
            words += ["--requirepass", self.password]
        return words

    def client(self, **options) -> redis.Redis:
        """A redis.Redis on this server (with the password); `options` go to redis.Redis."""
        options.setdefault("socket_timeout", 10)
        return redis.Redis.from_url(self.url, **options)

    def start(self, timeout: float = 10.0) -> "RedisServer":
        """Start it and wait until it answers PING; RuntimeError with the log's end if it does not."""
        if self.running:
            raise RuntimeError(f"the redis-server on port {self.port} is already running")
        os.makedirs(self.directory, exist_ok=True)
        # Before --logfile takes over, redis prints to stderr (a bad argument): the same file keeps both.
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), cwd=self.directory, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._group = True
        probe = self.client(socket_timeout=1, socket_connect_timeout=1, retry=TRY_ONCE)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    self._fail(f"redis-server exited with status {self.process.returncode}")
                try:
                    # Ours answered, not another server already on the port (ours then exits: address in use).
                    if probe.ping() and probe.info("server")["process_id"] == self.process.pid:
                        return self
                except redis.ConnectionError:
                    pass  # not listening yet, or loading the AOF
                time.sleep(0.05)
        finally:
            probe.close()
        self._fail(f"redis-server did not answer PING in {timeout:.0f} s")

    def _fail(self, what: str) -> NoReturn:
        self.kill()
        raise RuntimeError(f"{what} (port {self.port}, directory {self.directory}); the end of its log:\n"
                           f"{self.log()}")

    def log(self) -> str:
        """The end of the server's log."""
        try:
            with open(self.log_path, "rb") as handle:
                return handle.read().decode("utf-8", "replace")[-4000:]
        except FileNotFoundError:
            return "(no log)"

    def stop(self, grace: float = 10.0) -> None:
        """SHUTDOWN (the AOF is flushed), or SIGTERM if it does not take it; SIGKILL after `grace` seconds."""
        if self.running:
            try:
                with self.client(socket_timeout=grace, socket_connect_timeout=2, retry=TRY_ONCE) as client:
                    client.shutdown()
            except redis.RedisError:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill()  # and whatever is left of its process group

    def kill(self) -> None:
        """SIGKILL the server and its children at once, as a crash or the OOM killer would; waits for it."""
        if not self._group:
            return  # killed already: its group id may since be another process's
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group start_new_session made for it
        except (ProcessLookupError, PermissionError):
            pass  # nothing left
        self.process.wait(10)
        self._group = False

    def restart(self, timeout: float = 10.0) -> "RedisServer":
        """Stop it if it runs, then start it again on the same port, in the same directory, with the same settings."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> "RedisServer":
        return self if self.running else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
