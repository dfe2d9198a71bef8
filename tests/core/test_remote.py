"""Remote handlers: NATS request-reply services (upstream §2.10) and external commands."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

import asyncjobs
from asyncjobs import TaskState
from asyncjobs.remote import parse_deadline_header
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


def test_external_command_must_exist(tmp_path: Path) -> None:
    router = asyncjobs.Router()
    with pytest.raises(asyncjobs.RemoteHandlerError, match="command not found"):
        router.external("x", tmp_path / "missing")
    with pytest.raises(asyncjobs.RemoteHandlerError, match="command not found"):
        router.external("x", tmp_path)
