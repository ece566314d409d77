"""The processes the figures measure: the real service (`Server`) and pure inference (`PureWorker`)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from typing import List, Optional

import requests

from bench.system import PY, ROOT, free_port
from bench.videos import WORK

# The benchmark chooses the BLAS per process; a caller's own choice must not leak into the server.
_BLAS_VARIABLES = ("USE_OPENBLAS", "LD_PRELOAD")


def _environment_without_blas_choice() -> dict:
    return {k: v for k, v in os.environ.items() if k not in _BLAS_VARIABLES}


class Server:
    """The real service as `make run` starts it, in a subprocess: serve.py, nginx in front of gunicorn.

    Clients reach it through nginx's port (`base`, `port`); `worker_pid` is
    gunicorn's one worker, the process that holds the model. `front=False`
    starts gunicorn alone on the port, as `make run` did before serve.py
    (experiment_p3.py's `bare` variant compares the two). Keyword arguments
    become environment variables of the server (JOB_WORKERS=1, ...).
    """

    def __init__(self, name: str, model: str, front: bool = True, **env):
        self.name, self.model, self.front = name, model, front
        self.extra_env = {k: str(v) for k, v in env.items()}
        self.process: Optional[subprocess.Popen] = None
        self.port = 0
        self.worker_pid = 0
        self.nginx_pids: List[int] = []
        self.data_dir = ""
        self.log_path = os.path.join(WORK, f"server-{name}.log")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 600) -> "Server":
        self.port = free_port()
        self.data_dir = os.path.join(WORK, f"data-{self.name}")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        env = _environment_without_blas_choice()
        env.update(MODEL=self.model, DATA_DIR=self.data_dir, PORT=str(self.port), HOST="127.0.0.1",
                   LOG_LEVEL="warning", **self.extra_env)
        log = open(self.log_path, "w")
        started = time.perf_counter()
        command = ([PY, "-m", "video_analysis.serve"] if self.front else
                   [PY, "-m", "gunicorn", "--config", "gunicorn.conf.py", "app:create_app()"])
        self.process = subprocess.Popen(
            command,
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server {self.name} exited; see {self.log_path}")
            try:
                health = requests.get(self.base + "/health", timeout=2).json()
                if health["model"]["loaded"]:
                    break
                if health.get("status") == "degraded":
                    raise RuntimeError(f"server {self.name}: {health.get('reason')}")
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"server {self.name} not ready in {timeout:.0f} s")
        self.ready_seconds = time.perf_counter() - started
        self.worker_pid = self._worker()
        return self

    def _worker(self) -> int:
        """gunicorn's worker: the one child of the launcher's child that is not nginx (gunicorn's arbiter)."""
        def children(pid: int) -> List[int]:
            with open(f"/proc/{pid}/task/{pid}/children") as handle:
                return [int(p) for p in handle.read().split()]

        def is_nginx(pid: int) -> bool:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                return handle.read().startswith(b"nginx")

        if not self.front:
            workers = children(self.process.pid)
            if len(workers) != 1:
                raise RuntimeError(f"expected one gunicorn worker, found {workers}")
            return workers[0]
        started = children(self.process.pid)
        nginx = [pid for pid in started if is_nginx(pid)]
        arbiters = [pid for pid in started if pid not in nginx]
        self.nginx_pids = nginx + [child for pid in nginx for child in children(pid)]
        workers = [child for pid in arbiters for child in children(pid)]
        if len(nginx) != 1 or len(workers) != 1:
            raise RuntimeError(f"expected nginx and one gunicorn worker, found nginx {nginx}, workers {workers}")
        return workers[0]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group this script created for it
            self.process.wait(10)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class PureWorker:
    """bench/pure_inference.py --serve in a subprocess: the model loaded once, passes on request."""

    def __init__(self, model: str, env: Optional[dict] = None):
        environment = _environment_without_blas_choice()
        environment.update(env or {})
        self.process = subprocess.Popen(
            [PY, "-m", "bench.pure_inference", "--model", model, "--serve"],
            cwd=ROOT, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.ready = self._answer()

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("pure inference worker exited")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def run(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
