"""The durable session store (issue 16): what writing every change through to SQLite costs.

- store cost: a highlights job's wall time on a service with the state
  database (the default) ÷ the same job on a service with STATE_DB=:memory:
  (nothing on disk), both services running, jobs alternated (on, off, off,
  on, ...), median of the pairwise ratios;
- bytes written per segment: what the web process wrote during a job
  (/proc/<worker>/io: `wchar`, bytes handed to write(), and `write_bytes`,
  bytes sent to the disk) on the store-on service minus the same on the
  store-off service, per segment;
- restart with 1,000 ended sessions: the time to read them back
  (`SessionManager` over the file, in this process), and the service's time
  from start to ready on that DATA_DIR ÷ on an empty one (the model's load
  is in both); plus the database's bytes per ended session.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from typing import Dict, Tuple

import requests

from bench.client import job_params, run_job, wait_finished
from bench.server import running_service
from bench.system import say
from bench.videos import WORK
from tools.service_process import ServiceProcess
from video_analysis.config import STATE_DB_NAME
from video_analysis.jobs.sessions import ProcessingStatus, SessionManager
from video_analysis.jobs.state_db import StateDatabase


def _io(pid: int) -> Dict[str, int]:
    with open(f"/proc/{pid}/io") as handle:
        return {name: int(value) for name, value in (line.split(": ") for line in handle)}


def _job_with_io(server: ServiceProcess, pid: int, video: str) -> Tuple[dict, Dict[str, int]]:
    before = _io(pid)
    job = run_job(server.base, video)
    after = _io(pid)
    return job, {name: after[name] - before[name] for name in ("wchar", "write_bytes")}


def store_cost(model: str, name: str, video: str, rounds: int) -> dict:
    """Jobs alternated between a service with the state database and one without."""
    with running_service(f"{name}-store-on", model, JOB_WORKERS=1) as on, \
            running_service(f"{name}-store-off", model, JOB_WORKERS=1, STATE_DB=":memory:") as off:
        pids = {"on": on.worker_pid(), "off": off.worker_pid()}
        servers = {"on": on, "off": off}
        for server in (on, off):
            run_job(server.base, video)  # warm both the same way
        walls: Dict[str, list] = {"on": [], "off": []}
        written: Dict[str, list] = {"on": [], "off": []}
        segments = None
        for index in range(rounds):
            for side in (("on", "off") if index % 2 == 0 else ("off", "on")):
                time.sleep(0.5)  # the other process's OpenBLAS threads stop spinning
                job, io = _job_with_io(servers[side], pids[side], video)
                walls[side].append(job["wall_seconds"])
                written[side].append(io)
                segments = job["segments"]
            say(f"  store cost round {index + 1}: on {walls['on'][-1]:.2f} s, off {walls['off'][-1]:.2f} s")
    ratios = [a / b for a, b in zip(walls["on"], walls["off"])]
    per_segment = {
        name: statistics.median((a[name] - b[name]) / segments for a, b in zip(written["on"], written["off"]))
        for name in ("wchar", "write_bytes")
    }
    return {
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "wall_seconds_store_on": walls["on"],
        "wall_seconds_store_off": walls["off"],
        "segments": segments,
        "written_store_on": written["on"],
        "written_store_off": written["off"],
        "db_bytes_per_segment_wchar": per_segment["wchar"],
        "db_bytes_per_segment_disk": per_segment["write_bytes"],
        "video": os.path.basename(video),
    }


def _real_result(model: str, video: str) -> dict:
    """One real result object to store 1,000 times: a tiny job's."""
    with running_service("restart-source", model, JOB_WORKERS=1, STATE_DB=":memory:") as server, \
            requests.Session() as http:
        with open(video, "rb") as handle:
            sid = http.post(server.base + "/api/v1/video/upload", data=job_params(),
                            files={"video": (os.path.basename(video), handle, "video/mp4")}, timeout=600).json()["sessionId"]
        wait_finished(http, server.base, sid)
        return http.get(f"{server.base}/api/v1/video/results/{sid}", timeout=60).json()["data"]


def _fill(data_dir: str, result: dict, count: int) -> SessionManager:
    """`count` completed sessions, each with a directory holding a small upload, as the service leaves them."""
    shutil.rmtree(data_dir, ignore_errors=True)
    os.makedirs(data_dir, mode=0o700)
    sessions = SessionManager(86400, StateDatabase(os.path.join(data_dir, STATE_DB_NAME)))
    for _ in range(count):
        sid = sessions.new_id()
        directory = os.path.join(data_dir, sid)
        os.mkdir(directory, 0o700)
        path = os.path.join(directory, "upload-0.bin")
        with open(path, "wb") as handle:
            handle.write(b"\0" * 4096)
        sessions.create(sid, "highlights", "match.mp4", directory, {}, video_path=path,
                        video_info=result["video"])
        sessions.update(sid, status=ProcessingStatus.PROCESSING)
        sessions.update(sid, status=ProcessingStatus.COMPLETED, message="Found", result=result)
    sessions.close()
    return sessions


def _ready_seconds(model: str, data_dir: str) -> float:
    started = time.perf_counter()
    service = ServiceProcess(model, data_dir, how="gunicorn", env={"LOG_LEVEL": "warning"},
                             log_path=os.path.join(WORK, "server-restart.log"))
    try:
        service.wait_ready(300)
        return time.perf_counter() - started
    finally:
        service.stop()


def restart_with_ended_sessions(model: str, video: str, count: int = 1000, rounds: int = 2) -> dict:
    result = _real_result(model, video)
    full_dir = os.path.join(WORK, "data-restart-full")
    empty_dir = os.path.join(WORK, "data-restart-empty")
    say(f"  writing {count} ended sessions")
    started = time.perf_counter()
    _fill(full_dir, result, count)
    fill_seconds = time.perf_counter() - started
    database = os.path.join(full_dir, STATE_DB_NAME)
    db_bytes = sum(os.path.getsize(database + suffix) for suffix in ("", "-wal") if os.path.exists(database + suffix))
    loads = []
    for _ in range(3):
        started = time.perf_counter()
        SessionManager(86400, StateDatabase(database)).close()
        loads.append(time.perf_counter() - started)
    ready = {"full": [], "empty": []}
    for index in range(rounds):
        for side in (("full", "empty") if index % 2 == 0 else ("empty", "full")):
            if side == "empty":
                shutil.rmtree(empty_dir, ignore_errors=True)
            ready[side].append(_ready_seconds(model, full_dir if side == "full" else empty_dir))
        say(f"  restart round {index + 1}: {count} sessions {ready['full'][-1]:.2f} s, none {ready['empty'][-1]:.2f} s")
    shutil.rmtree(full_dir, ignore_errors=True)
    shutil.rmtree(empty_dir, ignore_errors=True)
    return {
        "sessions": count,
        "load_seconds": statistics.median(loads),
        "load_seconds_all": loads,
        "ready_seconds_with_sessions": ready["full"],
        "ready_seconds_empty": ready["empty"],
        "ready_ratio": statistics.median(ready["full"]) / statistics.median(ready["empty"]),
        "db_bytes_per_ended_session": db_bytes / count,
        "result_json_bytes": len(json.dumps(result)),
        "write_seconds_per_session": fill_seconds / count,
    }
