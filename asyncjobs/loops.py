"""The event loop a worker runs on: uvloop when it is installed (the ``uvloop`` extra), else asyncio's own.

Measured on a 2-core machine (docs/performance.md): uvloop takes a worker at the default concurrency of 10 from
about 2,600 to 3,200 tasks/s and one-at-a-time enqueue up 18 %, by cutting the cost of the event loop's own
scheduling, a large share of the CPU a worker uses. At a concurrency of 100 the loop's share is small and the gain
vanishes. Nothing else changes: the wire protocol and every guarantee are the same on either loop.

The worker command (``--loop``) and :func:`asyncjobs.run_worker` (``event_loop=``) take ``"auto"`` (uvloop if
importable), ``"uvloop"`` (required) or ``"asyncio"``.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Final

from asyncjobs.errors import ConfigurationError

__all__ = ["LOOP_CHOICES", "loop_factory", "loop_name"]

LOOP_CHOICES: Final = ("auto", "uvloop", "asyncio")
UVLOOP_EXTRA: Final = "uvloop"


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """The factory of the event loop ``choice`` names.

    Raises:
        ConfigurationError: an unknown choice, or ``"uvloop"`` without uvloop installed.
    """
    if choice not in LOOP_CHOICES:
        raise ConfigurationError(f"event loop {choice!r} is not known: use one of {', '.join(LOOP_CHOICES)}")
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as exc:
        if choice == "uvloop":
            raise ConfigurationError(
                f"the uvloop event loop is not installed: pip install 'asyncjobs[{UVLOOP_EXTRA}]', or use the asyncio "
                "loop"
            ) from exc
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``"uvloop"`` or ``"asyncio"``, for the worker's start-up line."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
