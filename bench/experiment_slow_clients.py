"""Slow and stalled clients against a serving set-up: do /health and status polls still get answers?

    python -m bench.experiment_slow_clients                       # gunicorn, nginx (serve.py), gunicorn-256
    python -m bench.experiment_slow_clients --setups nginx,waitress --seconds 15

Each set-up serves the tiny checkpoint with one job running (a 600 s video
in 1 s segments). Then, all from this process:

- 64 connections send `GET /health HTTP/1.1\\r\\nHost: x\\r\\n` and stop
  (stalled mid-header); 64 connect and send nothing (silent); 16 POST an
  upload and trickle its body at 1 KiB/s (with `--drip N`, N more send a
  header one byte a second, never ending it). An attacker keeps the pressure
  on: a stalled or silent connection the server closes is opened again at
  once. How long the server let each stalled connection live is recorded
  (the header timeout at work).
- every 0.1 s a probe opens a new connection and GETs /health or the job's
  status, alternately, with `--probe-timeout` (10 s) to get its answer;
  latency p50/p99/max of the answered ones, and the failures.
- every 0.25 s the threads and RSS of gunicorn's worker (or waitress) and
  of nginx's processes are sampled.

Set-ups:
  gunicorn      `gunicorn --config gunicorn.conf.py` alone (as before: 16 threads)
  gunicorn-256  the same with HTTP_THREADS=256
  nginx         serve.py (`make run`): nginx in front, gunicorn on a unix socket; HEADER_TIMEOUT_SECONDS=10
  <name>+quiet  the same without the attack (the control)
  waitress      waitress (16 threads, channel-timeout 10 s, connection limit 1000) serving create_app;
                needs `.venv/bin/python -m pip install --target bench/work/waitress waitress` first

Results: printed, and written to bench/results/slow-clients/<date>.json.
Loopback only; every loop is bounded in time.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

import requests

from bench.pollers import percentile
from bench.system import PY, ROOT, checkpoint, free_port
from bench.videos import WORK, bench_video

# A folder of its own: bench/report.py and the smoke tests read every bench/results/*.json as a bench run.
RESULTS = os.path.join(ROOT, "bench", "results", "slow-clients")
WAITRESS_PATH = os.path.join(WORK, "waitress")
HEADER_TIMEOUT = 10  # seconds, for nginx and waitress alike
STALLED_HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\n"


def say(message: str) -> None:
    print(f"[slow-clients {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- processes -------------------------------------------------------------------------
def children(pid: int) -> List[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                out.extend(int(p) for p in handle.read().split())
    except OSError:
        pass
    return out


def descendants(pid: int) -> List[int]:
    out, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def proc_status(pid: int) -> Dict[str, int]:
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


class Setup:
    """One way of serving the app, started in a subprocess on a loopback port."""

    def __init__(self, name: str, model: str):
        self.name, self.model = name, model
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = os.path.join(WORK, f"data-slow-{name}")
        self.log_path = os.path.join(WORK, f"server-slow-{name}.log")
        self.process: Optional[subprocess.Popen] = None
        self.groups: Dict[str, List[int]] = {}

    def command(self):
        env = {"MODEL": self.model, "DATA_DIR": self.data_dir, "HOST": "127.0.0.1", "PORT": str(self.port),
               "LOG_LEVEL": "warning"}
        gunicorn = [PY, "-m", "gunicorn", "--config", "gunicorn.conf.py", "app:create_app()"]
        if self.name == "gunicorn":
            return gunicorn, env
        if self.name.startswith("gunicorn-"):
            return gunicorn, dict(env, HTTP_THREADS=self.name.split("-", 1)[1])
        if self.name == "nginx":
            return [PY, "-m", "video_analysis.serve"], dict(env, HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT))
        if self.name == "waitress":
            if not os.path.isdir(WAITRESS_PATH):
                raise SystemExit(f"waitress is not in {WAITRESS_PATH}: "
                                 f"{PY} -m pip install --target {WAITRESS_PATH} waitress")
            return ([PY, "-m", "waitress", "--host", "127.0.0.1", "--port", str(self.port), "--threads", "16",
                     f"--channel-timeout={HEADER_TIMEOUT}", "--cleanup-interval=1", "--connection-limit=1000",
                     "--call", "app:create_app"],
                    dict(env, PYTHONPATH=os.pathsep.join([WAITRESS_PATH, ROOT])))
        raise SystemExit(f"unknown set-up {self.name!r}")

    def start(self, timeout: float = 120) -> "Setup":
        shutil.rmtree(self.data_dir, ignore_errors=True)
        command, extra = self.command()
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD",)}
        env.update(extra)
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            try:
                if requests.get(self.base + "/health", timeout=2).json()["model"]["loaded"]:
                    break
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{self.name} not ready in {timeout:.0f} s; see {self.log_path}")
        self.groups = self._groups()
        return self

    def _groups(self) -> Dict[str, List[int]]:
        """The processes to sample: the one holding the app, and nginx's."""
        everyone = [self.process.pid] + descendants(self.process.pid)
        nginx = [pid for pid in everyone if "nginx" in command_line(pid).split(" ")[0]]
        python = [pid for pid in everyone if pid not in nginx]
        # The app lives in the python process that has no python children: gunicorn's worker, or waitress.
        app = [pid for pid in python if not [c for c in children(pid) if c in python]]
        groups = {"app": app}
        if nginx:
            groups["nginx"] = nginx
        return groups

    def sample(self) -> Dict[str, Dict[str, int]]:
        out = {}
        for name, pids in self.groups.items():
            values = [proc_status(pid) for pid in pids]
            out[name] = {"rss_kib": sum(v.get("VmRSS", 0) for v in values),
                         "threads": sum(v.get("Threads", 0) for v in values), "processes": len(pids)}
        return out

    def stop(self) -> Optional[int]:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # the session this script made for it
                self.process.wait(10)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        return self.process.returncode


