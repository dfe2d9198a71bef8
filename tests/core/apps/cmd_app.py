"""Handlers for the worker-command tests, imported by ``asyncjobs worker cmd_app:router`` in a subprocess."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncjobs

router = asyncjobs.Router()


@router.handler("cmd:echo")
async def echo(task: asyncjobs.Task) -> object:
    return task.payload_json()


@router.handler("cmd:slow")
async def slow(task: asyncjobs.Task) -> str:
    """Sleeps ``first`` seconds on its first run and ``later`` seconds on the others.

    A run handed back at a shutdown does not count as a try, so with a ``marker`` file in the payload the runs are
    counted there; without one, ``task.tries`` counts them.
    """
    payload = task.payload_json()
    runs = _count_run(Path(payload["marker"])) if "marker" in payload else task.tries
    await asyncio.sleep(float(payload["first"] if runs == 1 else payload.get("later", 0)))
    return f"done on run {runs}"


def _count_run(marker: Path) -> int:
    runs = (int(marker.read_text()) if marker.exists() else 0) + 1
    marker.write_text(str(runs))
    return runs


def make_router() -> asyncjobs.Router:
    return router


async def make_router_async() -> asyncjobs.Router:
    return router


empty = asyncjobs.Router()
not_a_router = 42


@router.handler("cmd:stubborn")
async def stubborn(task: asyncjobs.Task) -> str:
    """Ignores every cancellation: the worker must still end (the task is left to the reconciler)."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue
