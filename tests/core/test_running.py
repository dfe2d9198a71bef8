"""run_worker, the health endpoint, producer-side metrics, the new-queue warning and the keygen command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import asyncjobs
from asyncjobs.cli import build_parser, main
from asyncjobs.serving import Health, serve_metrics
from asyncjobs.signing import TaskSigner, TaskVerifier
from asyncjobs.testing import eventually

from .conftest import ClientFactory, fetch, wait_state


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("age", "alive"),
    [(0.0, True), (29.9, True), (30.0, True), (30.1, False), (600.0, False)],
)
def test_liveness_follows_the_event_loop_heartbeat(age: float, alive: bool) -> None:
    clock = Clock()
    health = Health(clock=clock)
    health.beat()
    clock.now += age
    assert health.liveness()[0] is alive
    ready, _ = health.readiness()
    assert ready is alive  # a stuck loop is never ready either
    if not alive:
        assert "blocking code" in health.liveness()[1]["reason"]


@pytest.mark.parametrize(
    ("answers", "ready"),
    [({}, True), ({"a": None}, True), ({"a": None, "b": "down"}, False), ({"a": RuntimeError("x")}, False)],
)
def test_readiness_needs_every_check(answers: dict[str, object], ready: bool) -> None:
    health = Health()
    for name, answer in answers.items():

        def check(answer: object = answer) -> str | None:
            if isinstance(answer, Exception):
                raise answer
            return answer  # type: ignore[return-value]

        health.add_check(name, check)
    assert health.readiness()[0] is ready
    health.remove_check("a")
    health.remove_check("unknown")


async def test_health_paths_over_http() -> None:
    clock = Clock()
    health = Health(clock=clock)
    health.add_check("thing", lambda: "thing is down")
    with serve_metrics(0, host="127.0.0.1", health=health) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert await fetch(f"{base}/healthz") == (200, '{"alive":true,"last_beat_s":0.0}')
        status, body = await fetch(f"{base}/readyz")
        assert (status, body) == (503, '{"ready":false,"checks":{"thing":"thing is down"}}')
        clock.now += 31
        assert (await fetch(f"{base}/healthz"))[0] == 503
        status, body = await fetch(f"{base}/nothing")
        assert status == 404 and "/metrics" in body


async def test_a_producer_only_client_serves_metrics_and_health(make_client: ClientFactory) -> None:
    client = await make_client(queue="PRODMETRICS", prometheus_port=0, prometheus_address="127.0.0.1")
    port = client.metrics_port
    assert port is not None
    await client.enqueue(asyncjobs.Task("x:y", {}))
    status, body = await fetch(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and 'choria_asyncjobs_queue_enqueue_count{queue="PRODMETRICS"}' in body
    assert await fetch(f"http://127.0.0.1:{port}/readyz") == (200, '{"ready":true,"checks":{"nats":"ok"}}')
    await client.close()
    with pytest.raises(OSError):  # noqa: PT011 - closed with the client
        await fetch(f"http://127.0.0.1:{port}/healthz")


async def test_readiness_turns_off_while_stopping_and_a_second_cancel_hands_back_at_once(
    make_client: ClientFactory,
) -> None:
    client = await make_client(queue="READYSTOP", prometheus_port=0, prometheus_address="127.0.0.1", shutdown_grace=120)
    base = f"http://127.0.0.1:{client.metrics_port}"
    router = asyncjobs.Router()

    @router.handler("slow")
    async def slow(task: asyncjobs.Task) -> None:
        await asyncio.sleep(300)

    task = await client.enqueue(asyncjobs.Task("slow", {}))
    run = asyncio.create_task(client.run(router))
    await wait_state(client, task.id, asyncjobs.TaskState.ACTIVE)
    assert (await fetch(f"{base}/readyz"))[1] == '{"ready":true,"checks":{"nats":"ok","worker READYSTOP":"ok"}}'

    run.cancel()  # the first stop: the handler gets its 120 s grace

    async def stopping() -> bool | None:
        status, body = await fetch(f"{base}/readyz")
        return (status == 503 and "stopping" in body) or None

    await eventually(stopping, timeout=10)
    assert (await client.get_task(task.id)).state == asyncjobs.TaskState.ACTIVE
    run.cancel()  # the second: no more grace
    async with asyncio.timeout(10):
        with contextlib.suppress(asyncio.CancelledError):
            await run
    handed_back = await client.get_task(task.id)
    assert handed_back.state == asyncjobs.TaskState.RETRY
    assert handed_back.last_err == "worker stopped before the handler finished"
    assert (await client.admin.queue_info("READYSTOP")).items == 1


async def test_run_worker_async_stops_on_its_event(nats_url: str, make_client: ClientFactory) -> None:
    client = await make_client(queue="RUNEVENT")
    seen = asyncio.Event()
    router = asyncjobs.Router()

    @router.handler("mark")
    async def mark(task: asyncjobs.Task) -> str:
        seen.set()
        return "ok"

    task = await client.enqueue(asyncjobs.Task("mark", {}))
    stop = asyncio.Event()

    async def factory() -> asyncjobs.Router:
        return router

    running = asyncio.create_task(
        asyncjobs.run_worker_async(factory, nats_url, queue="RUNEVENT", stop=stop, handle_signals=False)
    )
    await asyncio.wait_for(seen.wait(), 10)
    await wait_state(client, task.id, asyncjobs.TaskState.COMPLETED)
    stop.set()
    assert await asyncio.wait_for(running, 10) == 0


@pytest.mark.parametrize(("options", "expected"), [({}, 50), ({"concurrency": 7}, 7)])
async def test_run_worker_defaults_to_50_handlers(
    options: dict[str, Any], expected: int, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="asyncjobs")
    router = asyncjobs.Router()

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> None:
        return None

    settings = {"queue": f"RUNDEFAULT{expected}", "until_idle": True, "handle_signals": False, **options}
    running = asyncjobs.run_worker_async(router, nats_url, **settings)
    done = await asyncio.wait_for(running, 20)
    assert done == 0
    assert any(f"{expected} concurrent handlers" in record.getMessage() for record in caplog.records)


async def test_run_worker_until_idle_in_a_thread(nats_url: str, make_client: ClientFactory) -> None:
    client = await make_client(queue="RUNIDLE")
    tasks = await client.enqueue_many(asyncjobs.Task("echo", {"n": n}) for n in range(5))
    router = asyncjobs.Router()

    @router.handler("echo")
    async def echo(task: asyncjobs.Task) -> object:
        return task.payload_json()

    # run_worker owns an event loop; signal handlers can only be installed in the main thread, so none are here.
    status = await asyncio.to_thread(asyncjobs.run_worker, router, nats_url, queue="RUNIDLE", until_idle=True)
    assert status == 0
    for task in tasks:
        assert (await client.get_task(task.id)).state == asyncjobs.TaskState.COMPLETED


@pytest.mark.parametrize(
    ("router", "message"),
    [
        (asyncjobs.Router(), "has no handlers"),
        (42, "must be an asyncjobs.Router"),
        ("no.such.module:router", "cannot import 'no.such.module'"),
    ],
)
async def test_run_worker_refuses_what_is_not_a_router(router: object, message: str) -> None:
    with pytest.raises(asyncjobs.ConfigurationError, match=message):
        await asyncjobs.run_worker_async(router, "nats://127.0.0.1:9", handle_signals=False)  # type: ignore[arg-type]


async def test_a_worker_that_creates_its_queue_warns_about_typos(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    router = asyncjobs.Router()

    @router.handler("x")
    async def nothing(task: asyncjobs.Task) -> None:
        return None

    caplog.set_level(logging.INFO, logger="asyncjobs")
    existing = await make_client(queue="TYPOS")
    created = await make_client(queue="TYPSO")
    assert "created queue 'TYPSO'" in caplog.text
    caplog.clear()
    await created.run(router, until_idle=True)
    assert "queue 'TYPSO' did not exist: this client created it" in caplog.text
    assert "no_create=True" in caplog.text
    caplog.clear()
    await created.run(router, until_idle=True)  # said once
    bound = await make_client(queue="TYPOS")  # created by `existing`: this one only binds it
    await bound.run(router, until_idle=True)
    assert "did not exist" not in caplog.text
    await existing.run(router, until_idle=True)
    assert "queue 'TYPOS' did not exist" in caplog.text
    caplog.clear()
    producer_and_worker = await make_client(queue="TYPOING")  # enqueues before it works: the queue is meant
    await producer_and_worker.enqueue(asyncjobs.Task("x", {}))
    await producer_and_worker.run(router, until_idle=True)
    other_worker = await make_client(queue="TYPOED")  # created, but a producer put a task on it since
    await (await make_client(queue="TYPOED")).enqueue(asyncjobs.Task("x", {}))
    await other_worker.run(router, until_idle=True)
    assert "did not exist" not in caplog.text
    with pytest.raises(asyncjobs.QueueNotFound, match="queue 'TYPOES' does not exist"):
        await make_client(queue=asyncjobs.Queue("TYPOES", no_create=True))


def test_keygen_writes_a_pair_that_signs_and_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "keys"
    assert main(["keygen", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    seed, public = out / "signing.seed", out / "signing.pub"
    assert public.read_text() in printed
    assert seed.stat().st_mode & 0o777 == 0o600
    signer = TaskSigner.from_seed_file(seed)
    TaskVerifier.from_public_key_file(public).verify(b"envelope", signer.sign(b"envelope"))
    assert main(["keygen", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["keygen", "--out", str(out), "--force"]) == 0
    assert TaskSigner.from_seed_file(seed).public_key_hex != signer.public_key_hex


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "worker" in capsys.readouterr().err


def test_the_console_script_and_python_m_are_the_same_command() -> None:
    script = Path(sys.executable).parent / "asyncjobs"
    assert script.exists(), "the asyncjobs console script is not installed: pip install -e . again"
    by_script = subprocess.run([str(script), "worker", "--help"], capture_output=True, text=True, check=True)
    by_module = subprocess.run(
        [sys.executable, "-m", "asyncjobs", "worker", "--help"], capture_output=True, text=True, check=True
    )
    assert "MODULE:ATTR" in by_script.stdout
    assert by_script.stdout.replace("asyncjobs worker", "") == by_module.stdout.replace("asyncjobs worker", "")


async def test_a_redelivery_at_the_max_run_time_is_explained(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(queue=asyncjobs.Queue("RUNTIME", max_run_time=1))
    router = asyncjobs.Router()

    @router.handler("stuck")
    async def stuck(task: asyncjobs.Task) -> str:
        if task.tries == 1:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                # Stopped at its max run time, it takes a while to give up, as a handler in a long C call would;
                # meanwhile the ack wait (also the max run time) has ended and the item comes back.
                await asyncio.sleep(1.5)
                raise
        return "done"

    task = await client.enqueue(asyncjobs.Task("stuck", {}))
    async with asyncio.timeout(20):
        await asyncio.gather(client.run(router, until_idle=True), return_exceptions=True)
    assert "ran for the queue's max run time of 1s" in caplog.text
    assert "use asyncio.to_thread for blocking code" in caplog.text
    assert (await client.get_task(task.id)).state == asyncjobs.TaskState.COMPLETED


async def test_fewer_replicas_than_asked_for_are_named(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    await make_client(queue="REPL")  # creates everything with 1 replica
    caplog.clear()
    with pytest.raises(asyncjobs.JetStreamError):
        # A single server cannot hold 3 replicas: creating the missing queue fails, after the warnings for the rest.
        await make_client(queue="REPLNEW", replicas=3, retry_window=0)
    assert "stream CHORIA_AJ_TASKS already exists with 1 replica(s), so replicas=3 is ignored" in caplog.text
    assert "nats stream edit CHORIA_AJ_TASKS --replicas 3" in caplog.text
    caplog.clear()
    await make_client(queue="REPL", replicas=1)
    assert "replica" not in caplog.text


def test_the_readme_worker_command_parses() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    lines = [line for line in readme.splitlines() if line.startswith("python -m asyncjobs worker ")]
    assert lines, "the README shows no worker command"
    for line in lines:
        args = build_parser().parse_args(shlex.split(line)[3:])
        assert args.router == "myapp.tasks:router" and args.queue == "EMAIL"


async def test_a_handler_cancelling_its_own_task_is_a_failed_try_and_keeps_its_slot(
    make_client: ClientFactory,
) -> None:
    client = await make_client(queue="SELFCANCEL", concurrency=1)
    router = asyncjobs.Router()

    @router.handler("self")
    async def cancel_myself(task: asyncjobs.Task) -> None:
        me = asyncio.current_task()
        assert me is not None
        me.cancel()
        await asyncio.sleep(1)

    @router.handler("fine")
    async def fine(task: asyncjobs.Task) -> str:
        return "ok"

    bad = await client.enqueue(asyncjobs.Task("self", {}, max_tries=2))
    good = await client.enqueue(asyncjobs.Task("fine", {}))
    async with asyncio.timeout(20):
        await client.run(router, until_idle=True)
    ended = await client.get_task(bad.id)
    assert ended.state == asyncjobs.TaskState.EXPIRED and ended.tries == 2  # counted: not a shutdown
    assert "CancelledError" in ended.last_err
    assert (await client.get_task(good.id)).state == asyncjobs.TaskState.COMPLETED  # the one slot survived


async def test_run_worker_async_passes_a_cancellation_from_its_caller_on(
    nats_url: str, make_client: ClientFactory
) -> None:
    await make_client(queue="RUNCANCEL")
    router = asyncjobs.Router()

    @router.handler("x")
    async def nothing(task: asyncjobs.Task) -> None:
        return None

    stop = asyncio.Event()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.5):
            await asyncjobs.run_worker_async(router, nats_url, queue="RUNCANCEL", handle_signals=False, stop=stop)


async def test_run_worker_async_leaves_the_programs_signal_handlers_alone(
    nats_url: str, make_client: ClientFactory
) -> None:
    await make_client(queue="RUNSIG")
    router = asyncjobs.Router()

    @router.handler("x")
    async def nothing(task: asyncjobs.Task) -> None:
        return None

    def mine(signum: int, frame: object) -> None:
        return None

    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGTERM, mine)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        assert await asyncjobs.run_worker_async(router, nats_url, queue="RUNSIG", until_idle=True) == 0
        assert signal.getsignal(signal.SIGTERM) is mine  # never replaced
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # replaced, then put back
    finally:
        signal.signal(signal.SIGTERM, saved[0])
        signal.signal(signal.SIGINT, saved[1])


async def test_a_tls_url_against_a_server_without_tls_is_refused(nats_url: str) -> None:
    with pytest.raises(asyncjobs.ConfigurationError, match="TLS was asked for"):
        await asyncjobs.connect(nats_url.replace("nats://", "tls://"), connect_timeout=1)
