"""Remote handlers: NATS request-reply services (docs/protocol.md, Remote handlers) and external commands."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

import asyncjobs
from asyncjobs import TaskState, codec
from asyncjobs.remote import parse_deadline_header
from asyncjobs.testing import eventually
from tests.core.conftest import ClientFactory, running, wait_state

SLOW_RETRY = asyncjobs.LinearPolicy(steps=1, jitter=0, min_s=30, max_s=31)


async def test_request_reply_round_trip(make_client: ClientFactory, nc: NATS) -> None:
    client = await make_client(queue=asyncjobs.Queue("RR", max_run_time=20), retry_policy=SLOW_RETRY)
    requests: list[Msg] = []

    async def service(task: asyncjobs.Task) -> bytes:
        if task.payload_json() == "fail":
            raise RuntimeError("remote failure")
        if task.payload_json() == "stop":
            raise asyncjobs.TerminateTask("remote says no")
        return b"handled " + task.id.encode()

    async def spy(msg: Msg) -> None:
        requests.append(msg)

    await nc.subscribe("CHORIA_AJ.H.T.remote:job", cb=spy)
    sub = await asyncjobs.serve_remote_handler(nc, "remote:job", service)
    router = asyncjobs.Router()
    router.remote("remote:job")
    ok, fail, stop = (asyncjobs.Task("remote:job", p) for p in ("ok", "fail", "stop"))
    await client.enqueue_many([ok, fail, stop])
    started = time.time()
    async with running(client, router):
        done = await wait_state(client, ok.id, TaskState.COMPLETED)
        failed = await wait_state(client, fail.id, TaskState.RETRY)
        stopped = await wait_state(client, stop.id, TaskState.TERMINATED)
    await sub.unsubscribe()
    assert done.result is not None
    assert base64.b64decode(done.result.payload) == b"handled " + ok.id.encode()
    assert failed.last_err == "remote failure"
    assert stopped.last_err == "remote says no: terminate task"
    request = next(r for r in requests if ok.id.encode() in r.data)
    assert request.headers is not None
    assert request.headers["AJ-Content-Type"] == "application/x-asyncjobs-task+json"
    deadline = parse_deadline_header(request.headers["AJ-Handler-Deadline"])
    # The handler deadline is the queue's 20 s run time less upstream's 2 s margin, in whole seconds.
    assert started + 16 <= deadline <= time.time() + 19
    body = asyncjobs.codec.decode_task(request.data)
    assert body.state == TaskState.ACTIVE and body.tries == 1


async def test_request_reply_without_responder_retries(make_client: ClientFactory) -> None:
    client = await make_client(queue=asyncjobs.Queue("RRN", max_run_time=10), retry_policy=SLOW_RETRY)
    router = asyncjobs.Router()
    router.remote("")
    task = await client.enqueue(asyncjobs.Task("nobody:home"))
    async with running(client, router):
        failed = await wait_state(client, task.id, TaskState.RETRY)
    assert failed.last_err.startswith("request-reply callout failed")


async def test_request_reply_needs_time(make_client: ClientFactory) -> None:
    client = await make_client(queue=asyncjobs.Queue("RRS", max_run_time=2), retry_policy=SLOW_RETRY)
    router = asyncjobs.Router()
    router.remote("x")
    task = await client.enqueue(asyncjobs.Task("x"))
    async with running(client, router):
        failed = await wait_state(client, task.id, TaskState.RETRY)
    assert failed.last_err.startswith("deadline too short")


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "handler.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


async def test_external_command(make_client: ClientFactory, tmp_path: Path) -> None:
    client = await make_client(queue="EXT", retry_policy=SLOW_RETRY)
    ok = _script(tmp_path, 'grep -o \'"type":"[a-z:]*"\' "$CHORIA_AJ_TASK"; echo "env=$FOO"\n')
    router = asyncjobs.Router()
    router.external("ext:ok", ok, env={"FOO": "bar"})
    failing = tmp_path / "fail.sh"
    failing.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    failing.chmod(0o755)
    router.external("ext:fail", failing)
    good = await client.enqueue(asyncjobs.Task("ext:ok"))
    bad = await client.enqueue(asyncjobs.Task("ext:fail"))
    async with running(client, router):
        done = await wait_state(client, good.id, TaskState.COMPLETED)
        failed = await wait_state(client, bad.id, TaskState.RETRY)
    assert done.result is not None and done.result.payload == '"type":"ext:ok"\nenv=bar\n'
    assert failed.last_err == "execution failed: exit status 3"
    with pytest.raises(asyncjobs.RemoteHandlerError, match="exit status 3") as caught:
        await asyncjobs.ExternalCommand(failing)(asyncjobs.Task("ext:fail"))
    assert caught.value.output == "broken\n"


def test_external_command_must_exist(tmp_path: Path) -> None:
    router = asyncjobs.Router()
    with pytest.raises(asyncjobs.RemoteHandlerError, match="command not found"):
        router.external("x", tmp_path / "missing")
    with pytest.raises(asyncjobs.RemoteHandlerError, match="command not found"):
        router.external("x", tmp_path)


# ---- serving remote handlers ----------------------------------------------------------------------------------------

SERVED = "CHORIA_AJ.H.T.served"


async def _ask(nc: NATS, payload: Any = None) -> Msg:
    return await nc.request(SERVED, codec.encode_task(asyncjobs.Task("served", payload)), timeout=10)


async def test_serving_runs_at_most_concurrency_requests_at_once(nc: NATS) -> None:
    gate = asyncio.Event()
    running = peak = 0

    async def handler(task: asyncjobs.Task) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await gate.wait()
            return "done"
        finally:
            running -= 1

    sub = await asyncjobs.serve_remote_handler(nc, "served", handler, concurrency=5)
    requests = [asyncio.create_task(_ask(nc)) for _ in range(50)]
    await eventually(lambda: running == 5)
    # The rest wait in the subscription: 44 queued, and one held by the callback until a slot frees.
    await eventually(lambda: sub.pending_msgs == 44)
    assert running == 5
    gate.set()
    replies = await asyncio.gather(*requests)
    assert [reply.data for reply in replies] == [b'"done"'] * 50
    assert peak == 5
    await sub.unsubscribe()


async def test_handler_errors_are_logged_and_replied(nc: NATS, caplog: pytest.LogCaptureFixture) -> None:
    async def handler(task: asyncjobs.Task) -> str:
        if task.payload_json() == "boom":
            raise ValueError("bad input")
        return "ok"

    await asyncjobs.serve_remote_handler(nc, "served", handler)
    with caplog.at_level(logging.WARNING, logger="asyncjobs"):
        reply = await _ask(nc, "boom")
    assert reply.headers is not None and reply.headers["AJ-Error"] == "bad input"
    [record] = [r for r in caplog.records if r.name == "asyncjobs" and r.levelno == logging.WARNING]
    assert "remote handler for 'served' failed on task" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)
    assert "ValueError: bad input" in caplog.text  # the traceback is in the log
    assert (await _ask(nc, "fine")).data == b'"ok"'


@pytest.mark.parametrize("raised", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
async def test_base_exceptions_from_handlers_do_not_escape(
    nc: NATS, caplog: pytest.LogCaptureFixture, raised: BaseException
) -> None:
    async def handler(task: asyncjobs.Task) -> str:
        if task.payload_json() == "exit":
            raise raised
        return "ok"

    await asyncjobs.serve_remote_handler(nc, "served", handler)
    with caplog.at_level(logging.WARNING, logger="asyncjobs"):
        reply = await _ask(nc, "exit")
    assert reply.headers is not None and reply.headers["AJ-Error"] == (str(raised) or type(raised).__name__)
    assert any(r.exc_info and r.exc_info[1] is raised for r in caplog.records)
    # The service keeps serving.
    assert (await _ask(nc, "again")).data == b'"ok"'


async def test_unsubscribing_lets_running_requests_finish(nc: NATS) -> None:
    started = asyncio.Event()
    gate = asyncio.Event()

    async def handler(task: asyncjobs.Task) -> str:
        started.set()
        await gate.wait()
        return "finished"

    sub = await asyncjobs.serve_remote_handler(nc, "served", handler)
    request = asyncio.create_task(_ask(nc))
    await started.wait()
    await sub.unsubscribe()
    gate.set()
    assert (await request).data == b'"finished"'


@pytest.mark.parametrize("concurrency", [0, -1, True, 2.5])
async def test_serving_concurrency_is_checked(nc: NATS, concurrency: Any) -> None:
    async def handler(task: asyncjobs.Task) -> None:
        return None

    with pytest.raises(asyncjobs.ConfigurationError, match="concurrency must be an integer of at least 1"):
        await asyncjobs.serve_remote_handler(nc, "served", handler, concurrency=concurrency)


async def test_an_external_command_runs_in_its_own_session(make_client: ClientFactory, tmp_path: Path) -> None:
    # So a Ctrl-C in the worker's terminal reaches the worker (which grants the shutdown grace), not the command.
    client = await make_client(queue="EXTSESSION")
    router = asyncjobs.Router()
    router.external("ext:sid", _script(tmp_path, "ps -o sid= -p $$\n"))
    task = await client.enqueue(asyncjobs.Task("ext:sid"))
    async with running(client, router):
        done = await wait_state(client, task.id, TaskState.COMPLETED)
    assert done.result is not None
    session = int(done.result.payload.strip())
    assert session != os.getsid(0)
