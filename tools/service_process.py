"""The service in a subprocess on a free loopback port, started the way a person starts it.

`how` picks the command:
- "gunicorn": `gunicorn --config gunicorn.conf.py 'app:create_app()'`, as deployed;
- "app.py": `python app.py`, Flask's development server (`make dev`);
- "make run": the command of the Makefile's `run` target (nginx in front of gunicorn);
- "worker.py": a model worker of cluster mode (`WorkerProcess`: no port of its own).

The tests use it through the `start_service` fixture (tests/conftest.py), the
benchmarks through bench/server.py. The process gets a process group of its
own: `stop()` sends SIGTERM, then kills the whole group if the service has
not exited in time, so nothing it started outlives a failed test. Its output
goes to a log file, whose end is quoted when it fails to start.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Callable, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOW = ("gunicorn", "app.py", "make run", "worker.py")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_run_command(root: str = REPO) -> List[str]:
    """The command of the Makefile's `run` target, with the Makefile's variables filled in."""
    with open(os.path.join(root, "Makefile")) as handle:
        recipe = re.search(r"^run:.*\n\t(.+)$", handle.read(), re.MULTILINE).group(1)
    venv = os.path.dirname(os.path.dirname(sys.executable))
    words = shlex.split(recipe.replace("$(PY)", sys.executable).replace("$(VENV)", venv))
    if words[:2] == ["exec", "env"]:
        words = words[2:]
    return [word for word in words if not re.match(r"^[A-Z_]+=", word)]  # HOST and PORT come from the caller


def _command(how: str, root: str) -> List[str]:
    if how == "gunicorn":
        gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        return [gunicorn, "--config", "gunicorn.conf.py", "app:create_app()"]
    if how == "app.py":
        return [sys.executable, "app.py"]
    if how == "make run":
        return make_run_command(root)
    if how == "worker.py":
        return [sys.executable, "worker.py"]
    raise ValueError(f"how must be one of {', '.join(HOW)}, got {how!r}")


def _as_from_a_terminal(then: Optional[Callable[[], None]]) -> None:
    """In the child before exec: Ctrl-C (SIGINT) at its default, as a terminal starts a program.

    A job a non-interactive shell puts in the background (`make test &`, some CI runners) starts with SIGINT
    ignored, its children too, and Python then installs no KeyboardInterrupt handler: `python app.py` would
    never see the Ctrl-C a test sends it.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if then is not None:
        then()


