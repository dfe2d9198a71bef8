"""Go duration strings (``time.ParseDuration``): ``90s``, ``1h30m``, ``1.5h``, ``300ms``, exact in nanoseconds."""

from __future__ import annotations

from asyncjobs import durations
from asyncjobs.errors import ConfigurationError
from asyncjobs_scheduler.errors import InvalidSchedule

__all__ = ["parse_go_duration"]


def parse_go_duration(text: str) -> int:
    """Parse a Go ``time.ParseDuration`` string (``90s``, ``1h30m``, ``1.5h``, ``300ms``) into nanoseconds.

    Raises:
        InvalidSchedule: the text is not a Go duration.
    """
    try:
        return durations.parse_go_duration(text)
    except ConfigurationError as exc:
        raise InvalidSchedule(str(exc)) from None
