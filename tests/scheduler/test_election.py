"""Leader election against real nats-servers: one leader at a time, fast hand-over, and failover within the TTL."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest

import asyncjobs
from asyncjobs.constants import ELECTIONS_BUCKET
from asyncjobs.kv import KeyValue
from asyncjobs.metrics import METRICS
from asyncjobs.server import NatsServer
from asyncjobs.testing import eventually
from asyncjobs_scheduler.clock import ManualClock
from asyncjobs_scheduler.election import Election, ElectionState
from tests.core.conftest import Command
from tests.scheduler.conftest import ClientFactory

TTL_S = 10.0
"""The TTL of the elections bucket the client creates."""
SAMPLE_S = 0.01

CRASHING_CANDIDATE = """
import asyncio, sys
import asyncjobs
from asyncjobs.constants import ELECTIONS_BUCKET
from asyncjobs_scheduler.election import Election

async def main() -> None:
    client = await asyncjobs.connect(sys.argv[1], no_storage_init=True)
    won = lambda: print("leader", flush=True, file=sys.stderr)
    await Election(client.key_value(ELECTIONS_BUCKET), sys.argv[2], "crashing", on_won=won).run()

asyncio.run(main())
"""


class Candidates:
    """Elections running in the background, with a sampler that fails the test if two ever lead at once."""

    def __init__(self) -> None:
        self.elections: list[Election] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.overlaps: list[list[str]] = []
        self.samples = 0
        self._sampler: asyncio.Task[None] | None = None

    def start(self, election: Election) -> Election:
        self.elections.append(election)
        self.tasks.append(asyncio.create_task(election.run()))
        if self._sampler is None:
            self._sampler = asyncio.create_task(self._sample())
        return election

    async def _sample(self) -> None:
        while True:
            leaders = [e.name for e in self.elections if e.is_leader]
            self.samples += 1
            if len(leaders) > 1:
                self.overlaps.append(leaders)
            await asyncio.sleep(SAMPLE_S)

    def leaders(self) -> list[Election]:
        return [e for e in self.elections if e.is_leader]

    async def leader(self, *, timeout: float = 10.0) -> Election:
        def one() -> Election:
            leaders = self.leaders()
            assert len(leaders) == 1, leaders
            return leaders[0]

        return await eventually(one, timeout=timeout, message="exactly one leader")

    async def stop(self) -> None:
        tasks, self.tasks = [*self.tasks, *([self._sampler] if self._sampler else [])], []
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert not self.overlaps, f"two leaders at once: {self.overlaps[:5]}"


@pytest.fixture
async def candidates() -> AsyncIterator[Candidates]:
    group = Candidates()
    try:
        yield group
    finally:
        await group.stop()


async def _bucket(make_client: ClientFactory) -> KeyValue:
    client = await make_client(queue="ELECT")
    return client.key_value(ELECTIONS_BUCKET)


def _recorder(log: list[str], what: str) -> Callable[[], None]:
    return lambda: log.append(what)


async def test_a_lone_candidate_wins_at_once_and_gives_up_the_key_when_stopped(make_client: ClientFactory) -> None:
    kv = await _bucket(make_client)
    calls: list[str] = []
    election = Election(kv, "lone", "alpha", on_won=_recorder(calls, "won"), on_lost=_recorder(calls, "lost"))
    assert election.state == ElectionState.UNKNOWN and not election.is_leader
    started = time.monotonic()
    task = asyncio.create_task(election.run())
    await eventually(lambda: election.is_leader)
    assert time.monotonic() - started < 1.0
    assert election.state == ElectionState.LEADER and calls == ["won"]
    entry = await kv.get("lone")
    assert entry is not None and entry.value == b"alpha"
    assert METRICS.election_leader.value("lone", "alpha") == 1
    assert METRICS.election_interval_seconds.value("lone", "alpha") == TTL_S / 4
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert calls == ["won", "lost"] and not election.is_leader
    assert await kv.get("lone") is None  # deleted, so a successor need not wait for the TTL
    assert METRICS.election_leader.value("lone", "alpha") == 0


async def test_three_candidates_never_lead_together_and_hand_over_within_a_second(
    make_client: ClientFactory, candidates: Candidates
) -> None:
    kvs = [await _bucket(make_client) for _ in range(3)]
    for n, kv in enumerate(kvs):
        candidates.start(Election(kv, "trio", f"c{n}"))
    first = await candidates.leader()
    # Across a renewal (every TTL/4) nobody else takes over.
    await asyncio.sleep(TTL_S / 4 + 0.5)
    assert candidates.leaders() == [first]
    started = time.monotonic()
    await first.resign()
    assert not first.is_leader
    second = await candidates.leader(timeout=2.0)
    assert second is not first and time.monotonic() - started < 1.0
    started = time.monotonic()
    await second.resign()
    third = await candidates.leader(timeout=2.0)
    assert third not in (first, second) and time.monotonic() - started < 1.0
    assert candidates.samples > 100


async def test_losing_the_key_to_a_write_or_delete_ends_leadership_promptly(
    make_client: ClientFactory, candidates: Candidates
) -> None:
    kv = await _bucket(make_client)
    calls: list[str] = []
    election = candidates.start(
        Election(kv, "taken", "alpha", on_won=_recorder(calls, "won"), on_lost=_recorder(calls, "lost"))
    )
    await candidates.leader()
    await kv.put("taken", b"intruder")
    await eventually(lambda: calls == ["won", "lost"], timeout=1.0)
    assert not election.is_leader
    # Deleting the intruder's value: the candidate campaigns at once rather than at its next tick.
    await kv.delete("taken")
    await eventually(lambda: election.is_leader, timeout=1.0)
    assert calls == ["won", "lost", "won"]


async def test_a_leader_that_cannot_renew_stops_leading_before_the_key_expires(make_client: ClientFactory) -> None:
    class Unreachable(KeyValue):
        """Creates work (an update at revision 0); every renewal hangs, as if the server were out of reach."""

        async def update(self, key: str, value: bytes, *, revision: int) -> int:
            if revision == 0:
                return await super().update(key, value, revision=revision)
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    client = await make_client(queue="ELECT")
    kv = Unreachable(client.key_value(ELECTIONS_BUCKET).js, ELECTIONS_BUCKET)
    clock = ManualClock(datetime.now(UTC))
    election = Election(kv, "stalled", "alpha", clock=clock)
    task = asyncio.create_task(election.run())
    try:
        await eventually(lambda: election.is_leader)
        won_at = clock.now()
        written = await kv.get("stalled")
        assert written is not None
        clock.advance(TTL_S / 4)  # the renewal starts and hangs
        await clock.wait_for_sleepers(0)
        assert election.is_leader
        clock.advance(TTL_S - 2.0 - TTL_S / 4)  # the lease ends 2 s before the key could expire
        assert not election.is_leader
        assert (clock.now() - won_at).total_seconds() < TTL_S
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_bucket_must_have_a_ttl_go_accepts(make_client: ClientFactory) -> None:
    client = await make_client(queue="ELECT")
    with pytest.raises(asyncjobs.ConfigurationError, match="between 10s and 3600s"):
        Election(client.key_value(ELECTIONS_BUCKET), "k", "n", ttl_s=5)
    # The configuration bucket keeps values forever: a crashed leader would hold such a key for good.
    election = Election(client.key_value("CHORIA_AJ_CONFIGURATION"), "k", "n")
    with pytest.raises(asyncjobs.ConfigurationError, match="got none"):
        await election.run()
    with pytest.raises(asyncjobs.ConfigurationError):
        Election(client.key_value(ELECTIONS_BUCKET), "", "n")


@pytest.mark.slow
async def test_a_crashed_leader_is_replaced_within_the_ttl_plus_a_second(
    nats_url: str, make_client: ClientFactory, candidates: Candidates
) -> None:
    kv = await _bucket(make_client)
    crashing = Command()
    crashing.args = ["-c", CRASHING_CANDIDATE, nats_url, "crash"]
    await crashing.start()
    try:
        await crashing.wait_line("leader", timeout=15)
        successor = candidates.start(Election(kv, "crash", "successor"))
        await asyncio.sleep(0.5)  # the successor is watching and has found the key taken
        assert not successor.is_leader
        crashing.signal(9)
        killed = time.monotonic()
        await crashing.wait()
        await eventually(lambda: successor.is_leader, timeout=TTL_S + 2)
        assert time.monotonic() - killed <= TTL_S + 1.0
    finally:
        await crashing.kill()


@pytest.mark.slow
async def test_the_election_rides_out_a_server_restart(candidates: Candidates) -> None:
    async with NatsServer() as server:
        clients = [await asyncjobs.connect(server.url, queue="ELECT", retry_window=30) for _ in range(2)]
        try:
            for n, client in enumerate(clients):
                candidates.start(Election(client.key_value(ELECTIONS_BUCKET), "restart", f"c{n}"))
            first = await candidates.leader()
            await server.restart()
            await eventually(lambda: all(client.nc.is_connected for client in clients), timeout=TTL_S)
            # The leader renewed through the outage (its lease outlasts a short one) ...
            await asyncio.sleep(TTL_S / 4 + 0.5)
            assert candidates.leaders() == [first]
            # ... and the other candidate's watch came back with the server: a resignation is seen at once.
            started = time.monotonic()
            await first.resign()
            second = await candidates.leader(timeout=5.0)
            assert second is not first and time.monotonic() - started < 1.0
        finally:
            await candidates.stop()
            for client in clients:
                await client.close()
