"""A releaser process: ``Workflows(client).run()`` until SIGTERM (or SIGKILL).

Usage: python -m tests.workflows.apps.releaser NATS_URL QUEUE [SWEEP_INTERVAL_S]
"""

from __future__ import annotations

import asyncio
import logging
import sys

import asyncjobs
from asyncjobs_workflows import Workflows
from tests.workflows.apps._running import serve


async def main(url: str, queue: str, sweep_interval: float) -> None:
    async with await asyncjobs.connect(url, queue=queue) as client:
        flows = Workflows(client, sweep_interval=sweep_interval)
        await serve("releaser", flows.run())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 30.0))
