"""A model worker of cluster mode: `python worker.py` (or `make worker`).

Reads REDIS_URL, WORKER_TOKEN, MODEL and DATA_DIR (its scratch directory),
loads the model once and runs analyses from the queue, one at a time, until
SIGTERM (it then hands its running job back and exits 0). See
guides/operations.md, "Deployment on several machines".
"""
import sys

from video_analysis.cluster.worker import main

if __name__ == "__main__":
    sys.exit(main())
