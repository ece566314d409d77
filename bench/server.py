"""The processes the figures measure: the real service (`running_service`; in cluster mode `running_cluster`) and
pure inference (`PureWorker`)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from typing import Iterator, List, Optional

from bench.system import PY, ROOT
from bench.videos import WORK
from tools.service_process import ServiceProcess, WorkerProcess

# The benchmark chooses the BLAS per process; a caller's own choice must not leak into the server.
_BLAS_VARIABLES = ("USE_OPENBLAS", "LD_PRELOAD")


def _environment_without_blas_choice() -> dict:
    return {k: v for k, v in os.environ.items() if k not in _BLAS_VARIABLES}


@contextlib.contextmanager
def running_service(name: str, model: str, how: str = "make run", root: str = ROOT, timeout: float = 600,
                    **env) -> Iterator[ServiceProcess]:
    """The real service, started by tools/service_process.py and ready; stopped and its DATA_DIR removed after.

    `how="make run"` (the default) is what `make run` starts: serve.py, nginx
    in front of gunicorn; clients reach it through nginx's port (`base`,
    `port`), and `worker_pid()` is gunicorn's one worker, the process that
    answers requests. `how="gunicorn"` starts gunicorn alone on the port, as
    `make run` did before serve.py. `root` is the checkout whose service runs.
    Keyword arguments become environment variables of the server
    (JOB_WORKERS=1, ...). Its DATA_DIR and log are bench/work/data-<name> and
    bench/work/server-<name>.log.
    """
    data_dir = os.path.join(WORK, f"data-{name}")
    shutil.rmtree(data_dir, ignore_errors=True)
    environment = {variable: None for variable in _BLAS_VARIABLES}
    environment.update({k: str(v) for k, v in env.items()})
    service = ServiceProcess(model, data_dir, how=how, root=root, env=environment,
                             log_path=os.path.join(WORK, f"server-{name}.log"))
    try:
        health = service.wait_ready(timeout)
        if not health["model"]["loaded"]:
            raise RuntimeError(f"server {name}: {health.get('reason')}")
        yield service
    finally:
        service.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


# The cluster's shared secret (WORKER_TOKEN): the benchmark's own cluster only, on loopback.
CLUSTER_TOKEN = "bench-worker-token-0123456789"


class ClusterService:
    """A cluster on this machine: a redis-server of the benchmark's own, one API node (`api`, a ServiceProcess with
    REDIS_URL and WORKER_TOKEN) and model workers (`workers`, `python worker.py` each); `base` is the API's URL, so
    the figures that measure a `running_service` measure this the same way."""

    def __init__(self, name: str, model: str, redis_server, api: ServiceProcess, worker_env: dict):
        self.name, self.model, self.redis, self.api = name, model, redis_server, api
        self.no_blas_choice = {variable: None for variable in _BLAS_VARIABLES}
        self.worker_env = dict(self.no_blas_choice, **worker_env)
        self.workers: List[WorkerProcess] = []

    @property
    def base(self) -> str:
        return self.api.base

    @property
    def port(self) -> int:
        return self.api.port

    def health(self) -> dict:
        with urllib.request.urlopen(self.base + "/health", timeout=10) as response:
            return json.load(response)

    def add_worker(self, timeout: float = 600) -> WorkerProcess:
        """One more model worker, with a scratch DATA_DIR of its own (as on a machine of its own), once /health
        lists it (its model is loaded and it takes jobs)."""
        slot = len(self.workers)
        worker = WorkerProcess(self.model, os.path.join(WORK, f"data-{self.name}-worker{slot}"), self.redis.url,
                               CLUSTER_TOKEN, env=self.worker_env,
                               log_path=os.path.join(WORK, f"worker-{self.name}-{slot}.log"))
        self.workers.append(worker)
        worker.wait_ready(self.base, timeout)
        return worker

    def remove_worker(self) -> None:
        """Stop the newest worker (SIGTERM: it is idle, so it just exits) and wait until /health no longer lists
        it, so that the next jobs go to the others only."""
        worker = self.workers.pop()
        worker.stop()
        deadline = time.monotonic() + 60
        while any(w["id"] == worker.name for w in self.health()["workers"]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {worker.name} stopped but is still listed by /health")
            time.sleep(0.2)
        shutil.rmtree(worker.data_dir, ignore_errors=True)

    def set_workers(self, count: int, env: Optional[dict] = None) -> None:
        """`count` workers running; with `env` (their environment) other than the running ones', all started
        again with it."""
        env = self.worker_env if env is None else dict(self.no_blas_choice, **env)
        if env != self.worker_env:
            while self.workers:
                self.remove_worker()
            self.worker_env = env
        while len(self.workers) > count:
            self.remove_worker()
        while len(self.workers) < count:
            self.add_worker()

    def stop(self) -> None:
        while self.workers:
            worker = self.workers.pop()
            worker.stop()
            shutil.rmtree(worker.data_dir, ignore_errors=True)
        self.api.stop()


@contextlib.contextmanager
def running_cluster(name: str, model: str, workers: int = 1, how: str = "make run", timeout: float = 600,
                    worker_env: Optional[dict] = None, redis_options: Optional[dict] = None,
                    **env) -> Iterator[ClusterService]:
    """The service in cluster mode, ready: a redis-server of its own (tools/redis_server.py, in
    bench/work/redis-<name>), the API started as `running_service` starts it plus REDIS_URL and WORKER_TOKEN
    (`make run`: nginx + WEB_PROCESSES gunicorn processes; its log bench/work/server-<name>.log), and `workers`
    model workers (logs bench/work/worker-<name>-<n>.log). Keyword arguments become the API's environment,
    `worker_env` the workers'; neither gets the caller's BLAS choice; `redis_options` go to RedisServer (its
    default: AOF on, fsynced at every write). Everything is stopped and its data removed after."""
    from tools.redis_server import RedisServer  # the redis package: only the cluster figures need it

    data_dir = os.path.join(WORK, f"data-{name}")
    redis_dir = os.path.join(WORK, f"redis-{name}")
    for directory in (data_dir, redis_dir):
        shutil.rmtree(directory, ignore_errors=True)
    no_blas_choice = {variable: None for variable in _BLAS_VARIABLES}
    redis_server = RedisServer(redis_dir, **(redis_options or {})).start()
    cluster = None
    try:
        environment = dict(no_blas_choice, REDIS_URL=redis_server.url, WORKER_TOKEN=CLUSTER_TOKEN)
        environment.update({k: str(v) for k, v in env.items()})
        api = ServiceProcess(model, data_dir, how=how, env=environment,
                             log_path=os.path.join(WORK, f"server-{name}.log"))
        cluster = ClusterService(name, model, redis_server, api, {k: str(v) for k, v in (worker_env or {}).items()})
        api.wait_health(timeout=60)  # it answers at all: with no worker yet it is not "loaded"
        for _ in range(workers):
            cluster.add_worker(timeout)
        health = cluster.health()
        if workers and not health["model"]["loaded"]:
            raise RuntimeError(f"cluster {name}: {health.get('reason')}")
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop()
        redis_server.stop()
        for directory in (data_dir, redis_dir):
            shutil.rmtree(directory, ignore_errors=True)


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
