"""Helpers shared by the core suite: clients bound to the per-test server, and background workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio

import asyncjobs

ROOT = Path(__file__).parents[2]
"""The repository's root."""
COMMAND_TIMEOUT_S = 30.0
"""Seconds a command-line test waits for a line or an exit."""

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


class Command:
    """``python -m asyncjobs ARGS`` in a subprocess, with its stderr lines collected as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = ["-m", "asyncjobs", *args]
        self.env = env or {}
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> Command:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        env.pop("NATS_URL", None)  # a developer's own setting must not leak in
        env.update(self.env)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *self.args, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())
            self._changed.set()
        self._changed.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_line(self, pattern: str, *, after: int = 0, timeout: float = COMMAND_TIMEOUT_S) -> re.Match[str]:
        """Wait for a stderr line (from line ``after`` on) matching ``pattern``."""
        regex = re.compile(pattern)
        async with asyncio.timeout(timeout):
            while True:
                for line in self.lines[after:]:
                    found = regex.search(line)
                    if found is not None:
                        return found
                if self._reader is not None and self._reader.done():
                    raise AssertionError(f"no line matching {pattern!r}; the command ended:\n{self.output}")
                self._changed.clear()
                await self._changed.wait()

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = COMMAND_TIMEOUT_S) -> int:
        assert self.proc is not None
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
                if self._reader is not None:
                    await self._reader
        except TimeoutError:
            raise AssertionError(f"the command did not exit within {timeout}s:\n{self.output}") from None
        return code

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()


@pytest_asyncio.fixture
async def commands() -> AsyncIterator[list[Command]]:
    started: list[Command] = []
    yield started
    for command in started:
        await command.kill()


async def queued_items(client: asyncjobs.Client) -> int:
    """The items waiting or in flight in the client's queue."""
    return (await client.admin.queue_info(client.queue.name)).items


def recording_router(runs: list[str]) -> asyncjobs.Router:
    """A router whose catch-all handler records each task id it runs and returns ``"done"``."""
    router = asyncjobs.Router()

    @router.handler("")
    async def handle(task: asyncjobs.Task) -> str:
        runs.append(task.id)
        return "done"

    return router
