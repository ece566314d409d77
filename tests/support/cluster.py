"""A whole cluster for one test: its own redis-server, an API service (gunicorn, WEB_PROCESSES of them) and model
workers, each with a DATA_DIR of its own as if on a machine of its own. Used through the `cluster` fixture."""
from __future__ import annotations

import json
import os
import time
import urllib.request
from typing import Callable, Dict, List, Optional

import requests

from tools.service_process import ServiceProcess, WorkerProcess
from video_analysis.cluster.connection import RETRY_AFTER_SECONDS, UNREACHABLE

TOKEN = "test-worker-token-0123456789"
TERMINAL = ("completed", "failed", "cancelled")
UPLOAD = "/api/v1/video/upload"


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


def assert_unreachable(response, legacy: bool = False) -> None:
    """The answer while Redis is away: 503, Retry-After, the sentence that says so (problem+json)."""
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["detail"] == body["error"] == UNREACHABLE
    assert body.get("success", None) is (False if legacy else None)


class ClusterApi:
    """The async API of a cluster's API service, through real HTTP (its port stays across restarts); `seen` keeps
    every status body read, by session."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.seen: Dict[str, List[dict]] = {}

    @property
    def base(self) -> str:
        return self.cluster.base

    def upload(self, video: str, route: str = UPLOAD, **fields) -> requests.Response:
        with open(video, "rb") as handle:
            return requests.post(self.base + route, files={"video": handle}, data=fields, timeout=120)

    def start(self, video: str, **fields) -> str:
        """Upload; the new session's id (the upload must be accepted)."""
        response = self.upload(video, **fields)
        assert response.status_code == 202, response.text
        return response.json()["sessionId"]

    def status(self, session_id: str) -> dict:
        response = requests.get(f"{self.base}/api/v1/video/status/{session_id}", timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        self.seen.setdefault(session_id, []).append(body)
        return body

    def results(self, session_id: str) -> dict:
        response = requests.get(f"{self.base}/api/v1/video/results/{session_id}", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def cancel(self, session_id: str) -> dict:
        response = requests.post(f"{self.base}/api/v1/video/cancel/{session_id}", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def cleanup(self, session_id: str) -> None:
        response = requests.delete(f"{self.base}/api/v1/video/cleanup/{session_id}", timeout=10)
        assert response.status_code == 200, response.text

    def wait(self, session_id: str, until: Callable[[dict], bool], timeout: float = 120.0,
             outage: bool = False) -> dict:
        """Poll the status until `until(body)`. With `outage` (Redis or the API is away meanwhile) a refused
        connection or a 503 with Retry-After is waited through; any other answer fails the test."""
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, (f"{session_id} never got there; last status: "
                                                 f"{(self.seen.get(session_id) or [None])[-1]}\n{self.cluster.api.log()}")
            try:
                response = requests.get(f"{self.base}/api/v1/video/status/{session_id}", timeout=10)
            except requests.ConnectionError:
                if not outage:
                    raise
                time.sleep(0.05)
                continue
            if outage and response.status_code == 503:
                assert_unreachable(response)
                time.sleep(0.05)
                continue
            assert response.status_code == 200, response.text
            body = response.json()
            self.seen.setdefault(session_id, []).append(body)
            if until(body):
                return body
            time.sleep(0.02)

    def wait_ended(self, session_id: str, **options) -> dict:
        return self.wait(session_id, lambda body: body["status"] in TERMINAL, **options)

    def wait_all_ended(self, sessions: List[str], timeout: float = 120.0) -> List[dict]:
        """Poll every session in turn until all have ended; their final status bodies."""
        deadline = time.monotonic() + timeout
        final = {}
        while len(final) < len(sessions):
            for session_id in sessions:
                if session_id not in final:
                    body = self.status(session_id)
                    if body["status"] in TERMINAL:
                        final[session_id] = body
            assert time.monotonic() < deadline, f"waited {timeout:.0f} s; ended: {list(final)} of {sessions}"
            time.sleep(0.03)
        return [final[session_id] for session_id in sessions]

    def messages(self, session_id: str) -> List[str]:
        return [body["message"] for body in self.seen.get(session_id, ())]
