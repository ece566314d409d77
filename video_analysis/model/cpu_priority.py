"""The model's process gives way to every other process on its machine (Linux's SCHED_IDLE class).

Why: a job keeps the model's threads on every core for minutes. Under Linux's
normal class a process woken meanwhile (nginx, gunicorn, Redis with a status
request) waits for a model thread's slice to run out, noticed at the next
timer tick (4 ms at HZ=250), and a status answer in cluster mode wakes five
of them in turn: p99 9-14 ms against 3-4 in the embedded mode (bench/README.md,
"P3 in cluster mode"). A SCHED_IDLE thread is preempted at once by any other;
when nothing else wants the CPU it runs as fast as before, so the model loses
nothing on a machine of its own. What it gives up is a fair share against
other CPU-bound work there: a compile or a second service comes first.

Threads inherit their creator's class, so applied once to every thread of the
process it holds for those mlx, OpenBLAS and FFmpeg start later. There is no
way back without privileges (RLIMIT_NICE), so only the model's processes call
it: the embedded mode's analysis process and the cluster's model worker, never
the web processes they serve. `MODEL_YIELDS_CPU=0` keeps the normal class;
other systems (macOS) have no such class and keep theirs.
"""
from __future__ import annotations

import logging
import os

from video_analysis.config import Config

log = logging.getLogger(__name__)


def _thread_ids() -> set:
    try:
        return {int(name) for name in os.listdir("/proc/self/task")}
    except OSError:
        return {0}  # no /proc: the calling thread only


def yield_cpu_to_other_work() -> bool:
    """Put every thread of this process in the SCHED_IDLE class; True when it took effect.

    Threads started meanwhile by a thread not yet moved are caught by going
    over the process's threads again until no new one appears.
    """
    if not hasattr(os, "SCHED_IDLE") or not Config.from_env().MODEL_YIELDS_CPU:
        return False
    done: set = set()
    for _ in range(5):
        todo = _thread_ids() - done
        if not todo:
            break
        for thread_id in todo:
            try:
                os.sched_setscheduler(thread_id, os.SCHED_IDLE, os.sched_param(0))
            except ProcessLookupError:
                pass  # that thread has ended
            except OSError as error:  # a sandbox that forbids it: the normal class stays
                log.warning("The model's process keeps the normal CPU priority: %s", error)
                return False
        done |= todo
    log.info("The model's process yields the CPU to any other process on this machine (SCHED_IDLE)")
    return True
