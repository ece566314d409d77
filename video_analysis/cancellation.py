"""Cancellation shared by the engine's layers: a `threading.Event` checked in hot loops."""
from __future__ import annotations

import threading
from typing import Optional


class Cancelled(Exception):
    """The work was cancelled by its caller before it finished."""


def raise_if_cancelled(cancel: Optional[threading.Event], what: str = "The analysis") -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} was cancelled.")
