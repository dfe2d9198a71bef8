"""Scheduler failover: two ``python -m asyncjobs_scheduler`` processes, the leader stopped by SIGTERM or SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

import asyncjobs
from asyncjobs.constants import LEADER_EVENT_PREFIX
from asyncjobs.server import NatsServer
from asyncjobs_scheduler import Schedule
from asyncjobs_scheduler.scheduler import COMPONENT
from bench.common import TASK_TYPE
from bench.sched_common import (
    NS_PER_MS,
    QUEUE,
    STEP_TIMEOUT_S,
    TARGETS_MS,
    Report,
    add_all,
    poll,
    stored_ns,
    unix_ns,
)

log = logging.getLogger("bench.scheduler")

SETTLE_TICKS_S: Final = 3.0
"""Seconds of ``@every 1s`` ticks watched before a fault and after a handover."""
PROC_STOP_TIMEOUT_S: Final = 10.0


class Candidates:
    """Scheduler processes (``python -m asyncjobs_scheduler``) and the leader-elected events they publish."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.elected: list[tuple[int, str]] = []
        """(unix ns received, scheduler name) of every leader-elected event."""
        self._spawned = 0

    async def spawn(self) -> None:
        self._spawned += 1
        name = f"bench-sched-{self._spawned}"
        argv = ["-m", "asyncjobs_scheduler", "--server", self.url, "--queue", QUEUE, "--name", name]
        self.procs[name] = await asyncio.create_subprocess_exec(
            sys.executable, *argv, "--log-level", "warning", stdout=asyncio.subprocess.DEVNULL
        )

    async def on_event(self, msg: Any) -> None:
        self.elected.append((time.time_ns(), str(orjson.loads(msg.data)["name"])))

    async def stop(self, name: str, signum: signal.Signals) -> None:
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)
        try:
            async with asyncio.timeout(PROC_STOP_TIMEOUT_S):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def close(self) -> None:
        for name in list(self.procs):
            await self.stop(name, signal.SIGKILL)


async def _one_failover(
    client: asyncjobs.Client, tick: Schedule, candidates: Candidates, signum: signal.Signals
) -> tuple[float, float]:
    """Signal the leader; returns (handover ms, worst fire lag ms of the due times around it)."""
    await poll(lambda: _true(len(candidates.elected) > 0), "a first leader")
    leader = candidates.elected[-1][1]
    await asyncio.sleep(SETTLE_TICKS_S)
    seen = len(candidates.elected)
    signalled = datetime.now(UTC)
    signalled_ns = unix_ns(signalled)
    await candidates.stop(leader, signum)
    await poll(lambda: _true(len(candidates.elected) > seen), "a successor", STEP_TIMEOUT_S)
    elected_ns, successor = candidates.elected[seen]
    if successor == leader:
        raise RuntimeError(f"{leader} was elected again after it was stopped")
    await asyncio.sleep(SETTLE_TICKS_S)
    await candidates.spawn()  # two candidates again for the next round
    dues = tick.due_between(signalled - timedelta(seconds=2), datetime.now(UTC) - timedelta(seconds=1))
    when = await stored_ns(client, [tick.task_id(due) for due in dues])
    missing = [due for due in dues if tick.task_id(due) not in when]
    if missing:
        raise RuntimeError(f"failover lost {len(missing)} due times, e.g. {missing[0].isoformat()}")
    worst = max(when[tick.task_id(due)] - unix_ns(due) for due in dues)
    handover = (elected_ns - signalled_ns) / NS_PER_MS
    log.info(
        "%s: %s -> %s, handover %.0f ms, worst lag %.0f ms", signum.name, leader, successor, handover, worst / NS_PER_MS
    )
    return handover, worst / NS_PER_MS


async def _true(value: bool) -> bool:
    return value


async def bench_failover(rounds: int, report: Report) -> None:
    results: dict[signal.Signals, list[tuple[float, float]]] = {signal.SIGTERM: [], signal.SIGKILL: []}
    async with NatsServer() as server, await asyncjobs.connect(server.url, queue=QUEUE) as client:
        (tick,), _ = await add_all(client, [Schedule("tick", "@every 1s", TASK_TYPE, misfire="run_all")])
        candidates = Candidates(server.url)
        await client.nc.subscribe(LEADER_EVENT_PREFIX + COMPONENT, cb=candidates.on_event)
        try:
            for _ in range(2):
                await candidates.spawn()
            for signum in (signal.SIGTERM, signal.SIGKILL):
                for _ in range(rounds):
                    results[signum].append(await _one_failover(client, tick, candidates, signum))
        finally:
            await candidates.close()
    for signum, label in ((signal.SIGTERM, "graceful (SIGTERM)"), (signal.SIGKILL, "crash (SIGKILL)")):
        handovers = [h for h, _ in results[signum]]
        lags = [lag for _, lag in results[signum]]
        key = "graceful_handover" if signum == signal.SIGTERM else "crash_handover"
        med = statistics.median(handovers)
        target = f"; target < {TARGETS_MS[key]:.0f} ms" if key in TARGETS_MS else "; bound by the 10 s election TTL"
        report.add(
            key,
            f"failover {label}: handover, median of {len(handovers)}",
            f"{med:,.0f} ms",
            f"min {min(handovers):,.0f}, max {max(handovers):,.0f} ms{target}",
            med,
        )
        report.add(
            f"{key}_lag",
            f"failover {label}: worst fire lag of a due time, median",
            f"{statistics.median(lags):,.0f} ms",
            f"min {min(lags):,.0f}, max {max(lags):,.0f} ms; no due time lost",
        )
        report.figures[f"{key}_max"] = max(handovers)