# -- the attack --------------------------------------------------------------------------
class Attack:
    """Stalled, silent and trickling connections, driven from one thread; closed ones are reopened."""

    def __init__(self, port: int, stalled: int, silent: int, trickle: int, drip: int = 0,
                 trickle_bytes: int = 64 * 1024):
        self.port = port
        self.counts = {"stalled": stalled, "silent": silent, "trickle": trickle, "drip": drip}
        self.trickle_bytes = trickle_bytes
        self.selector = selectors.DefaultSelector()
        self.stop_event = threading.Event()
        self.lifetimes: Dict[str, List[float]] = {kind: [] for kind in self.counts}
        self.opened: Dict[str, int] = {kind: 0 for kind in self.counts}
        self.open_errors: Dict[str, int] = {kind: 0 for kind in self.counts}
        self.trickled = 0
        self.answers: Dict[str, Dict[str, int]] = {kind: {} for kind in self.counts}  # first line of what came back
        self.conns: Dict[socket.socket, dict] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, kind: str) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            self.open_errors[kind] += 1
            return
        self.opened[kind] += 1
        if kind == "stalled":
            sock.sendall(STALLED_HEAD)
        elif kind == "drip":
            sock.sendall(STALLED_HEAD + b"X-Drip: ")
        elif kind == "trickle":
            boundary = "slowclient"
            head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"slow.mp4\"\r\n"
                    f"Content-Type: video/mp4\r\n\r\n").encode()
            length = len(head) + self.trickle_bytes + len(f"\r\n--{boundary}--\r\n")
            sock.sendall((f"POST /api/v1/video/upload HTTP/1.1\r\nHost: x\r\n"
                          f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                          f"Content-Length: {length}\r\n\r\n").encode() + head)
        sock.setblocking(False)
        self.conns[sock] = {"kind": kind, "opened": time.monotonic(), "sent": 0}
        self.selector.register(sock, selectors.EVENT_READ)

    def _closed(self, sock: socket.socket, reopen: bool) -> None:
        info = self.conns.pop(sock)
        self.lifetimes[info["kind"]].append(time.monotonic() - info["opened"])
        self.selector.unregister(sock)
        sock.close()
        if reopen and not self.stop_event.is_set():
            self._open(info["kind"])

    def start(self) -> "Attack":
        for kind, count in self.counts.items():
            for _ in range(count):
                self._open(kind)
        self.started = time.monotonic()
        self.thread.start()
        return self

    def _run(self) -> None:
        next_trickle = time.monotonic() + 1.0
        while not self.stop_event.is_set():
            for key, _ in self.selector.select(0.05):
                sock = key.fileobj
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    line = data.split(b"\r\n", 1)[0].decode("latin-1")[:60]
                    kind_answers = self.answers[self.conns[sock]["kind"]]
                    kind_answers[line] = kind_answers.get(line, 0) + 1
                # Closed, or answered (the server is done with it). A trickling upload the server answered
                # or dropped is not reopened: it shows in the counts.
                self._closed(sock, reopen=self.conns[sock]["kind"] != "trickle")
            if time.monotonic() >= next_trickle:
                next_trickle += 1.0
                for sock, info in list(self.conns.items()):
                    try:
                        if info["kind"] == "trickle" and info["sent"] < self.trickle_bytes:
                            sock.send(b"\0" * 1024)
                            info["sent"] += 1024
                            self.trickled += 1024
                        elif info["kind"] == "drip":
                            sock.send(b"a")  # a header that never ends, one byte a second
                    except OSError:
                        self._closed(sock, reopen=info["kind"] == "drip")

    def finish(self) -> dict:
        self.stop_event.set()
        self.thread.join()
        now = time.monotonic()
        still_open = {kind: 0 for kind in self.counts}
        open_ages = {kind: [] for kind in self.counts}
        for sock, info in list(self.conns.items()):
            still_open[info["kind"]] += 1
            open_ages[info["kind"]].append(now - info["opened"])
            self.selector.unregister(sock)
            sock.close()
        self.selector.close()

        def summary(values: List[float]) -> Optional[dict]:
            return {"n": len(values), "min_s": min(values), "median_s": percentile(values, 50),
                    "max_s": max(values)} if values else None

        return {
            "seconds": now - self.started,
            "opened": self.opened,
            "open_errors": self.open_errors,
            "closed_by_server": {kind: summary(values) for kind, values in self.lifetimes.items()},
            "still_open_at_end": still_open,
            "oldest_open_s": {kind: max(ages) if ages else None for kind, ages in open_ages.items()},
            "trickle_bytes_sent": self.trickled,
            "answers": self.answers,
        }


