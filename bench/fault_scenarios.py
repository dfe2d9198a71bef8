"""The fault scenarios: their settings, and the script of each, run while the producer's load goes on.

A script waits for the share of tasks it wants done (polling the handler logs), then kills and restarts worker
processes, the server or cluster nodes, recording each fault on the run's :class:`~bench.fault_outcome.Timeline`.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import nats.errors

import asyncjobs
from asyncjobs.cluster import NatsCluster
from asyncjobs.constants import JS_API_PREFIX, TASKS_STREAM
from asyncjobs.server import NatsServer
from bench.fault_load import ProducerStats
from bench.fault_outcome import FaultRecord, Outcome, Timeline
from bench.fault_procs import WorkerPool, WorkerProcess

QUEUE_NAME: Final = "FAULTS"
CLUSTER_SIZE: Final = 3
REACH_SLACK_S: Final = 60.0
"""A fault waits at most this long past the planned end of the load for its share of tasks to be done."""
LEADER_TIMEOUT_S: Final = 30.0
PROGRESS_POLL_S: Final = 0.05
BUSY_TIMEOUT_S: Final = 5.0
BUSY_POLL_S: Final = 0.001
"""A handler runs for 5 ms: the log of a worker about to be killed is polled often enough to see one running."""


@dataclass(frozen=True, kw_only=True)
class FaultSettings:
    """How big and how long a fault run is."""

    tasks: int = 2000
    """Tasks the producer enqueues."""
    load_s: float = 20.0
    """Seconds over which the producer spreads them (100 tasks/s by default, a tenth of what two workers can do,
    so that a third of the load is more than the 5 s a killed cluster node stays down)."""
    recovery_window_s: float = 90.0
    """Seconds after the last fault ends before a task that is not final counts as lost."""
    workers: int = 2
    """Worker processes."""
    concurrency: int = 10
    """Handlers per worker process."""
    max_run_time_s: float = 5.0
    """The queue's max run time, which is also the consumer's ack wait."""
    outage_s: float = 10.0
    """How long the server stays down in the outage scenario."""
    node_down_s: float = 5.0
    """How long a killed cluster node stays down before it is restarted."""
    workdir: Path | None = None
    """Where handler logs, worker output and server stores go, one folder per scenario (kept, and replaced by the
    next run of that scenario); None for a temporary folder that is removed."""

    @property
    def budget_s(self) -> float:
        """A bound on one scenario: a stall fails it instead of hanging the run."""
        return 2 * (self.load_s + REACH_SLACK_S) + self.outage_s + 2 * self.node_down_s + self.recovery_window_s


class Run:
    """What a scenario's fault script works with while the load runs."""

    def __init__(
        self,
        settings: FaultSettings,
        client: asyncjobs.Client,
        pool: WorkerPool,
        timeline: Timeline,
        producing: asyncio.Task[ProducerStats],
        outcome: Outcome,
        deployment: NatsServer | NatsCluster,
    ) -> None:
        self.settings = settings
        self.client = client
        self.pool = pool
        self.timeline = timeline
        self.producing = producing
        self.outcome = outcome
        self.deployment = deployment
        self.victim: WorkerProcess | None = None

    @property
    def server(self) -> NatsServer:
        assert isinstance(self.deployment, NatsServer), "a single-server scenario"
        return self.deployment

    @property
    def cluster(self) -> NatsCluster:
        assert isinstance(self.deployment, NatsCluster), "a cluster scenario"
        return self.deployment

    def finished_by_handler(self) -> set[str]:
        self.pool.ledger.refresh()
        return self.pool.ledger.done_ids()

    async def reach(self, fraction: float) -> None:
        """Wait until handlers finished ``fraction`` of the tasks (bounded: a stalled run gets its fault anyway)."""
        target = math.ceil(fraction * self.settings.tasks)
        deadline = self.settings.load_s + REACH_SLACK_S
        while len(self.finished_by_handler()) < target:
            if self.timeline.clock() > deadline:
                self.outcome.notes.append(
                    f"only {len(self.finished_by_handler())} of the {target} tasks wanted before a fault were done "
                    f"by {deadline:g} s; the fault was injected anyway"
                )
                return
            await asyncio.sleep(PROGRESS_POLL_S)

    async def handler_running(self, worker: WorkerProcess) -> None:
        """Wait (briefly, polling its log) until ``worker`` is running a handler, so a kill interrupts one."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            worker.log.refresh()
            if worker.log.in_flight():
                return
            if time.monotonic() > deadline:
                self.outcome.notes.append(f"{worker.label} ran no handler within {BUSY_TIMEOUT_S:g} s before its kill")
                return
            await asyncio.sleep(BUSY_POLL_S)

    async def load_over(self) -> None:
        """Wait until the producer has finished (it has its own deadline)."""
        await asyncio.wait([self.producing])

    async def kill_leader(self, stream: str) -> tuple[int, FaultRecord]:
        """SIGKILL the cluster node that leads ``stream``; returns its index and the fault."""
        servers = self.cluster.servers
        names = [server.server_name or "" for server in servers]
        leader = await stream_leader(self.client, stream, [n for n, s in zip(names, servers, strict=True) if s.running])
        index = names.index(leader)
        fault = self.timeline.begin(f"SIGKILL {leader} (leader of {stream})")
        self.cluster.kill(index)
        self.timeline.node_down(index)
        return index, fault

    async def restart_node(self, index: int, fault: FaultRecord) -> None:
        await self.cluster.restart(index)
        self.timeline.node_up(index)
        self.timeline.end(fault)


async def stream_leader(client: asyncjobs.Client, stream: str, candidates: Sequence[str]) -> str:
    """The server name of ``stream``'s leader, once it is one of ``candidates`` (polled through elections).

    Raises:
        TimeoutError: no such leader within ``LEADER_TIMEOUT_S``.
    """
    last: object = None
    deadline = time.monotonic() + LEADER_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            reply = await client.nc.request(f"{JS_API_PREFIX}.STREAM.INFO.{stream}", b"", timeout=2)
            last = json.loads(reply.data).get("cluster", {}).get("leader")
        except (nats.errors.Error, ValueError) as exc:
            last = exc
        if isinstance(last, str) and last in candidates:
            return last
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{stream} has no leader among {list(candidates)} after {LEADER_TIMEOUT_S:g} s: {last!r}")


# ---- the scenarios ----------------------------------------------------------------------------------------------


async def worker_sigkill(run: Run) -> None:
    await run.reach(1 / 3)
    victim = run.pool.workers[0]
    await run.handler_running(victim)
    fault = run.timeline.begin(f"SIGKILL {victim.label}, then start a replacement (until it is connected)")
    await victim.kill()
    run.victim = victim
    await run.pool.spawn()
    run.timeline.end(fault)


async def server_restart(run: Run) -> None:
    await run.reach(1 / 3)
    fault = run.timeline.begin("SIGKILL the nats-server, restart it at once (same port and store)")
    run.server.kill()
    await run.server.restart()
    run.timeline.end(fault)


async def server_outage(run: Run) -> None:
    await run.reach(1 / 3)
    fault = run.timeline.begin(f"SIGKILL the nats-server, restart it {run.settings.outage_s:g} s later")
    run.server.kill()
    await asyncio.sleep(run.settings.outage_s)  # the outage itself, not a wait for state
    await run.server.restart()
    run.timeline.end(fault)


async def cluster_restart(run: Run) -> None:
    await run.reach(1 / 3)
    first, fault = await run.kill_leader(run.client.queue.stream)
    await asyncio.sleep(run.settings.node_down_s)
    await run.restart_node(first, fault)
    await run.reach(2 / 3)
    second, fault = await run.kill_leader(TASKS_STREAM)
    await asyncio.sleep(run.settings.node_down_s)
    await run.restart_node(second, fault)


async def cluster_outage(run: Run) -> None:
    await run.reach(1 / 3)
    first, first_fault = await run.kill_leader(run.client.queue.stream)
    await run.reach(2 / 3)
    second, fault = await run.kill_leader(TASKS_STREAM)
    await asyncio.sleep(run.settings.node_down_s)
    await run.restart_node(second, fault)
    await run.load_over()
    await run.restart_node(first, first_fault)


@dataclass(frozen=True)
class Scenario:
    description: str
    script: Callable[[Run], Awaitable[None]]
    cluster: bool = False


SCENARIOS: Final = {
    "worker-sigkill": Scenario(
        "One nats-server; at a third of the tasks done one of the two worker processes is SIGKILLed while it runs a "
        "handler, and a replacement is started at once.",
        worker_sigkill,
    ),
    "server-restart": Scenario(
        "One nats-server; at a third of the tasks done it is SIGKILLed and restarted at once on the same port and "
        "store; workers and producer stay up and reconnect.",
        server_restart,
    ),
    "server-outage": Scenario(
        "One nats-server; at a third of the tasks done it is SIGKILLed and restarted 10 s later; the producer keeps "
        "enqueueing through the outage, retrying each failed enqueue with the same Task object.",
        server_outage,
    ),
    "cluster-restart": Scenario(
        "Three-node cluster, replicas=3 (4a): at a third of the tasks done the leader of the queue stream is "
        "SIGKILLed and restarted 5 s later; at two thirds the leader of CHORIA_AJ_TASKS, restarted 5 s later.",
        cluster_restart,
        cluster=True,
    ),
    "cluster-outage": Scenario(
        "Three-node cluster, replicas=3 (4b): at a third of the tasks done the leader of the queue stream is "
        "SIGKILLed and stays down until the load is over; at two thirds the leader of CHORIA_AJ_TASKS is SIGKILLed "
        "too (quorum is lost) and restarted 5 s later.",
        cluster_outage,
        cluster=True,
    ),
}
