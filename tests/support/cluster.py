"""A whole cluster for one test: its own redis-server, an API service (gunicorn, WEB_PROCESSES of them) and model
workers, each with a DATA_DIR of its own as if on a machine of its own. Used through the `cluster` fixture."""
from __future__ import annotations

import json
import os
import urllib.request
from typing import Dict, List, Optional

from tools.service_process import ServiceProcess, WorkerProcess

TOKEN = "test-worker-token-0123456789"
TERMINAL = ("completed", "failed", "cancelled")


class Cluster:
    def __init__(self, root: str, model_dir: str, redis_server):
        os.makedirs(root, exist_ok=True)
        self.root = root
        self.model_dir = model_dir
        self.redis = redis_server
        self.api: Optional[ServiceProcess] = None
        self.workers: List[WorkerProcess] = []
        self._api_env: dict = {}

    @property
    def base(self) -> str:
        return self.api.base

    def env(self, **extra) -> dict:
        return dict({"REDIS_URL": self.redis.url, "WORKER_TOKEN": TOKEN}, **extra)

    def start_api(self, ready: bool = True, **env) -> ServiceProcess:
        """The API service (gunicorn with gunicorn.conf.py, as `make run` runs it behind nginx)."""
        self._api_env = env
        self.api = ServiceProcess(self.model_dir, os.path.join(self.root, "api"), env=self.env(**env))
        if ready:
            self.wait_api()
        return self.api

    def wait_api(self, timeout: float = 60.0) -> dict:
        """The API's /health body once it answers at all (with no worker yet it is not "loaded")."""
        return self.api.wait_health(timeout=timeout)

    def restart_api(self, kill: bool = False) -> ServiceProcess:
        """Stop (SIGKILL with `kill`) and start the API again: the same port (the sessions name its URL as where
        workers fetch their uploads) and the same DATA_DIR."""
        old = self.api
        old.kill() if kill else old.stop()
        self.api = ServiceProcess(self.model_dir, old.data_dir, env=self.env(**self._api_env), port=old.port)
        self.wait_api()
        return self.api

    def add_worker(self, model_dir: Optional[str] = None, ready: bool = True, **env) -> WorkerProcess:
        worker = WorkerProcess(model_dir or self.model_dir, os.path.join(self.root, f"worker{len(self.workers)}"),
                               self.redis.url, TOKEN, env=env)
        self.workers.append(worker)
        if ready:
            worker.wait_ready(self.base)
        return worker

    def health(self) -> dict:
        with urllib.request.urlopen(self.base + "/health", timeout=5) as response:
            return json.load(response)

    def files(self) -> Dict[str, list]:
        """The files each node's DATA_DIR holds (the API's, and every worker's, whose scratch directory
        worker-<pid> is there while it runs), as paths relative to it."""
        nodes = {"api": self.api.data_dir, **{w.name: w.data_dir for w in self.workers}}
        return {name: sorted(os.path.relpath(os.path.join(parent, file), path)
                             for parent, _, names in os.walk(path) for file in names)
                for name, path in nodes.items()}

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.api is not None:
            self.api.stop()
