"""The worker's event loop: uvloop when installed, asyncio's own on request, and a clear error without uvloop."""

from __future__ import annotations

import asyncio
import sys

import pytest

import asyncjobs
from asyncjobs.loops import loop_factory, loop_name

from .conftest import ClientFactory, Command
from .test_worker_command import start, worker_args


@pytest.mark.parametrize(("choice", "expected"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_loop_choices(choice: str, expected: str) -> None:
    loop = loop_factory(choice)()
    try:
        assert loop_name(loop) == expected
        assert loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
    finally:
        loop.close()


def test_unknown_loop_is_refused() -> None:
    with pytest.raises(asyncjobs.ConfigurationError, match="event loop 'trio' is not known: use one of auto, uvloop"):
        loop_factory("trio")


def test_without_uvloop_auto_falls_back_and_uvloop_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what an environment without the package gives
    assert loop_factory("auto") is asyncio.new_event_loop
    with pytest.raises(asyncjobs.ConfigurationError, match=r"pip install 'asyncjobs\[uvloop\]'"):
        loop_factory("uvloop")


@pytest.mark.parametrize(("flags", "expected"), [((), "uvloop"), (("--loop", "asyncio"), "asyncio")])
async def test_the_worker_command_runs_on_the_chosen_loop(
    flags: tuple[str, ...], expected: str, nats_url: str, make_client: ClientFactory, commands: list[Command]
) -> None:
    client = await make_client(queue="CMDLOOP")
    tasks = await client.enqueue_many(asyncjobs.Task("cmd:echo", {"n": n}) for n in range(20))
    command = await start(commands, *worker_args(nats_url, "CMDLOOP", "--until-idle", *flags))
    assert await command.wait() == 0, command.output
    assert f"event loop: {expected}" in command.output
    for task in tasks:
        assert (await client.get_task(task.id)).state == asyncjobs.TaskState.COMPLETED


async def test_the_worker_command_refuses_an_unknown_loop(nats_url: str, commands: list[Command]) -> None:
    command = await start(commands, *worker_args(nats_url, "CMDLOOP", "--loop", "trio"))
    assert await command.wait() == 2
    assert "invalid choice: 'trio'" in command.output
