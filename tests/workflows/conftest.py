"""Shared by the workflows suite: clients on the per-test server, a worker and a releaser in the background."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest_asyncio

import asyncjobs
from asyncjobs_workflows import Workflows
from tests.core.conftest import ClientFactory, make_client, running
from tests.scheduler.conftest import go_peer

__all__ = ["ClientFactory", "go_peer", "make_client", "releasing", "running"]


@contextlib.asynccontextmanager
async def releasing(flows: Workflows) -> AsyncIterator[asyncio.Task[None]]:
    """Runs ``flows.run()`` in the background for the body of a ``with`` block."""
    task = asyncio.create_task(flows.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest_asyncio.fixture
async def client(make_client: ClientFactory) -> asyncjobs.Client:
    """A client on the test server's DEFAULT queue."""
    return await make_client()


@pytest_asyncio.fixture
async def flows(client: asyncjobs.Client) -> Workflows:
    """Workflows on :func:`client`."""
    return Workflows(client)
