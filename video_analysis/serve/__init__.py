"""`make run`: nginx in front of gunicorn, so slow or stalled clients never hold a request thread.

    HOST=127.0.0.1 PORT=5000 .venv/bin/python -m video_analysis.serve

gunicorn's threads (16) read each request themselves: 16 connections that
stop half-way through their headers froze the whole service for as long as
they stayed open, and a connection that sends nothing held a thread 5 s
(guides/operations.md, "Slow clients"; bench/experiment_slow_clients.py).
nginx reads every request, headers and body, in its event loop and hands
gunicorn only complete ones, over a unix socket in a private directory.

`nginx_config` writes nginx's configuration; `launcher` starts and stops the
two processes. Settings come from `Config` (HOST, PORT, DATA_DIR,
MAX_UPLOAD_MB, MAX_QUEUED_JOBS, HEADER_TIMEOUT_SECONDS, BODY_TIMEOUT_SECONDS,
LEGACY_PROXY_TIMEOUT_SECONDS, NGINX). The launcher imports
the configuration and nothing of the service itself (no flask, no mlx).
"""
