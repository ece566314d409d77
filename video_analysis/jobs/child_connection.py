"""One analysis child process and the pipe to it: messages out without waiting, messages in on a thread.

Started with the `spawn` method (no fork of a process that has threads).
Writing is a writer thread's job: a child that stops reading (wedged,
stopped) fills the pipe, and a caller blocked there would hold a request
thread and its queue slot for good. Past OUTBOX_LIMIT unsent messages the
child is taken as not taking work (`send` says False).
"""
from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
from typing import Callable, Optional

log = logging.getLogger(__name__)

# Messages waiting for a child that does not read them before callers are told it is not taking work.
OUTBOX_LIMIT = 256
# How long a child whose pipe closed may take to exit before the reader stops waiting for it.
_EXIT_SECONDS = 3.0


class ChildConnection:
    def __init__(self, model_ref: str, on_message: Callable[[tuple], None],
                 on_exit: Callable[["ChildConnection"], None]):
        """Start the child; `on_message` gets each of its messages and `on_exit` is called once it has
        gone, both on this connection's reader thread."""
        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe(duplex=True)
        self.process = context.Process(target=_child_entry, args=(child_end, model_ref), name="analysis",
                                       daemon=True)
        self.process.start()
        child_end.close()
        self._outbox: "queue.Queue[Optional[tuple]]" = queue.Queue(maxsize=OUTBOX_LIMIT)
        threading.Thread(target=self._read, args=(parent_end, on_message, on_exit), name="analysis-reader",
                         daemon=True).start()
        threading.Thread(target=self._write, args=(parent_end,), name="analysis-writer", daemon=True).start()

    def send(self, message: tuple) -> bool:
        """Queue `message` for the child, never waiting; False when the child has not been reading."""
        try:
            self._outbox.put_nowait(message)
        except queue.Full:
            return False
        return True

    def _write(self, connection) -> None:
        while True:
            message = self._outbox.get()
            if message is None:
                return
            try:
                connection.send(message)
            except (OSError, ValueError):
                return  # the child is gone: the reader sees it

    def _read(self, connection, on_message, on_exit) -> None:
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                break
            try:
                on_message(message)
            except Exception:  # noqa: BLE001  (a bad progress callback must not stop the reader)
                log.exception("Handling %r from the analysis process failed", message[:2])
        connection.close()
        try:
            self._outbox.put_nowait(None)  # the writer stops (a full outbox: its send fails instead)
        except queue.Full:
            pass
        self.process.join(_EXIT_SECONDS)
        on_exit(self)


def _child_entry(connection, model_ref: str) -> None:
    """The child's target; importing the child (the engine, mlx) here keeps it out of the web process."""
    from video_analysis.jobs.analysis_child import child_main

    child_main(connection, model_ref)
