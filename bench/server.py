"""The processes the figures measure: the real service (`running_service`) and pure inference (`PureWorker`)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from typing import Iterator, Optional

from bench.system import PY, ROOT
from bench.videos import WORK
from tools.service_process import ServiceProcess

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
