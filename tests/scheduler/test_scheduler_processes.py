"""Scheduler processes (python -m asyncjobs_scheduler) stopped and killed while an @every 1s schedule runs."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
import pytest_asyncio

import asyncjobs
from asyncjobs_scheduler import Schedule, Schedules
from tests.core.conftest import Command

QUEUE = "SCHEDPROC"
TIMEOUT_S = 40.0


@pytest_asyncio.fixture
async def processes() -> AsyncIterator[list[Command]]:
    started: list[Command] = []
    yield started
    for command in started:
        await command.kill()


async def start(processes: list[Command], url: str, name: str) -> Command:
    command = Command("--server", url, "--queue", QUEUE, "--name", name)
    command.args = ["-m", "asyncjobs_scheduler", *command.args[2:]]
    await command.start()
    processes.append(command)
    return command


async def current_leader(schedulers: dict[str, Command]) -> str:
    """The name of the scheduler that logged leading last, once it does."""

    async def find() -> str | None:
        best: tuple[str, str] | None = None
        for name, command in schedulers.items():
            for line in command.lines:
                if "leads: it fires" in line:
                    stamp = line[:23]
                    if best is None or stamp > best[0]:
                        best = (stamp, name)
                elif "no longer leads" in line and best is not None and best[1] == name and line[:23] >= best[0]:
                    best = None
        return None if best is None else best[1]

    from asyncjobs.testing import eventually

    return await eventually(find, timeout=TIMEOUT_S, message="a leading scheduler")


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_leaders_stopped_and_killed_miss_and_double_no_due_time(nats_url: str, processes: list[Command]) -> None:
    async with await asyncjobs.connect(nats_url, queue=QUEUE) as client:
        await Schedules(client).add(Schedule("beat", "@every 1s", "beat", misfire="run_all"))
        schedulers = {name: await start(processes, nats_url, name) for name in ("a", "b", "c")}
        for round_number, how in enumerate((signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL)):
            leader = await current_leader(schedulers)
            await asyncio.sleep(2)  # let it fire a few due times first
            victim = schedulers[leader]
            if how == signal.SIGKILL:
                await victim.kill()
            else:
                victim.signal(signal.SIGTERM)
                assert await victim.wait() == 0, victim.output
            del schedulers[leader]
            replacement = f"{leader}{round_number}"
            schedulers[replacement] = await start(processes, nats_url, replacement)
        await current_leader(schedulers)
        await asyncio.sleep(3)
        for command in schedulers.values():
            command.signal(signal.SIGTERM)
        for command in schedulers.values():
            assert await command.wait() == 0, command.output
        ids = sorted([t.id async for t in client.admin.tasks(queue=QUEUE) if t.id.startswith("beat:")])
    dues = [datetime.strptime(task_id.split(":", 1)[1], "%Y%m%dT%H%M%SZ") for task_id in ids]
    assert len(dues) == len(set(dues))
    gaps = [(a, b) for a, b in itertools.pairwise(dues) if b - a != timedelta(seconds=1)]
    assert not gaps, f"missed due times between {gaps}"
    assert len(dues) > 20
