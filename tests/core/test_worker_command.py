"""The worker command in a real subprocess: clean stops on SIGTERM, a second signal, supervision, errors."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

import asyncjobs
from asyncjobs.testing import eventually

from .conftest import COMMAND_TIMEOUT_S, ClientFactory, Command, fetch, wait_state

APPS = Path(__file__).parent / "apps"


def worker_args(url: str, queue: str, *extra: str, router: str = "cmd_app:router") -> list[str]:
    return ["worker", router, "--app-dir", str(APPS), "--server", url, "--queue", queue, *extra]


async def start(commands: list[Command], *args: str) -> Command:
    command = await Command(*args).start()
    commands.append(command)
    return command


async def test_sigterm_mid_task_hands_the_task_back_and_the_next_worker_runs_it_at_once(
    nats_url: str, make_client: ClientFactory, commands: list[Command], tmp_path: Path
) -> None:
    client = await make_client(queue="CMDSTOP")
    assert client.queue.max_run_time_ns == 300 * 10**9  # what a lost task would wait without the hand-back
    marker = str(tmp_path / "runs")
    task = await client.enqueue(asyncjobs.Task("cmd:slow", {"first": 120, "later": 0, "marker": marker}))
    first = await start(commands, *worker_args(nats_url, "CMDSTOP", "--shutdown-grace", "1"))
    await wait_state(client, task.id, asyncjobs.TaskState.ACTIVE, timeout=COMMAND_TIMEOUT_S)

    first.signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert await first.wait() == 0, first.output
    assert "received SIGTERM: stopping" in first.output
    handed_back = await client.get_task(task.id)
    assert handed_back.state == asyncjobs.TaskState.RETRY
    assert "worker stopped before the handler finished" in handed_back.last_err

    second = await start(commands, *worker_args(nats_url, "CMDSTOP", "--until-idle"))
    assert await second.wait() == 0, second.output
    done = await client.get_task(task.id)
    assert done.state == asyncjobs.TaskState.COMPLETED
    assert done.tries == 1  # the run cut short by the stop is not the task's failure: it keeps its tries
    assert done.result is not None and done.result.payload == "done on run 2"
    # Run again right away, not after the queue's 300 s max run time.
    assert time.monotonic() - stopped_at < 60


async def test_sigterm_lets_a_running_handler_finish_within_the_grace(
    nats_url: str, make_client: ClientFactory, commands: list[Command]
) -> None:
    client = await make_client(queue="CMDGRACE")
    task = await client.enqueue(asyncjobs.Task("cmd:slow", {"first": 1.5}))
    command = await start(commands, *worker_args(nats_url, "CMDGRACE", "--shutdown-grace", "20"))
    await wait_state(client, task.id, asyncjobs.TaskState.ACTIVE, timeout=COMMAND_TIMEOUT_S)
    command.signal(signal.SIGTERM)
    assert await command.wait() == 0, command.output
    done = await client.get_task(task.id)
    assert done.state == asyncjobs.TaskState.COMPLETED
    assert done.tries == 1


async def test_a_second_signal_hands_running_tasks_back_at_once(
    nats_url: str, make_client: ClientFactory, commands: list[Command]
) -> None:
    client = await make_client(queue="CMDHURRY")
    task = await client.enqueue(asyncjobs.Task("cmd:slow", {"first": 120}))
    command = await start(commands, *worker_args(nats_url, "CMDHURRY", "--shutdown-grace", "120"))
    await wait_state(client, task.id, asyncjobs.TaskState.ACTIVE, timeout=COMMAND_TIMEOUT_S)
    command.signal(signal.SIGINT)
    await command.wait_line("received SIGINT: stopping")
    command.signal(signal.SIGINT)
    assert await command.wait(timeout=15) == 128 + signal.SIGINT, command.output
    assert "received SIGINT again: stopping now" in command.output
    handed_back = await client.get_task(task.id)
    assert handed_back.state == asyncjobs.TaskState.RETRY, command.output
    info = await client.admin.queue_info("CMDHURRY")
    assert info.items == 1  # back in the queue for the next worker


async def test_until_idle_processes_everything_and_exits_0(
    nats_url: str, make_client: ClientFactory, commands: list[Command]
) -> None:
    client = await make_client(queue="CMDIDLE")
    tasks = await client.enqueue_many(asyncjobs.Task("cmd:echo", {"n": n}) for n in range(25))
    command = await start(commands, *worker_args(nats_url, "CMDIDLE", "--until-idle", "--concurrency", "5"))
    assert await command.wait() == 0, command.output
    for task in tasks:
        assert (await client.get_task(task.id)).state == asyncjobs.TaskState.COMPLETED
    assert "worker started: queue CMDIDLE, 5 concurrent handlers, task types" in command.output


async def test_the_command_runs_50_handlers_per_process_by_default(
    nats_url: str, make_client: ClientFactory, commands: list[Command]
) -> None:
    # A dedicated worker process is sized for throughput; connect() keeps upstream's 10 (docs/deploying.md, Sizing).
    client = await make_client(queue="CMDDEFAULT")
    assert client.options.concurrency == 10
    await client.enqueue(asyncjobs.Task("cmd:echo", {"n": 1}))
    command = await start(commands, *worker_args(nats_url, "CMDDEFAULT", "--until-idle"))
    assert await command.wait() == 0, command.output
    assert "worker started: queue CMDDEFAULT, 50 concurrent handlers, task types" in command.output


@pytest.mark.parametrize(
    "router",
    ["cmd_app:make_router", "cmd_app:make_router_async"],
)
async def test_a_router_factory_is_called(
    router: str, nats_url: str, make_client: ClientFactory, commands: list[Command]
) -> None:
    client = await make_client(queue="CMDFACTORY")
    task = await client.enqueue(asyncjobs.Task("cmd:echo", {"ok": True}))
    command = await start(commands, *worker_args(nats_url, "CMDFACTORY", "--until-idle", router=router))
    assert await command.wait() == 0, command.output
    assert (await client.get_task(task.id)).state == asyncjobs.TaskState.COMPLETED


async def test_nats_url_stands_in_for_server(
    nats_url: str, make_client: ClientFactory, commands: list[Command]
) -> None:
    client = await make_client(queue="CMDENV")
    task = await client.enqueue(asyncjobs.Task("cmd:echo", {}))
    args = ["worker", "cmd_app:router", "--app-dir", str(APPS), "--queue", "CMDENV", "--until-idle"]
    command = await Command(*args, env={"NATS_URL": nats_url}).start()
    commands.append(command)
    assert await command.wait() == 0, command.output
    assert (await client.get_task(task.id)).state == asyncjobs.TaskState.COMPLETED


async def test_processes_are_supervised_restarted_after_a_crash_and_stopped_together(
    nats_url: str, make_client: ClientFactory, commands: list[Command]
) -> None:
    client = await make_client(queue="CMDPROCS")
    command = await start(commands, *worker_args(nats_url, "CMDPROCS", "--processes", "2", "--shutdown-grace", "1"))
    pids = {}
    for index in (0, 1):
        pids[index] = int((await command.wait_line(rf"worker {index} started \(pid (\d+)\)")).group(1))
    await command.wait_line(r"asyncjobs/worker-0\[\d+\]: worker started")
    await command.wait_line(r"asyncjobs/worker-1\[\d+\]: worker started")

    os.kill(pids[0], signal.SIGKILL)
    mark = len(command.lines)
    await command.wait_line(r"worker 0 \(pid \d+\) killed by SIGKILL after .*: restarting it in 1s", after=mark)
    restarted = int((await command.wait_line(r"worker 0 started \(pid (\d+)\)", after=mark)).group(1))
    assert restarted != pids[0]

    tasks = await client.enqueue_many(asyncjobs.Task("cmd:echo", {"n": n}) for n in range(40))
    for task in tasks:
        await wait_state(client, task.id, asyncjobs.TaskState.COMPLETED, timeout=COMMAND_TIMEOUT_S)

    command.signal(signal.SIGTERM)
    assert await command.wait() == 0, command.output
    for pid in (restarted, pids[1]):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the workers are gone too


async def test_processes_until_idle_exit_0_together(
    nats_url: str, make_client: ClientFactory, commands: list[Command]
) -> None:
    client = await make_client(queue="CMDPIDLE")
    tasks = await client.enqueue_many(asyncjobs.Task("cmd:echo", {"n": n}) for n in range(30))
    command = await start(commands, *worker_args(nats_url, "CMDPIDLE", "--processes", "2", "--until-idle"))
    assert await command.wait() == 0, command.output
    for task in tasks:
        assert (await client.get_task(task.id)).state == asyncjobs.TaskState.COMPLETED


async def test_supervised_workers_stop_when_the_supervisor_is_killed(
    nats_url: str, make_client: ClientFactory, commands: list[Command]
) -> None:
    await make_client(queue="CMDORPHAN")
    command = await start(commands, *worker_args(nats_url, "CMDORPHAN", "--processes", "2"))
    pids = [int((await command.wait_line(rf"worker {n} started \(pid (\d+)\)")).group(1)) for n in (0, 1)]
    await command.wait_line(r"asyncjobs/worker-1\[\d+\]: worker started")
    await command.kill()

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    await eventually(lambda: all(gone(pid) for pid in pids) or None, timeout=COMMAND_TIMEOUT_S)


@pytest.mark.parametrize(
    ("router", "extra", "message"),
    [
        ("nowhere:router", (), r"cannot import 'nowhere' \(no module named 'nowhere'\): run from the directory"),
        ("cmd_app", (), r"'cmd_app' is not an import path: write it as MODULE:ATTRIBUTE"),
        ("cmd_app:missing", (), r"module 'cmd_app' has no attribute 'missing'"),
        ("cmd_app:not_a_router", (), r"must be an asyncjobs.Router \(or a callable returning one\), not int"),
        ("cmd_app:empty", (), r"has no handlers: register some with @router.handler"),
        ("broken_app:router", (), r"importing 'broken_app' failed: RuntimeError: this module is broken on purpose"),
        ("cmd_app:router", ("--processes", "0"), r"--processes must be at least 1"),
        ("cmd_app:router", ("--concurrency", "0"), r"concurrency must be at least 1"),
        ("cmd_app:router", ("--discard", "active"), r"only states completed, expired or terminated can be discarded"),
        ("cmd_app:router", ("--queue", "bad queue"), r"queue name"),
        ("cmd_app:router", ("--creds", "/nonexistent.creds"), r"creds_file '/nonexistent.creds' does not exist"),
    ],
)
async def test_usage_errors_exit_2_with_one_clear_line(
    router: str, extra: tuple[str, ...], message: str, commands: list[Command]
) -> None:
    # Checked before connecting: the address is never dialled.
    command = await start(commands, *worker_args("nats://127.0.0.1:9", "CMDBAD", *extra, router=router))
    assert await command.wait() == 2, command.output
    assert re.search(message, command.output), command.output
    assert "asyncjobs worker: error:" in command.lines[-1]


async def test_an_unreachable_server_exits_1_naming_the_cause(commands: list[Command]) -> None:
    command = await start(commands, *worker_args("nats://127.0.0.1:9", "CMDDOWN"))
    assert await command.wait() == 1, command.output
    assert "connection refused" in command.output
    assert "Traceback" not in command.output


async def test_a_broken_module_shows_its_traceback(commands: list[Command]) -> None:
    command = await start(commands, *worker_args("nats://127.0.0.1:9", "CMDBAD", router="broken_app:router"))
    assert await command.wait() == 2
    assert "Traceback" in command.output and "broken_app.py" in command.output


async def test_the_command_serves_health_and_metrics(
    nats_url: str, make_client: ClientFactory, commands: list[Command]
) -> None:
    await make_client(queue="CMDHEALTH")
    command = await start(
        commands, *worker_args(nats_url, "CMDHEALTH", "--metrics-port", "0", "--metrics-address", "127.0.0.1")
    )
    found = await command.wait_line(r"serving /metrics, /healthz and /readyz on http://127\.0\.0\.1:(\d+)")
    base = f"http://127.0.0.1:{found.group(1)}"
    await command.wait_line("worker started")

    async def ready() -> bool:
        # The line is logged as the worker's task is created; it registers with /readyz once that task runs.
        status, body = await fetch(f"{base}/readyz")
        return status == 200 and '"worker CMDHEALTH":"ok"' in body and '"nats":"ok"' in body

    await eventually(ready, timeout=COMMAND_TIMEOUT_S, message="/readyz to report the worker")
    status, body = await fetch(f"{base}/healthz")
    assert status == 200 and '"alive":true' in body
    status, body = await fetch(f"{base}/metrics")
    assert status == 200 and "choria_asyncjobs_" in body
    command.signal(signal.SIGTERM)
    assert await command.wait() == 0


async def test_a_stop_signal_to_the_whole_group_still_gives_the_grace(
    nats_url: str, make_client: ClientFactory, commands: list[Command]
) -> None:
    # systemd's default KillMode=control-group sends SIGTERM to the supervisor and to every worker at once.
    client = await make_client(queue="CMDGROUP")
    task = await client.enqueue(asyncjobs.Task("cmd:slow", {"first": 2}))
    command = await start(commands, *worker_args(nats_url, "CMDGROUP", "--processes", "2", "--shutdown-grace", "20"))
    pids = [int((await command.wait_line(rf"worker {n} started \(pid (\d+)\)")).group(1)) for n in (0, 1)]
    await wait_state(client, task.id, asyncjobs.TaskState.ACTIVE, timeout=COMMAND_TIMEOUT_S)
    command.signal(signal.SIGTERM)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    assert await command.wait() == 0, command.output
    assert "stopping now" not in command.output
    done = await client.get_task(task.id)
    assert done.state == asyncjobs.TaskState.COMPLETED and done.tries == 1


async def test_a_second_signal_to_the_supervisor_hurries_its_workers(
    nats_url: str, make_client: ClientFactory, commands: list[Command]
) -> None:
    client = await make_client(queue="CMDSUPHURRY")
    task = await client.enqueue(asyncjobs.Task("cmd:slow", {"first": 120}))
    command = await start(
        commands, *worker_args(nats_url, "CMDSUPHURRY", "--processes", "2", "--shutdown-grace", "120")
    )
    await wait_state(client, task.id, asyncjobs.TaskState.ACTIVE, timeout=COMMAND_TIMEOUT_S)
    command.signal(signal.SIGINT)
    await command.wait_line("supervisor received SIGINT")
    command.signal(signal.SIGINT)
    assert await command.wait(timeout=15) == 128 + signal.SIGINT, command.output
    assert (await client.get_task(task.id)).state == asyncjobs.TaskState.RETRY


async def test_stop_signals_reach_supervised_workers_that_are_still_starting(
    nats_url: str, commands: list[Command], tmp_path: Path
) -> None:
    # The supervisor's own stop signals reach a worker importing its router (before its event loop runs): it has
    # taken no task yet, so it exits at once rather than losing the signal and running on.
    marker = tmp_path / "importing"
    args = ["worker", "slow_worker_import_app:router", "--app-dir", str(APPS), "--server", nats_url]
    args += ["--queue", "CMDEARLY", "--processes", "2"]
    command = await Command(*args, env={"SLOW_IMPORT_MARKER": str(marker)}).start()
    commands.append(command)
    for index in (0, 1):
        await eventually(lambda i=index: Path(f"{marker}{i}").exists() or None, timeout=COMMAND_TIMEOUT_S)
    command.signal(signal.SIGINT)
    await command.wait_line("supervisor received SIGINT")
    command.signal(signal.SIGINT)
    assert await command.wait(timeout=15) == 128 + signal.SIGINT, command.output


async def test_a_handler_that_ignores_cancellation_does_not_keep_the_worker_alive(
    nats_url: str, make_client: ClientFactory, commands: list[Command]
) -> None:
    client = await make_client(queue="CMDSTUBBORN")
    task = await client.enqueue(asyncjobs.Task("cmd:stubborn", {}))
    command = await start(commands, *worker_args(nats_url, "CMDSTUBBORN", "--shutdown-grace", "0.5"))
    await wait_state(client, task.id, asyncjobs.TaskState.ACTIVE, timeout=COMMAND_TIMEOUT_S)
    command.signal(signal.SIGTERM)
    assert await command.wait(timeout=25) == 0, command.output
    assert "still running after the worker stopped, ignoring cancellation" in command.output


async def test_a_signal_while_the_router_is_imported_exits_at_once(commands: list[Command], tmp_path: Path) -> None:
    marker = tmp_path / "importing"
    command = await Command(
        "worker", "slow_import_app:router", "--app-dir", str(APPS), env={"SLOW_IMPORT_MARKER": str(marker)}
    ).start()
    commands.append(command)
    await eventually(lambda: marker.exists() or None, timeout=COMMAND_TIMEOUT_S)
    command.signal(signal.SIGTERM)
    assert await command.wait(timeout=10) == 0, command.output
    assert "received SIGTERM before the worker started: exiting" in command.output
