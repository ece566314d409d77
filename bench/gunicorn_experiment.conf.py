"""The project's gunicorn.conf.py plus candidate fixes, switched on by environment variables.

Used only by bench/experiment_p3.py to measure proposed changes before they
are made in the product; `make bench` always runs the product's own config.

  EXP_SHM=1        worker_tmp_dir = "/dev/shm": gunicorn's heartbeat (an
                   os.utime on a temporary file, once per event-loop turn of
                   the worker's main thread) goes to tmpfs instead of /tmp on
                   disk (gunicorn's own advice for containers).
  EXP_NICE=N       the job threads, the model thread and the native threads
                   that exist once the app is loaded (OpenBLAS's pool, mlx's)
                   get a lower priority by N (Linux per-thread nice); request
                   threads then win the CPU when a job keeps both cores busy.
  EXP_NICE_JOB=N   only the job threads (which decode frames) get a lower
                   priority by N; the model's threads keep theirs, so a
                   decoding job thread yields the CPU to the model it feeds.
  EXP_MALLOPT=N    the worker calls glibc's mallopt(M_ARENA_MAX, N) right after
                   fork, before any request thread allocates: the in-process
                   equivalent of starting the server with MALLOC_ARENA_MAX=N.
  EXP_IDLE=1       the model thread (and every thread it starts: mlx's), the
                   native threads that exist once the app is loaded (OpenBLAS's
                   pool) and the job threads run under SCHED_IDLE: any other
                   thread that wakes takes the CPU from them at once, where the
                   kernel's EEVDF scheduler otherwise lets the running thread
                   finish its slice (~3 ms) first, whatever its nice value.
  EXP_SLICE_US=N   the worker's main thread and request threads ask the kernel
                   for an N µs time slice (sched_setattr's sched_runtime, Linux
                   6.12+): a waking thread with a shorter slice than the running
                   one may preempt it.
  EXP_SWITCH=S     sys.setswitchinterval(S) in the worker: how long a thread
                   that wants the GIL waits before the holder is asked to give
                   it up (Python's default 0.005 s).
"""
import ctypes
import os
import threading

_PRODUCT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gunicorn.conf.py")
exec(compile(open(_PRODUCT).read(), _PRODUCT, "exec"))  # noqa: S102  (the product's settings, unchanged)

if os.environ.get("EXP_SHM") == "1" and os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"


def _lower_priority(function, amount):
    def wrapper(*args, **kwargs):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), amount)
        except OSError:
            pass
        return function(*args, **kwargs)
    return wrapper


_product_post_fork = post_fork  # noqa: F821  (defined by the product config above)


def post_fork(server, worker):  # noqa: F811
    _product_post_fork(server, worker)
    arenas = int(os.environ.get("EXP_MALLOPT", "0") or 0)
    if arenas:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX


def post_worker_init(worker):  # noqa: F811  (the product config defines none)
    switch = float(os.environ.get("EXP_SWITCH", "0") or 0)
    if switch:
        import sys

        sys.setswitchinterval(switch)
    amount = int(os.environ.get("EXP_NICE", "0") or 0)
    job_amount = amount or int(os.environ.get("EXP_NICE_JOB", "0") or 0)
    if job_amount:
        from video_analysis.jobs import queue as jobs

        jobs.JobQueue._run = _lower_priority(jobs.JobQueue._run, job_amount)  # job threads start later
    if amount:
        python_threads = {t.native_id: t.name for t in threading.enumerate()}
        for tid in map(int, os.listdir("/proc/self/task")):
            name = python_threads.get(tid)
            if name is None or name == "model-runner":  # native threads (BLAS, mlx) and the model thread
                try:
                    os.setpriority(os.PRIO_PROCESS, tid, amount)
                except OSError:
                    pass


def _idle_policy(tid=0):
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        pass


def _ask_slice(microseconds):
    """sched_setattr(0, {SCHED_OTHER, sched_runtime}) on the calling thread: a custom EEVDF slice."""
    import struct

    attr = struct.pack("=IIQiIQQQII", 56, 0, 0, 0, 0, microseconds * 1000, 0, 0, 0, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(attr, 56)
    if libc.syscall(314, 0, buffer, 0) != 0:  # SYS_sched_setattr on x86_64
        print("sched_setattr failed", ctypes.get_errno(), flush=True)


_experiment_post_worker_init = post_worker_init


def post_worker_init(worker):  # noqa: F811
    _experiment_post_worker_init(worker)
    if os.environ.get("EXP_IDLE") == "1":
        from video_analysis.jobs import queue as jobs
        from video_analysis.model import runner as model_runner

        def idle_then(function):
            def wrapper(*args, **kwargs):
                _idle_policy()
                return function(*args, **kwargs)
            return wrapper

        jobs.JobQueue._run = idle_then(jobs.JobQueue._run)
        python_threads = {t.native_id: t.name for t in threading.enumerate()}
        for tid in map(int, os.listdir("/proc/self/task")):
            name = python_threads.get(tid)
            if name is None or name == "model-runner":
                _idle_policy(tid)
    slice_us = int(os.environ.get("EXP_SLICE_US", "0") or 0)
    if slice_us:
        from gunicorn.workers import gthread

        _ask_slice(slice_us)
        marked = threading.local()
        handle = gthread.ThreadWorker.handle

        def handle_with_slice(self, conn):
            if not getattr(marked, "done", False):
                _ask_slice(slice_us)
                marked.done = True
            return handle(self, conn)

        gthread.ThreadWorker.handle = handle_with_slice
