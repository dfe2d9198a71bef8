"""Go and Python candidates in one election: upstream's election package (``ajgo elect``) beside ours.

Go announces a win one campaign interval (7.5 s) after its create succeeds and campaigns every 7.5 s after a random
0-5 s splay, so these tests take tens of seconds. They skip when the Go peer binaries are not available.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from asyncjobs.constants import ELECTIONS_BUCKET
from asyncjobs.testing import eventually
from asyncjobs_scheduler.election import Election
from tests.scheduler.conftest import ClientFactory

KEY = "task_scheduler"
TTL_S = 10.0
GO_INTERVAL_S = 7.5
GO_SPLAY_S = 5.0


class GoCandidate:
    """``ajgo elect`` in a subprocess; its JSON lines with the wall time (ms) each arrived."""

    def __init__(self, go_peer: Path, url: str, name: str, *, run_for_s: float) -> None:
        self.args = [str(go_peer / "ajgo"), "elect", "--url", url, "--bucket", ELECTIONS_BUCKET, "--key", KEY]
        self.args += ["--name", name, "--for", f"{run_for_s:g}s"]
        self.events: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        self._reader = asyncio.create_task(self._read())
        await eventually(lambda: self.seen("ready"), message="ajgo elect ready")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.events.append(orjson.loads(line))

    def seen(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    async def kill(self) -> float:
        """SIGKILL (a crash); returns the wall time in ms."""
        killed = time.time() * 1000
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        return killed

    def leading(self, end_ms: float) -> list[tuple[float, float]]:
        """Go's IsLeader() intervals: from each ``won`` to the next ``lost`` (or ``end_ms``)."""
        intervals, start = [], None
        for event in self.events:
            if event.get("event") == "won":
                start = float(event["t"])
            elif event.get("event") == "lost" and start is not None:
                intervals.append((start, float(event["t"])))
                start = None
        if start is not None:
            intervals.append((start, end_ms))
        return intervals


class PyCandidate:
    """An Election in a task, with its leading intervals in wall time (ms)."""

    def __init__(self, election_factory: Any, name: str) -> None:
        self.won: list[float] = []
        self.lost: list[float] = []
        self.election: Election = election_factory(name, lambda: self.won.append(time.time() * 1000),
                                                   lambda: self.lost.append(time.time() * 1000))  # fmt: skip
        self.task = asyncio.create_task(self.election.run())

    def leading(self, end_ms: float) -> list[tuple[float, float]]:
        return list(zip(self.won, [*self.lost, end_ms], strict=False))

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def _overlaps(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[Any, Any]]:
    return [(x, y) for x in a for y in b if x[0] < y[1] and y[0] < x[1]]


@pytest.fixture
async def go_candidates() -> AsyncIterator[list[GoCandidate]]:
    started: list[GoCandidate] = []
    yield started
    for candidate in started:
        await candidate.kill()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_go_and_python_candidates_never_lead_together(
    go_peer: Path, nats_url: str, make_client: ClientFactory, go_candidates: list[GoCandidate]
) -> None:
    client = await make_client(queue="ELECT")  # creates the elections bucket, as Go's client does
    kv = client.key_value(ELECTIONS_BUCKET)

    def election(name: str, on_won: Any, on_lost: Any) -> Election:
        return Election(kv, KEY, name, on_won=on_won, on_lost=on_lost)

    first = PyCandidate(election, "py1")
    second: PyCandidate | None = None
    try:
        await eventually(lambda: first.election.is_leader)
        go = GoCandidate(go_peer, nats_url, "go1", run_for_s=60)
        go_candidates.append(go)
        await go.start()
        # Go campaigns (after its splay) and fails while Python holds the key.
        await eventually(lambda: go.seen("campaign"), timeout=GO_SPLAY_S + 1)
        assert not go.seen("won") and first.election.is_leader
        # Python resigns: Go's next campaign wins the key and it announces one interval later.
        await first.stop()
        await eventually(lambda: go.seen("won"), timeout=2 * GO_INTERVAL_S + 2, message="Go took over")
        # A Python candidate started now must not lead while Go holds the key ...
        second = PyCandidate(election, "py2")
        await asyncio.sleep(GO_INTERVAL_S + 1)  # across one of Go's renewals
        assert not second.election.is_leader and not second.won
        # ... and replaces the Go leader within the TTL plus a second when it crashes (Go never deletes the key).
        killed = await go.kill()
        await eventually(lambda: second.election.is_leader, timeout=TTL_S + 2, message="Python took over")
        assert time.time() * 1000 - killed <= (TTL_S + 1.0) * 1000
        end = time.time() * 1000
        go_leading = go.leading(killed)
        py_leading = first.leading(end) + second.leading(end)
        assert go_leading and len(py_leading) == 2
        assert not _overlaps(go_leading, py_leading), (go_leading, py_leading)
    finally:
        await first.stop()
        if second is not None:
            await second.stop()
