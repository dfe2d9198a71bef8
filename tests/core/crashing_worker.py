"""A worker process for the crash test: it writes a marker when its handler starts, then hangs until killed.

Usage: python crashing_worker.py NATS_URL QUEUE MARKER_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncjobs


async def main(url: str, queue: str, marker: Path) -> None:
    client = await asyncjobs.connect(url, queue=queue)
    router = asyncjobs.Router()

    @router.handler("")
    async def hang(task: asyncjobs.Task) -> None:
        marker.write_text(task.id)  # noqa: ASYNC240 - one tiny write, the test reads it
        await asyncio.sleep(3600)

    await client.run(router)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
