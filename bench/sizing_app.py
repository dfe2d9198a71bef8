"""The handlers of the sizing benchmark (``bench/sizing.py``), run by the worker command::

    python -m asyncjobs worker bench.sizing_app:router --queue NAME --processes P --concurrency C

Two task types, both returning ``None``:

- :data:`IO_TASK` awaits ``asyncio.sleep``: a handler that waits on I/O (an HTTP call, a query) and uses no CPU.
- :data:`CPU_TASK` computes in pure Python, holding the GIL, until it has used the given CPU time of its thread.
  It counts CPU time, not wall time, so a process that waits for a core still does the whole work per task.

Their durations come from the environment (milliseconds), so the benchmark can set them for its worker processes.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Final

import asyncjobs

IO_TASK: Final = "sizing:io"
CPU_TASK: Final = "sizing:cpu"
IO_MS_ENV: Final = "ASYNCJOBS_SIZING_IO_MS"
"""Milliseconds the I/O-bound handler waits."""
CPU_MS_ENV: Final = "ASYNCJOBS_SIZING_CPU_MS"
"""Milliseconds of CPU time the CPU-bound handler uses."""
DEFAULT_IO_MS: Final = 20.0
DEFAULT_CPU_MS: Final = 2.0
NS_PER_MS: Final = 1_000_000
_SPIN_STEPS: Final = 200
"""Arithmetic steps between two reads of the thread's CPU clock (a few microseconds of work)."""


def _env_ms(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of milliseconds") from None
    if not value >= 0:
        raise ValueError(f"{name}={raw!r} must be 0 or more milliseconds")
    return value


IO_S: Final = _env_ms(IO_MS_ENV, DEFAULT_IO_MS) / 1000
CPU_NS: Final = round(_env_ms(CPU_MS_ENV, DEFAULT_CPU_MS) * NS_PER_MS)


def burn_cpu(cpu_ns: int) -> int:
    """Compute until this thread has used ``cpu_ns`` nanoseconds of CPU time; returns a value so it is not idle."""
    end = time.thread_time_ns() + cpu_ns
    x = 1
    while time.thread_time_ns() < end:
        for _ in range(_SPIN_STEPS):
            x = (x * 31 + 7) % 1_000_003
    return x


async def io_bound(task: asyncjobs.Task) -> None:
    await asyncio.sleep(IO_S)


async def cpu_bound(task: asyncjobs.Task) -> None:
    burn_cpu(CPU_NS)


router = asyncjobs.Router()
router.add(IO_TASK, io_bound)
router.add(CPU_TASK, cpu_bound)
