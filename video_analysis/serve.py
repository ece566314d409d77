"""`make run`: nginx in front of gunicorn, so slow or stalled clients never hold a request thread.

    HOST=127.0.0.1 PORT=5000 .venv/bin/python -m video_analysis.serve

gunicorn's threads (16) read each request themselves: 16 connections that
stop half-way through their headers froze the whole service for as long as
they stayed open, and a connection that sends nothing held a thread 5 s
(guides/operations.md, "Slow clients"; bench/experiment_slow_clients.py).
nginx reads every request, headers and body, in its event loop and hands
gunicorn only complete ones, over a unix socket in a private directory.

What this launcher does (standard library only):

- makes a private runtime directory (mode 0700, under $TMPDIR) for nginx's
  configuration, pid file, temporary files and gunicorn's socket, and
  `DATA_DIR/.request-bodies` (0700, on the disk uploads go to) for the
  bodies nginx buffers before passing them on;
- starts gunicorn (`gunicorn.conf.py`, bound to that socket), then nginx in
  the foreground on HOST:PORT once the socket is there;
- on SIGTERM or SIGINT sends gunicorn SIGTERM (its graceful shutdown:
  jobs cancelled, their files deleted) and nginx SIGQUIT (stop accepting,
  finish the answers in flight), waits for both, removes its directories
  and exits 0;
- if either dies by itself, stops the other and exits non-zero.

Settings, read from the environment like config.py:
HOST, PORT, DATA_DIR, MAX_UPLOAD_MB (nginx refuses larger bodies with 413),
HEADER_TIMEOUT_SECONDS (10: a client must send its whole request head
within this, else nginx closes the connection), BODY_TIMEOUT_SECONDS (60:
the longest pause between two pieces of a body), LEGACY_PROXY_TIMEOUT_SECONDS
(86400: how long nginx waits for the answer to a synchronous /analyze
request, which waits for its whole job), NGINX (the nginx binary),
GUNICORN_CONFIG (gunicorn.conf.py; the benchmarks' experiments name others).
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

from video_analysis.config import Config, env_int  # stdlib only, like this launcher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: gunicorn.conf.py, app.py
MIB = 1024 * 1024
# DATA_DIR's entry for the bodies nginx buffers (storage.py leaves it alone).
REQUEST_BODY_DIR = ".request-bodies"
# How long the two may take to stop after SIGTERM before they are killed.
STOP_SECONDS = 20.0
# The largest body nginx takes on routes other than the two upload routes (none of them reads one).
OTHER_BODY_KIB = 64
NGINX_SHUTDOWN_SECONDS = 5  # nginx's worker_shutdown_timeout: requests still open then are closed

# nginx's own refusals, as the app answers everything else: problem+json with a sentence.
_PROBLEMS = {
    400: ("Bad Request", "The request could not be understood; check the request line and headers and try again."),
    408: ("Request Timeout", "The request took too long to arrive; try again on a steadier connection."),
    413: ("Content Too Large", "The request is larger than this server accepts (uploads up to {max_mb} MB; "
                               "other requests take no body)."),
    414: ("URI Too Long", "The address is longer than this server accepts (16 KiB); check the URL."),
    431: ("Request Header Fields Too Large",
          "The request's headers are larger than this server accepts (16 KiB each); send fewer or shorter ones."),
    494: ("Request Header Fields Too Large",
          "The request's headers are larger than this server accepts (16 KiB each); send fewer or shorter ones."),
    503: ("Service Unavailable", "The server is already receiving {max_uploads} uploads, as many as it takes at "
                                 "once; send this one again in a minute."),
    404: ("Not Found", "There is nothing at this address; check the URL."),
    501: ("Not Implemented", "The request's transfer encoding is not supported; send the body with a "
                             "Content-Length or chunked."),
    500: ("Internal Server Error", "The server could not take this request (its disk may be full); "
                                   "try again later."),
    502: ("Bad Gateway", "The service behind this address is not answering (starting or restarting); "
                        "try again in a few seconds."),
    504: ("Gateway Timeout", "The service took too long to answer this request; try again later."),
}
# Statuses answered with another code: nginx's internal 494 is a 431 to the client.
_SENT_AS = {494: 431}


class Settings:
    def __init__(self, environ: Dict[str, str]):
        self.host = environ.get("HOST") or "127.0.0.1"
        self.port = env_int("PORT", Config.PORT, 1, environ)
        self.data_dir = os.path.abspath(environ.get("DATA_DIR") or "data")
        self.max_upload_mb = env_int("MAX_UPLOAD_MB", Config.MAX_UPLOAD_MB, 1, environ)
        # Uploads nginx receives at once, per route (async, legacy): the app's queue cap.
        self.max_uploads = env_int("MAX_QUEUED_JOBS", Config.MAX_QUEUED_JOBS, 1, environ)
        self.header_timeout = env_int("HEADER_TIMEOUT_SECONDS", 10, 1, environ)
        self.body_timeout = env_int("BODY_TIMEOUT_SECONDS", 60, 1, environ)
        self.legacy_timeout = env_int("LEGACY_PROXY_TIMEOUT_SECONDS", 86400, 1, environ)
        self.gunicorn_config = os.path.join(ROOT, environ.get("GUNICORN_CONFIG") or "gunicorn.conf.py")
        self.nginx = environ.get("NGINX") or shutil.which("nginx") or (
            "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


# -- nginx's configuration -----------------------------------------------------------------
# nginx answers its own errors from these internal addresses (a named location cannot serve errors met
# while reading the request line: nginx then has no URI to redirect from).
_PROBLEM_PATH = "/.nginx-problem"


def _problem_locations(settings: Settings, legacy: bool) -> str:
    prefix = f"{_PROBLEM_PATH}/legacy/" if legacy else f"{_PROBLEM_PATH}/"
    blocks = []
    for status, (title, detail) in _PROBLEMS.items():
        sent = _SENT_AS.get(status, status)
        detail = detail.format(max_mb=settings.max_upload_mb, max_uploads=settings.max_uploads)
        body = {"type": "about:blank", "title": title, "status": sent, "detail": detail, "error": detail}
        if legacy:
            body["success"] = False  # as the app answers /analyze/ (errors.py)
        text = json.dumps(body).replace("\\", "\\\\").replace("'", "\\'")
        retry = "            add_header Retry-After 60 always;\n" if status == 503 else ""
        blocks.append(f"        location = {prefix}{status} {{\n"
                      f"            internal;\n"
                      f"            default_type application/problem+json;\n"
                      f"{retry}"
                      f"            return {sent} '{text}';\n"
                      f"        }}")
    return "\n".join(blocks)


def _error_pages(legacy: bool) -> str:
    prefix = f"{_PROBLEM_PATH}/legacy/" if legacy else f"{_PROBLEM_PATH}/"
    return "\n".join(f"        error_page {status} ={_SENT_AS.get(status, status)} {prefix}{status};"
                     for status in _PROBLEMS)


def nginx_config(settings: Settings, runtime: str, bodies: str, socket_path: str) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    user = "user root;  # the master runs as root: its workers run as the same user as gunicorn\n" \
        if os.geteuid() == 0 else ""
    return f"""# Written by serve.py for one run; every path is in this private directory.
{user}worker_processes 1;
daemon off;
pid {runtime}/nginx.pid;
error_log stderr warn;
# SIGQUIT (graceful stop): connections still open after this are closed.
worker_shutdown_timeout {NGINX_SHUTDOWN_SECONDS}s;

