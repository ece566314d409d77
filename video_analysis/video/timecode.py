"""Times in a video as people read them: `MM:SS`, or `H:MM:SS` from an hour on.

The one place the service formats a time; the web page shows the
`timestamp_formatted` the API sends rather than formatting again.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timecode:
    """A moment in a video, `seconds` from its start."""

    seconds: float

    def clock(self, with_hours: bool = False) -> str:
        """`MM:SS`, or `H:MM:SS` from one hour on (or when asked); fractions of a second are dropped."""
        hours, rest = divmod(int(self.seconds), 3600)
        minutes, secs = divmod(rest, 60)
        return f"{hours}:{minutes:02d}:{secs:02d}" if hours or with_hours else f"{minutes:02d}:{secs:02d}"

    def __str__(self) -> str:
        return self.clock()


def format_range(start: float, end: float) -> str:
    """`MM:SS-MM:SS`; both ends `H:MM:SS` once the range reaches an hour, so they line up."""
    with_hours = end >= 3600
    return f"{Timecode(start).clock(with_hours)}-{Timecode(end).clock(with_hours)}"
