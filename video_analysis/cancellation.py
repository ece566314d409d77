"""Cancellation: one token per piece of work, handed down to every layer that does a part of it.

Whoever ends the work early (a person's cancel, a shutdown, a failed read
that leaves the model working for nobody) calls `cancel()` on its token; the
engine, the frame reader and the model runner all check that same object in
their loops. A token never resets: it belongs to one piece of work.
"""
from __future__ import annotations

import threading
from typing import Callable, List, Optional


class Cancelled(Exception):
    """The work was cancelled by its caller before it finished."""


class CancelToken:
    """A one-way switch from "running" to "cancelled", safe to use from any thread."""

    def __init__(self, event: Optional[threading.Event] = None) -> None:
        """`event`: one the caller sets to cancel (how the engine's Python callers cancelled before tokens)."""
        self._event = event if event is not None else threading.Event()
        self._lock = threading.Lock()
        self._callbacks: List[Callable[[], None]] = []

    def cancel(self) -> None:
        """Cancel the work; idempotent. Callbacks registered with `when_cancelled` run here, once."""
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self, what: str = "The analysis") -> None:
        if self._event.is_set():
            raise Cancelled(f"{what} was cancelled.")

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until cancelled or `timeout` seconds have passed; True when cancelled."""
        return self._event.wait(timeout)

    def when_cancelled(self, callback: Callable[[], None]) -> None:
        """Run `callback` when the token is cancelled: at once if it already is.

        For work that continues elsewhere (another process) and must hear of the cancel
        as soon as it happens, not when someone next looks.
        """
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()
