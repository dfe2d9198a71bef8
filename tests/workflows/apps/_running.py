"""What the apps share: run a coroutine until SIGTERM or SIGINT, after printing a readiness line on stderr."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from typing import Any


async def serve(name: str, body: Coroutine[Any, Any, None]) -> None:
    """Run ``body`` until it ends or a stop signal cancels it; ``<name> ready`` goes to stderr once it runs."""
    main = asyncio.ensure_future(body)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main.cancel)
    await asyncio.sleep(0)  # let the body start before the test is told to go on
    sys.stderr.write(f"{name} ready\n")
    sys.stderr.flush()
    try:
        await main
    except asyncio.CancelledError:
        sys.stderr.write(f"{name} stopped\n")