# Room for the connections below whatever the shell's soft limit (ignored past the hard limit).
worker_rlimit_nofile 8192;

events {{
    # Each proxied request takes two (client and gunicorn). A connection waiting for its head costs nginx
    # ~10 KB (300 stalled ones: +4 MiB, bench/experiment_slow_clients.py); past this, new ones are refused.
    worker_connections 4096;
}}

http {{
    server_tokens off;
    default_type application/octet-stream;
    # Only what nginx answered itself (gunicorn logs the rest, with X-Real-IP).
    map $upstream_status $answered_by_nginx {{
        "" 1;
        default 0;
    }}
    log_format refused '$remote_addr - - [$time_local] "$request" $status $body_bytes_sent '
                       '"$http_referer" "$http_user_agent" (answered by nginx)';
    access_log /dev/stdout refused if=$answered_by_nginx;

    client_body_temp_path {bodies};
    proxy_temp_path {runtime}/proxy;
    fastcgi_temp_path {runtime}/fastcgi;
    uwsgi_temp_path {runtime}/uwsgi;
    scgi_temp_path {runtime}/scgi;

    # Slow clients: the whole request head within this, or the connection is closed.
    client_header_timeout {settings.header_timeout}s;
    # The longest pause between two pieces of a body (a slow upload may take as long as it needs).
    client_body_timeout {settings.body_timeout}s;
    send_timeout 60s;
    keepalive_timeout 15s;
    reset_timedout_connection on;
    # gunicorn.conf.py allows request lines up to 16 KiB (a malformed long id gets the app's 404).
    client_header_buffer_size 1k;
    large_client_header_buffers 4 16k;
    # MAX_UPLOAD_MB + 1 MB, as the app's MAX_CONTENT_LENGTH: the app checks the file exactly. Only the two
    # upload routes take such bodies (`location /` below takes none to speak of).
    client_max_body_size {settings.max_upload_mb + 1}m;
    client_body_buffer_size 16k;

    # Bodies being buffered (and legacy requests waiting) at once, per route: nginx's buffers in DATA_DIR
    # stay within 2 x MAX_QUEUED_JOBS x (MAX_UPLOAD_MB + 1) MB, as the queue cap bounded gunicorn's before.
    # More are a 503 before their body is read. The app's own 503s pass through untouched.
    limit_conn_zone $server_name zone=uploads:1m;
    limit_conn_zone $server_name zone=legacy:1m;
    limit_conn_status 503;
    limit_conn_log_level warn;

    upstream service {{
        server unix:{socket_path} max_fails=0;
        keepalive 16;
        # Shorter than gunicorn's keep-alive (serve.py passes 30 s), so nginx never reuses a closing connection.
        keepalive_timeout 20s;
    }}

    server {{
        listen {host}:{settings.port} backlog=1024;
        server_name _;

        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Real-IP $remote_addr;
        # Whole bodies first: a trickling upload never holds a gunicorn thread.
        proxy_request_buffering on;
        proxy_buffering on;
        proxy_connect_timeout 5s;
        proxy_send_timeout 600s;
        # Uploads are probed before they are answered (a WebM is counted frame by frame).
        proxy_read_timeout 600s;
        proxy_next_upstream off;

{_error_pages(legacy=False)}

        location / {{
            proxy_pass http://service;
            # No route here reads a body: nginx buffers at most this much for any of them (4096 connections x
            # 64 KiB = 256 MiB at worst), where MAX_UPLOAD_MB each would let them fill the disk.
            client_max_body_size {OTHER_BODY_KIB}k;
        }}

        location = /api/v1/video/upload {{
            proxy_pass http://service;
            limit_conn uploads {settings.max_uploads};
        }}

        # Legacy synchronous routes wait for their whole job: hours for a long video on a full-size model.
        location /analyze/ {{
            proxy_pass http://service;
            proxy_read_timeout {settings.legacy_timeout}s;
            limit_conn legacy {settings.max_uploads};
{_error_pages(legacy=True)}
        }}

{_problem_locations(settings, legacy=False)}
{_problem_locations(settings, legacy=True)}
    }}
}}
"""


# -- the two processes -----------------------------------------------------------------------
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


def _gunicorn_command(settings: Settings, socket_path: str) -> List[str]:
    return [
        sys.executable, "-m", "gunicorn", "--config", settings.gunicorn_config,
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
    def __init__(self, settings: Settings):
        self.settings = settings
        self.runtime = ""
        self.bodies = os.path.join(settings.data_dir, REQUEST_BODY_DIR)
        self.gunicorn: Optional[subprocess.Popen] = None
        self.nginx: Optional[subprocess.Popen] = None
        self.stopping = False

    def _on_signal(self, signum, frame) -> None:
        if not self.stopping:
            print(f"serve.py: {signal.Signals(signum).name}: stopping gunicorn (graceful) and nginx", file=sys.stderr,
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
        if not self.settings.nginx:
            raise SystemExit("serve.py: nginx is not installed; `make setup` installs it "
                             "(tools/install_system_packages.sh), or set NGINX to its path")
        self.runtime = tempfile.mkdtemp(prefix="video-service-")  # mode 0700
        for name in ("proxy", "fastcgi", "uwsgi", "scgi"):
            os.mkdir(os.path.join(self.runtime, name), 0o700)
        os.makedirs(self.settings.data_dir, mode=0o700, exist_ok=True)
        os.chmod(self.settings.data_dir, 0o700)
        shutil.rmtree(self.bodies, ignore_errors=True)  # what a killed nginx left
        os.mkdir(self.bodies, 0o700)
        socket_path = os.path.join(self.runtime, "gunicorn.sock")
        config = os.path.join(self.runtime, "nginx.conf")
        with open(os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(nginx_config(self.settings, self.runtime, self.bodies, socket_path))
        return socket_path

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        try:
            socket_path = self.prepare()
            # BUFFERED_BY_PROXY: the app reads a refused request's body to its end (config.py says why).
            env = dict(os.environ, DATA_DIR=self.settings.data_dir, BUFFERED_BY_PROXY="1",
                       GUNICORN_CMD_ARGS=f"{_ACCESS_LOG_FORMAT} {os.environ.get('GUNICORN_CMD_ARGS', '')}".strip())
            self.gunicorn = subprocess.Popen(_gunicorn_command(self.settings, socket_path), cwd=ROOT, env=env,
                                             preexec_fn=_child_setup)
            # nginx opens the public port once gunicorn listens: no 502s while it starts.
            while not os.path.exists(socket_path):
                if self.stopping or self.gunicorn.poll() is not None:
                    return self._finish("gunicorn")
                time.sleep(0.05)
            # -e: nginx's log before it reads the configuration (a package may compile in a file under /var/log).
            self.nginx = subprocess.Popen([self.settings.nginx, "-e", "stderr", "-p", self.runtime, "-c",
                                           os.path.join(self.runtime, "nginx.conf")],
                                          cwd=self.runtime, preexec_fn=_child_setup)
            print(f"serve.py: nginx on http://{self.settings.host}:{self.settings.port} -> gunicorn on "
                  f"{socket_path} (header timeout {self.settings.header_timeout} s)", file=sys.stderr, flush=True)
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
            print(f"serve.py: {first} exited by itself (status {code}); stopping the rest", file=sys.stderr,
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
                print(f"serve.py: {name} did not stop in {STOP_SECONDS:.0f} s; killing it", file=sys.stderr,
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
    return Launcher(Settings(dict(os.environ))).run()


if __name__ == "__main__":
    sys.exit(main())
