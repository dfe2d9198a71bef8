"""The supervisor of ``--processes N``: over stand-in workers (usage errors, back-off, a third signal), and the
check of the router before any worker starts. test_worker_command.py runs it over real workers.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from asyncjobs.testing import eventually

from .conftest import COMMAND_TIMEOUT_S, Command
from .test_worker_command import APPS

WORKER = """
import os, signal, sys, time
index = int(os.environ["ASYNCJOBS_WORKER_INDEX"])
does = sys.argv[1 + index]
if does.startswith("exit"):
    time.sleep(0.2)
    sys.exit(int(does[4:]))
if does == "stubborn":
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
else:
    signal.signal(signal.SIGUSR1, lambda *_: sys.exit(0))
print(f"stand-in {index} ready", file=sys.stderr, flush=True)
while True:
    time.sleep(60)
"""
"""A stand-in worker: argument N+1 says what worker N does (``exitS``, ``graceful`` or ``stubborn``)."""
SUPERVISE = """
import logging, sys
from asyncjobs.cli.supervisor import supervise
logging.basicConfig(level="INFO", format="%(relativeCreated)d %(message)s")
assert "asyncio" not in sys.modules
sys.exit(supervise(len(sys.argv) - 1, [sys.executable, "-c", WORKER, *sys.argv[1:]]))
""".replace("WORKER", repr(WORKER))


async def supervise(commands: list[Command], *workers: str) -> Command:
    """The supervisor over one stand-in worker for each of ``workers``."""
    command = Command()
    command.args = ["-c", SUPERVISE, *workers]
    commands.append(await command.start())
    return command


def at_ms(command: Command, pattern: str) -> int:
    """When (ms since the supervisor started) it logged the line matching ``pattern``."""
    return int(next(line for line in command.lines if re.search(pattern, line)).split()[0])


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_a_usage_error_stops_every_worker_and_exits_2(commands: list[Command]) -> None:
    command = await supervise(commands, "graceful", "exit2")
    assert await command.wait() == 2, command.output
    assert "worker 1 exited with a usage error: stopping every worker" in command.output
    assert "supervisor received SIGTERM: stopping 2 workers" in command.output
    assert re.search(r"worker 0 \(pid \d+\) exited with status 0", command.output), command.output


async def test_a_crash_is_restarted_after_1_then_2_seconds_and_a_stop_ends_the_wait(commands: list[Command]) -> None:
    command = await supervise(commands, "exit3")
    await command.wait_line(r"worker 0 \(pid \d+\) exited with status 3 after [\d.]+s: restarting it in 1s")
    await command.wait_line(r"worker 0 \(pid \d+\) exited with status 3 after [\d.]+s: restarting it in 2s")
    command.signal(signal.SIGTERM)
    stopped = time.monotonic()
    assert await command.wait() == 0, command.output
    assert time.monotonic() - stopped < 1.5  # not after the 2 s: the stop wakes the supervisor
    starts = [int(line.split()[0]) for line in command.lines if re.search(r"worker 0 started", line)]
    assert len(starts) == 2, command.output
    assert starts[1] - at_ms(command, "restarting it in 1s") >= 1000
    assert "supervisor received SIGTERM: stopping 1 workers" in command.output


async def test_a_third_signal_kills_the_workers(commands: list[Command]) -> None:
    command = await supervise(commands, "stubborn", "stubborn")
    pids = [int((await command.wait_line(rf"worker {n} started \(pid (\d+)\)")).group(1)) for n in (0, 1)]
    for n in (0, 1):
        await command.wait_line(f"stand-in {n} ready")
    for said in (": stopping 2 workers", " again: stopping the workers at once", " a third time: killing the workers"):
        command.signal(signal.SIGTERM)
        await command.wait_line(f"supervisor received SIGTERM{said}")
    assert await command.wait() == 128 + signal.SIGTERM, command.output
    await eventually(lambda: all(gone(pid) for pid in pids) or None, timeout=COMMAND_TIMEOUT_S)


async def test_the_router_is_checked_before_any_worker_starts(commands: list[Command]) -> None:
    # In a child process of the supervisor (which never imports it), so the error is said once, before any worker.
    command = await Command("worker", "cmd_app:missing", "--app-dir", str(APPS), "--processes", "2").start()
    commands.append(command)
    assert await command.wait() == 2, command.output
    assert command.lines[-1] == "asyncjobs worker: error: module 'cmd_app' has no attribute 'missing'", command.output
    assert "started" not in command.output


async def test_a_signal_while_the_router_is_checked_exits_at_once(commands: list[Command], tmp_path: Path) -> None:
    marker = tmp_path / "importing"
    command = await Command(
        "worker", "slow_import_app:router", "--app-dir", str(APPS), "--processes", "2",
        env={"SLOW_IMPORT_MARKER": str(marker)},
    ).start()  # fmt: skip
    commands.append(command)
    await eventually(lambda: marker.exists() or None, timeout=COMMAND_TIMEOUT_S)
    assert command.proc is not None
    checking = children(command.proc.pid)  # the one importing the router
    assert len(checking) == 1, checking
    command.signal(signal.SIGTERM)
    assert await command.wait(timeout=10) == 0, command.output
    assert "received SIGTERM before the worker started: exiting" in command.output
    assert "started (pid" not in command.output
    await eventually(lambda: all(gone(pid) for pid in checking) or None, timeout=COMMAND_TIMEOUT_S)
