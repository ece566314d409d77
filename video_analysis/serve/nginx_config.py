"""nginx's configuration for one run of the launcher: limits, timeouts, and its own refusals as problem+json.

Every value comes from `Config` (HOST, PORT, MAX_UPLOAD_MB, MAX_QUEUED_JOBS,
HEADER_TIMEOUT_SECONDS, BODY_TIMEOUT_SECONDS, LEGACY_PROXY_TIMEOUT_SECONDS);
every path is in the launcher's private directories.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Optional

from video_analysis.config import Config

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


def find_nginx(config: Config) -> Optional[str]:
    """The nginx binary: NGINX, else `nginx` on PATH, else Debian's /usr/sbin/nginx; None when there is none."""
    return config.NGINX or shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


# nginx answers its own errors from these internal addresses (a named location cannot serve errors met
# while reading the request line: nginx then has no URI to redirect from).
_PROBLEM_PATH = "/.nginx-problem"


def _problem_locations(config: Config, legacy: bool) -> str:
    prefix = f"{_PROBLEM_PATH}/legacy/" if legacy else f"{_PROBLEM_PATH}/"
    blocks = []
    for status, (title, detail) in _PROBLEMS.items():
        sent = _SENT_AS.get(status, status)
        detail = detail.format(max_mb=config.MAX_UPLOAD_MB, max_uploads=config.MAX_QUEUED_JOBS)
        body = {"type": "about:blank", "title": title, "status": sent, "detail": detail, "error": detail}
        if legacy:
            body["success"] = False  # as the app answers /analyze/ (web/legacy.py)
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


def nginx_config(config: Config, runtime: str, bodies: str, socket_path: str) -> str:
    host = f"[{config.HOST}]" if ":" in config.HOST else config.HOST
    user = "user root;  # the master runs as root: its workers run as the same user as gunicorn\n" \
        if os.geteuid() == 0 else ""
    return f"""# Written by video_analysis.serve for one run; every path is in this private directory.
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
    client_header_timeout {config.HEADER_TIMEOUT_SECONDS}s;
    # The longest pause between two pieces of a body (a slow upload may take as long as it needs).
    client_body_timeout {config.BODY_TIMEOUT_SECONDS}s;
    send_timeout 60s;
    keepalive_timeout 15s;
    reset_timedout_connection on;
    # gunicorn.conf.py allows request lines up to 16 KiB (a malformed long id gets the app's 404).
    client_header_buffer_size 1k;
    large_client_header_buffers 4 16k;
    # MAX_UPLOAD_MB + 1 MB, as the app's MAX_CONTENT_LENGTH: the app checks the file exactly. Only the two
    # upload routes take such bodies (`location /` below takes none to speak of).
    client_max_body_size {config.MAX_UPLOAD_MB + 1}m;
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
        # Shorter than gunicorn's keep-alive (the launcher passes 30 s), so nginx never reuses a closing connection.
        keepalive_timeout 20s;
    }}

    server {{
        listen {host}:{config.PORT} backlog=1024;
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
            limit_conn uploads {config.MAX_QUEUED_JOBS};
        }}

        # Legacy synchronous routes wait for their whole job: hours for a long video on a full-size model.
        location /analyze/ {{
            proxy_pass http://service;
            proxy_read_timeout {config.LEGACY_PROXY_TIMEOUT_SECONDS}s;
            limit_conn legacy {config.MAX_QUEUED_JOBS};
{_error_pages(legacy=True)}
        }}

{_problem_locations(config, legacy=False)}
{_problem_locations(config, legacy=True)}
    }}
}}
"""
