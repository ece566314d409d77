"""The ways of serving the app that the slow-clients experiment compares, and the processes it samples.

    gunicorn      `gunicorn --config gunicorn.conf.py` alone (as before serve.py: 16 threads)
    gunicorn-256  the same with HTTP_THREADS=256 (any number of threads)
    nginx         `make run` (serve.py): nginx in front, gunicorn on a unix socket; HEADER_TIMEOUT_SECONDS=10

Each is started by bench/server.py's `running_service` (tools/service_process.py).
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Tuple

from bench.server import running_service
from tools.service_process import ServiceProcess

HEADER_TIMEOUT = 10  # seconds (nginx's client_header_timeout)


def launch(name: str) -> Tuple[str, dict]:
    """How set-up `name` is started (`how` of tools/service_process.py) and the environment it adds."""
    if name == "gunicorn":
        return "gunicorn", {}
    if name.startswith("gunicorn-"):
        return "gunicorn", {"HTTP_THREADS": name.split("-", 1)[1]}
    if name == "nginx":
        return "make run", {"HEADER_TIMEOUT_SECONDS": HEADER_TIMEOUT}
    raise SystemExit(f"unknown set-up {name!r}: gunicorn, gunicorn-<threads> or nginx")


@contextlib.contextmanager
def serving(name: str, model: str) -> Iterator[ServiceProcess]:
    """Set-up `name` serving `model`, ready; its log is bench/work/server-slow-<name>.log."""
    how, env = launch(name)
    with running_service(f"slow-{name}", model, how=how, timeout=120, **env) as service:
        yield service


def process_groups(service: ServiceProcess) -> Dict[str, List[int]]:
    """The processes to sample: gunicorn's worker, which answers the requests ("app"), and nginx's, if any."""
    nginx = [pid for pid in service.descendants() if _command_line(pid).startswith(b"nginx")]
    return {"app": [service.worker_pid()], **({"nginx": nginx} if nginx else {})}


def sample(groups: Dict[str, List[int]]) -> Dict[str, Dict[str, int]]:
    """Each group's RSS and threads, summed over its processes, now."""
    out = {}
    for name, pids in groups.items():
        values = [_proc_status(pid) for pid in pids]
        out[name] = {"rss_kib": sum(v.get("VmRSS", 0) for v in values),
                     "threads": sum(v.get("Threads", 0) for v in values), "processes": len(pids)}
    return out


def _command_line(pid: int) -> bytes:
    """As the process shows it: nginx rewrites its own to "nginx: master process ..."."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _proc_status(pid: int) -> Dict[str, int]:
    values = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(("VmRSS:", "Threads:")):
                    name, value = line.split(":", 1)
                    values[name] = int(value.split()[0])
    except OSError:
        pass
    return values
