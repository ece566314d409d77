"""The supervisor of `make run`: starts gunicorn, then nginx in front of it, and stops both together.

- makes a private runtime directory (mode 0700, under $TMPDIR) for nginx's
  configuration, pid file, temporary files and gunicorn's socket, and
  `DATA_DIR/.request-bodies` (0700, on the disk uploads go to) for the
  bodies nginx buffers before passing them on;
- starts gunicorn (gunicorn.conf.py, bound to that socket), then nginx in
  the foreground on HOST:PORT once the socket is there;
- on SIGTERM or SIGINT sends gunicorn SIGTERM (its graceful shutdown:
  jobs cancelled, their files deleted) and nginx SIGQUIT (stop accepting,
  finish the answers in flight), waits for both, removes its directories
  and exits 0;
- if either dies by itself, stops the other and exits non-zero.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

from video_analysis.config import Config
from video_analysis.serve.nginx_config import find_nginx, nginx_config

# The repository: gunicorn.conf.py and app.py (`app:create_app()`) live there.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# DATA_DIR's entry for the bodies nginx buffers (jobs/storage.py leaves it alone).
REQUEST_BODY_DIR = ".request-bodies"
# How long the two may take to stop after SIGTERM before they are killed.
STOP_SECONDS = 20.0


def _child_setup() -> None:
    """In each child: its own process group (a terminal's Ctrl-C reaches the launcher only), and
    SIGTERM when the launcher dies, so a killed launcher leaves nothing running (Linux)."""
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


# gunicorn logs the client's address nginx saw; in front of GUNICORN_CMD_ARGS, so a caller's own settings win.
_ACCESS_LOG_FORMAT = """--access-logformat '%({x-real-ip}i)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'"""


def _gunicorn_command(config: Config, socket_path: str) -> List[str]:
    return [
        sys.executable, "-m", "gunicorn", "--config", os.path.join(ROOT, "gunicorn.conf.py"),
        "--bind", f"unix:{socket_path}",
        # nginx bounds the request head (a line up to 16 KiB, 4 such buffers). gunicorn's own limits are lower
        # (gunicorn 27 caps limit_request_line at 8190 whatever gunicorn.conf.py asks) and would answer some
        # requests nginx accepted with a plain HTML 400 or 414, so they are lifted here: 0 = up to 1 MiB.
        "--limit-request-line", "0", "--limit-request-field_size", "32768", "--limit-request-fields", "32768",
        # Idle connections from nginx stay open longer than nginx keeps them (20 s).
        "--keep-alive", "30",
        "app:create_app()",
    ]


class Launcher:
    def __init__(self, config: Config):
        self.config = config
        self.data_dir = os.path.abspath(config.DATA_DIR)
        self.nginx_binary = find_nginx(config)
        self.runtime = ""
        self.bodies = os.path.join(self.data_dir, REQUEST_BODY_DIR)
        self.gunicorn: Optional[subprocess.Popen] = None
        self.nginx: Optional[subprocess.Popen] = None
        self.stopping = False

    def _on_signal(self, signum, frame) -> None:
        if not self.stopping:
            print(f"serve: {signal.Signals(signum).name}: stopping gunicorn (graceful) and nginx", file=sys.stderr,
                  flush=True)
        self.stop()

    def stop(self) -> None:
        self.stopping = True
        for process, sig in ((self.gunicorn, signal.SIGTERM), (self.nginx, signal.SIGQUIT)):
            if process is not None and process.poll() is None:
                try:
                    process.send_signal(sig)
                except ProcessLookupError:
                    pass

    def prepare(self) -> str:
        if not self.nginx_binary:
            raise SystemExit("serve: nginx is not installed; `make setup` installs it "
                             "(tools/install_system_packages.sh), or set NGINX to its path")
        self.runtime = tempfile.mkdtemp(prefix="video-service-")  # mode 0700
        for name in ("proxy", "fastcgi", "uwsgi", "scgi"):
            os.mkdir(os.path.join(self.runtime, name), 0o700)
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        shutil.rmtree(self.bodies, ignore_errors=True)  # what a killed nginx left
        os.mkdir(self.bodies, 0o700)
        socket_path = os.path.join(self.runtime, "gunicorn.sock")
        config = os.path.join(self.runtime, "nginx.conf")
        with open(os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(nginx_config(self.config, self.runtime, self.bodies, socket_path))
        return socket_path

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        try:
            socket_path = self.prepare()
            # BUFFERED_BY_PROXY: the app reads a refused request's body to its end (config.py says why). gunicorn's
            # own GUNICORN_CMD_ARGS passes through: it is gunicorn's to read, not ours.
            env = dict(os.environ, DATA_DIR=self.data_dir, BUFFERED_BY_PROXY="1",
                       GUNICORN_CMD_ARGS=f"{_ACCESS_LOG_FORMAT} {os.environ.get('GUNICORN_CMD_ARGS', '')}".strip())
            self.gunicorn = subprocess.Popen(_gunicorn_command(self.config, socket_path), cwd=ROOT, env=env,
                                             preexec_fn=_child_setup)
            # nginx opens the public port once gunicorn listens: no 502s while it starts.
            while not os.path.exists(socket_path):
                if self.stopping or self.gunicorn.poll() is not None:
                    return self._finish("gunicorn")
                time.sleep(0.05)
            # -e: nginx's log before it reads the configuration (a package may compile in a file under /var/log).
            self.nginx = subprocess.Popen([self.nginx_binary, "-e", "stderr", "-p", self.runtime, "-c",
                                           os.path.join(self.runtime, "nginx.conf")],
                                          cwd=self.runtime, preexec_fn=_child_setup)
            print(f"serve: nginx on http://{self.config.HOST}:{self.config.PORT} -> gunicorn on "
                  f"{socket_path} (header timeout {self.config.HEADER_TIMEOUT_SECONDS} s)", file=sys.stderr, flush=True)
            while True:
                for name, process in (("gunicorn", self.gunicorn), ("nginx", self.nginx)):
                    if process.poll() is not None:
                        return self._finish(name)
                time.sleep(0.1)
        finally:
            self._cleanup()

    def _finish(self, first: str) -> int:
        """One process has exited (or a signal came): stop the other, wait for both, pick the exit status."""
        expected = self.stopping
        if not expected:
            code = (self.gunicorn if first == "gunicorn" else self.nginx).returncode
            print(f"serve: {first} exited by itself (status {code}); stopping the rest", file=sys.stderr,
                  flush=True)
        self.stop()
        codes = {}
        deadline = time.monotonic() + STOP_SECONDS
        for name, process in (("gunicorn", self.gunicorn), ("nginx", self.nginx)):
            if process is None:
                continue
            try:
                codes[name] = process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                print(f"serve: {name} did not stop in {STOP_SECONDS:.0f} s; killing it", file=sys.stderr,
                      flush=True)
                os.killpg(process.pid, signal.SIGKILL)
                codes[name] = process.wait()
        for process in (self.gunicorn, self.nginx):
            if process is not None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)  # what its leader left behind (an nginx worker)
                except (ProcessLookupError, PermissionError):
                    pass
        if expected and all(code == 0 for code in codes.values()) and self.nginx is not None:
            return 0
        if expected and self.nginx is None and codes.get("gunicorn") == 0:
            return 0  # stopped while gunicorn was starting
        return next((code for code in codes.values() if code not in (0, None) and code > 0), 1)

    def _cleanup(self) -> None:
        if self.runtime:
            shutil.rmtree(self.runtime, ignore_errors=True)
        shutil.rmtree(self.bodies, ignore_errors=True)


def main() -> int:
    return Launcher(Config.from_env()).run()

