"""Handlers for the worker-command tests, imported by ``asyncjobs worker cmd_app:router`` in a subprocess."""

from __future__ import annotations

import asyncio

import asyncjobs

router = asyncjobs.Router()


@router.handler("cmd:echo")
async def echo(task: asyncjobs.Task) -> object:
    return task.payload_json()


@router.handler("cmd:slow")
async def slow(task: asyncjobs.Task) -> str:
    """Sleeps ``first`` seconds on its first try and ``later`` seconds on the others."""
    payload = task.payload_json()
    await asyncio.sleep(float(payload["first"] if task.tries == 1 else payload.get("later", 0)))
    return f"done on try {task.tries}"


def make_router() -> asyncjobs.Router:
    return router


async def make_router_async() -> asyncjobs.Router:
    return router


empty = asyncjobs.Router()
not_a_router = 42