class ServiceProcess:
    """One running service; `base` is its URL, `data_dir` its DATA_DIR, `process` the Popen."""

    def __init__(self, model_dir: str, data_dir: str, *, how: str = "gunicorn", env: Optional[dict] = None,
                 log_path: Optional[str] = None, preexec_fn=None, wrapper: Sequence[str] = (), root: str = REPO,
                 port: Optional[int] = None):
        """`env` adds to the environment, a value of None removes the variable; `wrapper` is a command put in
        front (it must exec the service); `root` is the checkout whose service runs (a worktree of an older
        commit measures that commit); `port`: the one an earlier service had (a restart), else a free one."""
        self.how = how
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log_path = log_path or os.path.join(os.path.dirname(os.path.abspath(data_dir)),
                                                 f"service-{self.port}.log")
        environment = dict(os.environ, MODEL=model_dir, DATA_DIR=data_dir, HOST="127.0.0.1", PORT=str(self.port),
                           PYTHONUNBUFFERED="1", LOG_LEVEL="warning",
                           PYTHONFAULTHANDLER="1")  # a crash, or a SIGABRT sent to a hung service, logs every stack
        for name, value in (env or {}).items():
            if value is None:
                environment.pop(name, None)
            else:
                environment[name] = value
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([*wrapper, *_command(how, root)], cwd=root, env=environment,
                                        stdout=self._log, stderr=subprocess.STDOUT,
                                        preexec_fn=functools.partial(_as_from_a_terminal, preexec_fn),
                                        start_new_session=True)

    def __enter__(self) -> "ServiceProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 60.0) -> dict:
        """The /health body once the model has loaded, or has failed to ("degraded"); both are final."""
        return self.wait_health(lambda body: body["model"]["loaded"] or body["status"] == "degraded", timeout)

    def wait_health(self, until: Callable[[dict], bool] = lambda body: True, timeout: float = 60.0,
                    base: Optional[str] = None) -> dict:
        """Poll `base`'s /health (this service's by default) until its body satisfies `until`; returns that body.
        Fails at once, with the log's end, if this process exits meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.how} exited with status {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen((base or self.base) + "/health", timeout=2) as response:
                    body = json.load(response)
                if until(body):
                    return body
            except (OSError, ValueError, KeyError):
                pass  # not listening yet, or another program answered on the port
            time.sleep(0.1)
        raise RuntimeError(f"{self.how} was not ready in {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        """The end of what the service printed."""
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")[-4000:]

    def descendants(self) -> List[int]:
        """Every process the service started, and theirs, now (Linux /proc)."""
        found, todo = [], [self.process.pid]
        while todo:
            children = _children(todo.pop())
            found.extend(children)
            todo.extend(children)
        return found

    def worker_pid(self) -> int:
        """The process that answers the requests, for its memory and threads: gunicorn's one worker (the
        gunicorn whose parent is gunicorn; under `make run` too), or `python app.py` itself."""
        everyone = [self.process.pid, *self.descendants()]
        if self.how == "app.py":
            found = [pid for pid in everyone if arguments_of(pid)[1:] == ["app.py"]]
        else:
            gunicorn = {pid for pid in everyone if any(word.endswith("gunicorn") for word in arguments_of(pid)[:3])}
            found = [child for pid in gunicorn for child in _children(pid) if child in gunicorn]
        if len(found) != 1:
            raise RuntimeError(f"expected one worker process, found {found}")
        return found[0]

    def terminate(self, timeout: float = 15.0) -> float:
        """SIGTERM, as an operator stops it; the seconds until it exited (TimeoutExpired if it did not)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout)
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL every process of the service at once, as a crash or the OOM killer would; waits for it."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM; after `grace` seconds, SIGKILL. Then kill whatever is left of its process group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group start_new_session made for it
        except (ProcessLookupError, PermissionError):
            pass  # nothing left
        self.process.wait(10)
        self._log.close()


class WorkerProcess(ServiceProcess):
    """A model worker of cluster mode (`python worker.py`) on `redis_url`, with `data_dir` as its scratch, as if
    on a machine of its own; `name` is the "host:pid" the API shows for it."""

    def __init__(self, model_dir: str, data_dir: str, redis_url: str, token: str, *, env: Optional[dict] = None,
                 **options):
        super().__init__(model_dir, data_dir, how="worker.py", env=dict(env or {}, REDIS_URL=redis_url,
                                                                       WORKER_TOKEN=token), **options)
        self.name = f"{socket.gethostname()}:{self.process.pid}"
        self.scratch = os.path.join(data_dir, f"worker-{self.process.pid}")  # its own directory in DATA_DIR

    def wait_ready(self, api_base: str, timeout: float = 120.0) -> dict:  # type: ignore[override]
        """The API's /health body once it lists this worker (it has loaded its model and takes jobs)."""
        return self.wait_health(lambda body: any(w["id"] == self.name for w in body.get("workers", ())), timeout,
                                base=api_base)


def _children(pid: int) -> List[int]:
    """`pid`'s child processes now; none once it has gone."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    children = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                children.extend(int(child) for child in handle.read().split())
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
    return children


def arguments_of(pid: int) -> List[str]:
    """`pid`'s command line; empty once it has gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().decode("utf-8", "replace").split("\0")[:-1]
    except FileNotFoundError:
        return []
