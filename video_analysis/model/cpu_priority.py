"""The model's work gives way to every other process on its machine (Linux's SCHED_IDLE class).

Why: a job keeps the model's threads on every core for minutes. Under Linux's
normal class a process woken meanwhile (nginx, gunicorn, Redis with a status
request) waits for a model thread's slice to run out, noticed at the next
timer tick (4 ms at HZ=250), and a status answer in cluster mode wakes five
of them in turn: p99 ~10 ms against ~3 in the embedded mode (bench/README.md,
"Findings (2026-11-29, scheduling)"). A SCHED_IDLE thread is preempted at
once by any other; when nothing else wants the CPU it runs as fast as before,
so the model loses nothing on a machine of its own. What it gives up is a
fair share against other CPU-bound work there.

Only the computing threads take the class: the model thread, the threads
that decode and render a job, and the pools mlx and OpenBLAS start (threads
inherit their creator's class). The model process's main thread and the
threads it starts later stay in the normal class: they answer the web process,
beat the worker's heartbeat, hear cancels and handle SIGTERM, and must not wait
behind other work on a busy machine. A thread cannot leave SCHED_IDLE without
privileges (RLIMIT_NICE), so a process opts in once, at its start
(`yield_cpu_to_other_work`): the embedded mode's analysis process and the
cluster's model worker do; the web processes, the command line and the tests'
own processes never do. `MODEL_YIELDS_CPU=0` keeps the normal class; other
systems (macOS) have no such class and keep theirs.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable, Optional

from video_analysis.config import Config

log = logging.getLogger(__name__)

_yielding = False  # this process opted in: its computing threads take the idle class


def _thread_ids() -> set:
    try:
        return {int(name) for name in os.listdir("/proc/self/task")}
    except OSError:
        return set()  # no /proc: only threads that call compute_thread themselves


def _to_idle(thread_id: int) -> bool:
    try:
        os.sched_setscheduler(thread_id, os.SCHED_IDLE, os.sched_param(0))
    except ProcessLookupError:
        pass  # that thread has ended
    except OSError as error:  # a sandbox that forbids it
        log.warning("A thread of the model's process keeps the normal CPU class: %s", error)
        return False
    return True


def yield_cpu_to_other_work() -> bool:
    """At the start of a model process: from now on its computing threads take SCHED_IDLE; True if so.

    Every thread running now but the caller is one a library started on
    import (OpenBLAS's and mlx's pools) and takes the class at once; a thread
    started meanwhile by one of them is found by going over them again until
    no new one appears. The caller stays in the normal class.
    """
    global _yielding
    if not hasattr(os, "SCHED_IDLE") or not Config.from_env().MODEL_YIELDS_CPU:
        return False
    caller = threading.get_native_id()
    done = {caller}
    for _ in range(10):
        todo = _thread_ids() - done
        if not todo:
            break
        if not all(_to_idle(thread_id) for thread_id in todo):
            return False
        done |= todo
    _yielding = True
    log.info("The model's computing threads yield the CPU to any other process on this machine (SCHED_IDLE)")
    return True


def compute_thread() -> None:
    """Called by a thread that computes (the model thread, a job's thread): it takes the idle class, and so do the
    threads it starts, if this process yields. Once taken, for good."""
    if _yielding:
        _to_idle(0)


def call_as_compute(function: Callable[..., Any], *args, on_interrupt: Optional[Callable[[], None]] = None,
                    grace_seconds: float = 5.0, **kwargs) -> Any:
    """`function(*args, **kwargs)` on a computing thread of its own, its result or its exception returned here;
    for a caller that must stay in the normal class (the model worker's main thread). Without yielding: here.

    If the caller is interrupted while it waits (a signal handler raising, as a second SIGTERM does in RQ),
    `on_interrupt` stops the work (the job's cancel) and the caller waits up to `grace_seconds` for it to end
    before the exception goes on: what the caller cleans up on the way out is no longer in use.
    """
    if not _yielding:
        return function(*args, **kwargs)
    outcome: dict = {}
    done = threading.Event()  # not join(): an interrupted join leaves the thread marked stopped (Python 3.11)

    def run() -> None:
        try:
            compute_thread()
            outcome["result"] = function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001  (raised again in the caller)
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=run, name="compute", daemon=True).start()
    try:
        done.wait()
    except BaseException:
        if on_interrupt is not None:
            on_interrupt()
        done.wait(grace_seconds)
        raise
    error: Optional[BaseException] = outcome.get("error")
    if error is not None:
        raise error
    return outcome["result"]
