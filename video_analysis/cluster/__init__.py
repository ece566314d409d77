"""Cluster mode (REDIS_URL set): sessions in Redis, jobs on an RQ queue, the model on worker processes elsewhere.

`sessions` and `queue` stand in for the embedded `jobs.sessions` and
`jobs.queue` behind the same methods, so the web layer serves both modes
with one set of routes; `worker` and `task` are the model worker
(`python worker.py`), which runs each job through `jobs.job_runner` like
the embedded mode does.
"""