# -- probes -------------------------------------------------------------------------------
def probe(port: int, path: str, timeout: float) -> dict:
    """One GET on a new connection; latency to the whole answer, or the failure."""
    started = time.monotonic()
    deadline = started + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout()
                sock.settimeout(remaining)
                piece = sock.recv(65536)
                if not piece:
                    break
                data += piece
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
        return {"path": path, "ms": (time.monotonic() - started) * 1000, "status": status,
                "error": None if status == 200 else f"status {status}"}
    except socket.timeout:
        return {"path": path, "ms": None, "status": None, "error": "no answer in time"}
    except OSError as error:
        return {"path": path, "ms": None, "status": None, "error": type(error).__name__}


def probe_window(port: int, paths: List[str], seconds: float, every: float, timeout: float) -> List[dict]:
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=int(timeout / every) + 8) as pool:
        futures = []
        began = time.monotonic()
        index = 0
        while time.monotonic() - began < seconds:
            futures.append(pool.submit(probe, port, paths[index % len(paths)], timeout))
            index += 1
            time.sleep(max(began + index * every - time.monotonic(), 0))
        for future in futures:
            results.append(future.result())
    return results


def latency_summary(results: List[dict], timeout: float) -> dict:
    answered = [r["ms"] for r in results if r["ms"] is not None]
    ok = [r["ms"] for r in results if r["error"] is None]
    counted = [r["ms"] if r["ms"] is not None else timeout * 1000 for r in results]
    errors: Dict[str, int] = {}
    for r in results:
        if r["error"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    return {
        "requests": len(results),
        "answered_200": len(ok),
        "failures": len(results) - len(ok),
        "failure_kinds": errors,
        "p50_ms": percentile(answered, 50) if answered else None,
        "p99_ms": percentile(answered, 99) if answered else None,
        "max_ms": max(answered) if answered else None,
        # failures counted as the probe timeout: what a client waiting for an answer sees
        "p99_ms_failures_as_timeout": percentile(counted, 99) if counted else None,
    }


# -- one set-up ------------------------------------------------------------------------------
def run_setup(name: str, model: str, video: str, args) -> dict:
    quiet = name.endswith("+quiet")  # the same set-up and probes without the attack: the control
    setup = Setup(name.replace("+quiet", ""), model)
    say(f"{name}: starting")
    setup.start()
    result: dict = {"setup": name, "attack_connections": not quiet}
    try:
        with open(video, "rb") as handle:
            answer = requests.post(setup.base + "/api/v1/video/upload", data={"segment_duration": "1"},
                                   files={"video": ("long.mp4", handle, "video/mp4")}, timeout=60)
        answer.raise_for_status()
        sid = answer.json()["sessionId"]
        before = setup.sample()
        samples = []
        sampling = threading.Event()

        def sampler():
            while not sampling.is_set():
                samples.append(setup.sample())
                sampling.wait(0.25)

        sample_thread = threading.Thread(target=sampler, daemon=True)
        sample_thread.start()
        counts = (0, 0, 0, 0) if quiet else (args.stalled, args.silent, args.trickle, args.drip)
        say(f"{name}: {counts[0]} stalled + {counts[1]} silent + {counts[2]} trickling"
            f"{f' + {counts[3]} dripping' if counts[3] else ''} connections")
        attack = Attack(setup.port, *counts).start()
        time.sleep(1.0)  # let them take what they can
        say(f"{name}: probing /health and status for {args.seconds:.0f} s")
        results = probe_window(setup.port, ["/health", f"/api/v1/video/status/{sid}"], args.seconds, args.every,
                               args.probe_timeout)
        result["attack"] = attack.finish()
        sampling.set()
        sample_thread.join()
        result["probes"] = [[r["path"] == "/health", r["ms"], r["error"]] for r in results]  # for pooling rounds
        result["health"] = latency_summary([r for r in results if r["path"] == "/health"], args.probe_timeout)
        result["status"] = latency_summary([r for r in results if r["path"] != "/health"], args.probe_timeout)
        result["all"] = latency_summary(results, args.probe_timeout)
        result["resources"] = {
            group: {"before": before[group],
                    "max_rss_mib": max(s[group]["rss_kib"] for s in samples) / 1024,
                    "max_threads": max(s[group]["threads"] for s in samples),
                    "after_rss_mib": samples[-1][group]["rss_kib"] / 1024,
                    "after_threads": samples[-1][group]["threads"]}
            for group in before
        }
        try:
            job = requests.get(f"{setup.base}/api/v1/video/status/{sid}", timeout=5).json()
            result["job_status_at_end"] = job.get("status")
            requests.post(f"{setup.base}/api/v1/video/cancel/{sid}", timeout=5)
        except requests.RequestException as error:
            result["job_status_at_end"] = f"no answer ({type(error).__name__})"
    finally:
        stopped = time.monotonic()
        result["exit_status"] = setup.stop()
        result["stop_seconds"] = time.monotonic() - stopped
    return result


def show(result: dict) -> None:
    def ms(value):
        return "-" if value is None else f"{value:.1f}"

    for kind in ("health", "status"):
        s = result[kind]
        say(f"  {result['setup']:12s} {kind:7s} p50 {ms(s['p50_ms'])} ms  p99 {ms(s['p99_ms'])} ms  "
            f"max {ms(s['max_ms'])} ms  answered {s['answered_200']}/{s['requests']}  failures {s['failure_kinds']}")
    attack = result["attack"]

    def closed(kind: str) -> str:
        values = attack["closed_by_server"][kind]
        return "none" if not values else f"{values['n']} after {values['min_s']:.1f}-{values['max_s']:.1f} s"

    say(f"  {result['setup']:12s} closed by the server: stalled {closed('stalled')}, silent {closed('silent')}, "
        f"trickling {closed('trickle')}, dripping {closed('drip')}; still open at end {attack['still_open_at_end']}")
    for group, values in result["resources"].items():
        say(f"  {result['setup']:12s} {group}: threads {values['before']['threads']} -> max {values['max_threads']}, "
            f"RSS {values['before']['rss_kib'] / 1024:.0f} -> max {values['max_rss_mib']:.0f} MiB")


def pool(results: List[dict], timeout: float) -> dict:
    """One set-up's rounds together: /health and status probes pooled; the extremes of the rest."""
    probes = [{"path": "/health" if health else "status", "ms": ms, "error": error}
              for result in results for health, ms, error in result["probes"]]
    summary = latency_summary(probes, timeout)
    stalled = [r["attack"]["closed_by_server"]["stalled"] for r in results]
    resources = [r["resources"] for r in results]

    def rounded(value, digits=1):
        return None if value is None else round(value, digits)

    return {
        "rounds": len(results),
        "requests": summary["requests"],
        "failures": summary["failures"],
        "p50_ms": rounded(summary["p50_ms"]),
        "p99_ms": rounded(summary["p99_ms"]),
        "max_ms": rounded(summary["max_ms"]),
        "p99_ms_failures_as_timeout": rounded(summary["p99_ms_failures_as_timeout"]),
        "stalled_closed_s": None if not all(stalled) else
        [rounded(min(s["min_s"] for s in stalled)), rounded(max(s["max_s"] for s in stalled))],
        "app_threads_max": max(r["app"]["max_threads"] for r in resources),
        "app_rss_max_mib": rounded(max(r["app"]["max_rss_mib"] for r in resources), 0),
        "app_rss_before_mib": rounded(min(r["app"]["before"]["rss_kib"] for r in resources) / 1024, 0),
        "nginx_rss_max_mib": rounded(max(r["nginx"]["max_rss_mib"] for r in resources), 0)
        if all("nginx" in r for r in resources) else None,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setups", default="gunicorn,nginx,gunicorn-256",
                        help="comma-separated: gunicorn, gunicorn-<threads>, nginx, waitress")
    parser.add_argument("--seconds", type=float, default=15.0, help="probing window")
    parser.add_argument("--rounds", type=int, default=1, help="the set-ups in turn, this many times")
    parser.add_argument("--every", type=float, default=0.1, help="seconds between probes")
    parser.add_argument("--probe-timeout", type=float, default=10.0)
    parser.add_argument("--stalled", type=int, default=64)
    parser.add_argument("--silent", type=int, default=64)
    parser.add_argument("--trickle", type=int, default=16)
    parser.add_argument("--drip", type=int, default=0,
                        help="connections whose header never ends: one more byte every second")
    parser.add_argument("--out", help="default bench/results/slow-clients/<date>.json")
    args = parser.parse_args(argv)

    model = checkpoint("tiny")
    video = bench_video(600, fps=1, size=(96, 72))
    load_at_start = os.getloadavg()
    results = []
    names = [name.strip() for name in args.setups.split(",")]
    for index in range(args.rounds):  # set-ups in turn, so a change in background load hits them all
        for name in names:
            result = run_setup(name, model, video, args)
            result["round"] = index + 1
            show(result)
            results.append(result)
    pooled = {name: pool([r for r in results if r["setup"] == name], args.probe_timeout) for name in names}
    say(f"all rounds ({args.rounds}), load average {load_at_start[0]:.1f} -> {os.getloadavg()[0]:.1f}:")
    for name, summary in pooled.items():
        say(f"  {name:12s} p50 {summary['p50_ms']} ms  p99 {summary['p99_ms']} ms  max {summary['max_ms']} ms  "
            f"failures {summary['failures']}/{summary['requests']}  "
            f"stalled closed after {summary['stalled_closed_s']}  "
            f"app threads max {summary['app_threads_max']}  app RSS max {summary['app_rss_max_mib']} MiB  "
            f"nginx RSS max {summary['nginx_rss_max_mib']} MiB")
    out = args.out or os.path.join(RESULTS, f"{dt.date.today().isoformat()}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    document = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "header_timeout_seconds": HEADER_TIMEOUT,
        "load_average_at_start": list(load_at_start),
        "load_average_at_end": list(os.getloadavg()),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "pooled": pooled,
        "results": results,
    }
    with open(out, "w") as handle:
        json.dump(document, handle, indent=2)
    say(f"wrote {os.path.relpath(out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
