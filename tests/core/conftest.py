"""Helpers shared by the core suite: clients bound to the per-test server, and background workers."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

import asyncjobs

FAST_RETRY = asyncjobs.LinearPolicy(steps=1, jitter=0.1, min_s=0.05, max_s=0.06)
"""Retries within ~60 ms, so failure paths run quickly."""

ClientFactory = Callable[..., Awaitable[asyncjobs.Client]]


@pytest_asyncio.fixture
async def make_client(nats_url: str) -> AsyncIterator[ClientFactory]:
    """Connects clients to the test server (fast retries by default) and closes them after the test."""
    clients: list[asyncjobs.Client] = []

    async def make(**options: Any) -> asyncjobs.Client:
        options.setdefault("retry_policy", FAST_RETRY)
        options.setdefault("shutdown_grace", 1.0)
        client = await asyncjobs.connect(nats_url, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@contextlib.asynccontextmanager
async def running(client: asyncjobs.Client, router: asyncjobs.Router) -> AsyncIterator[asyncio.Task[None]]:
    """Runs ``client.run(router)`` in the background for the body of a ``with`` block."""
    task = asyncio.create_task(client.run(router))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_state(
    client: asyncjobs.Client, task_id: str, *states: asyncjobs.TaskState, timeout: float = 10.0
) -> asyncjobs.Task:
    """Polls a task until it is in one of ``states``; returns it."""
    from asyncjobs.testing import eventually

    async def check() -> asyncjobs.Task | None:
        task = await client.get_task(task_id)
        return task if task.state in states else None

    return await eventually(check, timeout=timeout, message=f"task {task_id} to reach {[s.value for s in states]}")


async def fetch(url: str) -> tuple[int, str]:
    """GET a URL from a worker thread; returns the status and the body, for error statuses too."""

    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await asyncio.to_thread(get)
