"""Our scheduler beside upstream's: schedules written by one read by the other, and mixed Go/Python fleets.

Go's side is the Go peer (``ajgo cron-add``/``cron-list``/``scheduler`` and ``ajc``, see tests/scheduler/go_peer.py);
every test skips when its binaries cannot be found (the ``go_peer`` fixture, tests/scheduler/conftest.py).

Facts about Go's scheduler these tests rely on (docs/protocol.md, Scheduled tasks and Leader election):

* it campaigns after a random 0-5 s splay, then every 7.5 s, and announces (starts firing, publishes the leader
  event) one campaign interval after its create won the key; it never deletes the key when it stops;
* it fires tasks with fresh KSUID ids and its own wall-clock ``created`` time, JSON-encoding the stored payload bytes
  once more (so its tasks carry a JSON string of the payload's base64);
* it reads cron fields in the host's local time unless the spec has a ``CRON_TZ=`` prefix, and ``@every`` counts
  from when it registered the schedule. For ``@every 1s`` that is every whole second, the same instants as ours
  (ours count from the schedule's ``created_at`` to the whole second), whatever the host's zone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson
import pytest

import asyncjobs
from asyncjobs.codec import LeaderElectedEvent
from asyncjobs.constants import CONFIG_BUCKET, ELECTIONS_BUCKET
from asyncjobs.kv import KeyValue
from asyncjobs.testing import eventually
from asyncjobs.wiretime import NS_PER_SECOND, format_time
from asyncjobs_scheduler import Schedule, Scheduler, Schedules
from asyncjobs_scheduler.codec import go_task_payload
from asyncjobs_scheduler.constants import ELECTION_KEY, SCHEDULE_KEY_PREFIX
from asyncjobs_scheduler.firing import MISFIRE_GRACE_S
from tests.scheduler.conftest import ClientFactory
from tests.scheduler.go_peer import GO_BECAME_LEADER, GoScheduler, ajc, ajgo

log = logging.getLogger(__name__)

TTL_S: Final = 10.0
GO_INTERVAL_S: Final = 7.5
GO_SPLAY_S: Final = 5.0
GO_ANNOUNCE_TIMEOUT_S: Final = GO_SPLAY_S + GO_INTERVAL_S + 3
"""A fresh Go scheduler with nobody else campaigning: splay, create, one interval, announce."""
SAMPLE_INTERVAL_S: Final = 0.05
GO_RENEWING: Final = "Campaigning for leadership while in state leader"
PAYLOAD: Final = b'{"to":"user@example.net","subject":"hi"}'


@contextlib.asynccontextmanager
async def running(*schedulers: Scheduler) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Our schedulers in tasks; cancelling one is its graceful stop (a leader deletes the election key)."""
    tasks = [asyncio.create_task(s.run(), name=f"scheduler {s.name}") for s in schedulers]
    try:
        yield tasks
    finally:
        await stop(*tasks)


async def stop(*tasks: asyncio.Task[None]) -> float:
    stopped = time.time()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return stopped


async def tasks_of(client: asyncjobs.Client, task_type: str) -> list[asyncjobs.Task]:
    return [task async for task in client.admin.tasks(task_type=task_type)]


def second(task: asyncjobs.Task) -> int:
    """The due second of a scheduled task: ours are created at their due instant, Go's a few ms after it."""
    return task.created_at.unix_ns // NS_PER_SECOND


def gaps(seconds: list[int]) -> list[int]:
    """The seconds missing between the first and the last of ``seconds``."""
    return sorted(set(range(min(seconds), max(seconds) + 1)) - set(seconds)) if seconds else []


@pytest.fixture
async def go_schedulers() -> AsyncIterator[list[GoScheduler]]:
    started: list[GoScheduler] = []
    yield started
    for scheduler in started:
        await scheduler.kill()


async def start_go(go_schedulers: list[GoScheduler], go_peer: Path, url: str, queue: str, name: str) -> GoScheduler:
    go = GoScheduler(go_peer, url, queue=queue, name=name, run_for_s=90)
    go_schedulers.append(go)
    await go.start()
    return go


# ---- schedules written by one side, read by the other ---------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_schedule_added_by_go_is_read_and_fired_by_ours(
    go_peer: Path, nats_url: str, make_client: ClientFactory
) -> None:
    client = await make_client(queue="GOCRON")
    added = await ajgo(go_peer, nats_url, "cron-add", "--queue", "GOCRON", "--bind", "--name", "from-go",
                       "--schedule", "@every 1s", "--type", "go:report", "--payload", PAYLOAD.decode(),
                       "--deadline", "1h", "--max-tries", "3")  # fmt: skip
    stored = added[0]["scheduled"]
    assert stored["deadline"] == 3600 * NS_PER_SECOND  # Go rounds the task's time to its deadline to the second

    schedules = Schedules(client)
    schedule = await schedules.get("from-go")
    assert (schedule.name, schedule.spec, schedule.timezone) == ("from-go", "@every 1s", "UTC")
    assert (schedule.queue, schedule.task_type, schedule.payload) == ("GOCRON", "go:report", PAYLOAD)
    assert (schedule.deadline, schedule.max_tries, schedule.paused) == (3600.0, 3, False)
    assert schedule.created_at is not None and format_time(schedule.created_at) == stored["created_at"]
    assert await schedules.list() == [schedule]

    scheduler = Scheduler(client, name="py")
    async with running(scheduler):
        await eventually(lambda: scheduler.is_leader, message="our scheduler leads")

        async def two_fired() -> list[asyncjobs.Task]:
            found = await tasks_of(client, "go:report")
            assert len(found) >= 2
            return found

        fired = await eventually(two_fired, timeout=10, message="our scheduler fired Go's schedule")
    for task in fired:
        assert (task.type, task.queue, task.max_tries) == ("go:report", "GOCRON", 3)
        assert task.id == schedule.task_id(task.created)  # ours: one id per due time, not a KSUID
        assert task.deadline_at is not None
        assert task.deadline_at.unix_ns - task.created_at.unix_ns == 3600 * NS_PER_SECOND
        # Ours fires the stored payload bytes as they are, so a handler gets the JSON object Go's cron-add was given.
        # Go's scheduler would send go_task_payload(PAYLOAD): the JSON string of their base64 (upstream's double
        # encoding; test_go_scheduler_fires_our_schedule shows it).
        assert task.payload == PAYLOAD
    assert not gaps([second(task) for task in fired])

    # Go loads the tasks ours fired.
    loaded = (await ajgo(go_peer, nats_url, "get", "--id", fired[0].id))[0]
    assert (loaded["id"], loaded["type"], loaded["queue"]) == (fired[0].id, "go:report", "GOCRON")
    assert loaded["max_tries"] == 3
    assert base64.b64decode(loaded["payload_b64"]) == PAYLOAD
    assert loaded["created_ns"] == fired[0].created_at.unix_ns


@pytest.mark.timeout(30)
async def test_schedules_added_by_ours_are_listed_by_go(
    go_peer: Path, nats_url: str, make_client: ClientFactory, tmp_path: Path
) -> None:
    client = await make_client(queue="PYCRON")
    schedules = Schedules(client)
    daily = await schedules.add(Schedule("py-daily", "0 6 * * *", "py:daily", {"k": "v"}))
    # A zone other than UTC travels as a CRON_TZ= prefix, which Go's cron parser reads; our extra settings
    # (misfire here) are fields Go ignores.
    berlin = await schedules.add(Schedule("py-berlin", "0 9 * * 1-5", "py:berlin", timezone="Europe/Berlin",
                                          deadline=120, max_tries=4, misfire="skip"))  # fmt: skip
    assert daily.created_at is not None and berlin.created_at is not None
    expected: dict[str, dict[str, object]] = {
        "py-daily": {"name": "py-daily", "schedule": "0 6 * * *", "queue": "PYCRON", "task_type": "py:daily",
                     "payload": base64.b64encode(b'{"k":"v"}').decode(), "max_tries": 10,
                     "created_at": format_time(daily.created_at)},
        "py-berlin": {"name": "py-berlin", "schedule": "CRON_TZ=Europe/Berlin 0 9 * * 1-5", "queue": "PYCRON",
                      "task_type": "py:berlin", "payload": None, "deadline": 120 * NS_PER_SECOND, "max_tries": 4,
                      "created_at": format_time(berlin.created_at)},
    }  # fmt: skip

    listed = {entry["name"]: entry for entry in await ajgo(go_peer, nats_url, "cron-list") if "name" in entry}
    assert listed == expected

    names = await ajc(go_peer, nats_url, tmp_path, "tasks", "cron", "list", "--names")
    assert sorted(names.split()) == ["py-berlin", "py-daily"]
    for name, fields in expected.items():
        viewed = orjson.loads(await ajc(go_peer, nats_url, tmp_path, "tasks", "cron", "view", "--json", name))
        assert {key: viewed.get(key) for key in fields} == fields
    table = await ajc(go_peer, nats_url, tmp_path, "tasks", "cron", "list")
    assert "CRON_TZ=Europe/Berlin 0 9 * * 1-5" in table and "2 Scheduled Task(s)" in table


@pytest.mark.timeout(30)
async def test_keys_in_any_case_and_old_spellings(go_peer: Path, nats_url: str, make_client: ClientFactory) -> None:
    client = await make_client(queue="OLDCRON")
    # Keys in another case (Go's encoding/json matches them regardless of case), and the untagged field names of
    # old Go versions, as upstream's documentation still shows them.
    value = {"NAME": "old-keys", "Schedule": "0 9 * * *", "QUEUE": "OLDCRON", "Task_Type": "old:type",
             "Payload": base64.b64encode(PAYLOAD).decode(), "Deadline": 60 * NS_PER_SECOND, "MaxTries": 5,
             "Created_At": "2022-02-17T17:40:37.001480991Z"}  # fmt: skip
    await client.key_value(CONFIG_BUCKET).put(SCHEDULE_KEY_PREFIX + "old-keys", orjson.dumps(value))

    theirs = [e for e in await ajgo(go_peer, nats_url, "cron-list") if e.get("name") == "old-keys"]
    ours = await Schedules(client).get("old-keys")
    assert theirs == [{"name": "old-keys", "schedule": "0 9 * * *", "queue": "OLDCRON", "task_type": "old:type",
                       "payload": value["Payload"], "deadline": 60 * NS_PER_SECOND,
                       "max_tries": 0, "created_at": "2022-02-17T17:40:37.001480991Z"}]  # fmt: skip
    assert (ours.name, ours.spec, ours.queue, ours.task_type, ours.payload) == (
        "old-keys", "0 9 * * *", "OLDCRON", "old:type", PAYLOAD)  # fmt: skip
    assert ours.deadline == 60.0 and ours.created_at is not None
    assert format_time(ours.created_at) == "2022-02-17T17:40:37.001480991Z"
    # "MaxTries" (no underscore) is not Go's current key "max_tries" for encoding/json, so Go reads 0 (the task
    # default, 10, when it fires); ours also reads the old spelling, as the old Go that wrote it did.
    assert ours.max_tries == 5


# ---- Go's scheduler fires our schedules -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_go_scheduler_fires_our_schedule(
    go_peer: Path, nats_url: str, make_client: ClientFactory, go_schedulers: list[GoScheduler]
) -> None:
    client = await make_client(queue="GOFIRE")
    schedules = Schedules(client)
    every = await schedules.add(Schedule("py-every", "@every 1s", "py:tick", PAYLOAD, deadline=60, max_tries=4))
    await schedules.add(Schedule("py-kolkata", "30 9 * * *", "py:kolkata", timezone="Asia/Kolkata"))

    go = await start_go(go_schedulers, go_peer, nats_url, "GOFIRE", "go1")
    await eventually(lambda: go.logged(GO_BECAME_LEADER), timeout=GO_ANNOUNCE_TIMEOUT_S, message="Go leads")

    async def three_fired() -> list[asyncjobs.Task]:
        found = await tasks_of(client, "py:tick")
        assert len(found) >= 3
        return found

    fired = await eventually(three_fired, timeout=10, message="Go fired our schedule")
    await go.stop()
    assert {line.split(": ", 1)[-1] for line in go.lines("Registered a new item")} == {
        "@every 1s", "CRON_TZ=Asia/Kolkata 30 9 * * *"}  # fmt: skip
    assert not [line for _, line in go.log if " ERRO" in line or " WARN" in line]

    fired = await tasks_of(client, "py:tick")
    assert {task.id for task in fired} == set(go.created)  # Go's own KSUIDs, not our <name>:<due> ids
    became = go.logged(GO_BECAME_LEADER)[0]
    for task in fired:
        assert ":" not in task.id and len(task.id) == 27
        assert (task.type, task.queue, task.max_tries) == ("py:tick", "GOFIRE", 4)
        assert task.payload == go_task_payload(every.payload)  # Go encodes the stored bytes once more
        assert task.deadline_at is not None
        assert abs(task.deadline_at.unix_ns - task.created_at.unix_ns - 60 * NS_PER_SECOND) < NS_PER_SECOND
        assert became - 1 < task.created.timestamp()
    # Go's @every 1s ticks on whole seconds: one task per second, none twice.
    seconds = [second(task) for task in fired]
    assert len(set(seconds)) == len(seconds) and not gaps(seconds)


# ---- a mixed fleet -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float
    leading: frozenset[str]
    """Ours that led both before and after the key was read."""
    any_leading: frozenset[str]
    """Ours that led before or after."""
    holder: bytes | None


@contextlib.asynccontextmanager
async def sampling(kv: KeyValue, schedulers: list[Scheduler]) -> AsyncIterator[list[Sample]]:
    """Every 50 ms: which of ``schedulers`` lead, and the election key's value."""
    samples: list[Sample] = []

    async def sample() -> None:
        while True:
            before = {s.name for s in schedulers if s.is_leader}
            entry = await kv.get(ELECTION_KEY)
            after = {s.name for s in schedulers if s.is_leader}
            holder = None if entry is None else entry.value
            samples.append(Sample(time.time(), frozenset(before & after), frozenset(before | after), holder))
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    sampler = asyncio.create_task(sample())
    try:
        yield samples
    finally:
        await stop(sampler)


@contextlib.asynccontextmanager
async def leader_events(client: asyncjobs.Client) -> AsyncIterator[list[tuple[float, str]]]:
    """The scheduler leader events (Go's and ours), with when each arrived."""
    seen: list[tuple[float, str]] = []

    async def collect(events: AsyncIterator[object]) -> None:
        async for event in events:
            if isinstance(event, LeaderElectedEvent) and event.component == ELECTION_KEY:
                seen.append((time.time(), event.name))

    async with client.events() as events:  # subscribed on entry: no event is missed
        collector = asyncio.create_task(collect(events))
        try:
            yield seen
        finally:
            await stop(collector)


def terms(samples: list[Sample], name: str) -> list[tuple[float, float]]:
    """The sampled leadership terms of one of ours."""
    found: list[tuple[float, float]] = []
    start = last = None
    for s in samples:
        if name in s.any_leading:
            start = s.at if start is None else start
            last = s.at
        elif start is not None and last is not None:
            found.append((start, last))
            start = None
    if start is not None and last is not None:
        found.append((start, last))
    return found


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_mixed_fleet_one_leader_and_about_one_task_per_due_time(
    go_peer: Path, nats_url: str, make_client: ClientFactory, go_schedulers: list[GoScheduler]
) -> None:
    """Ours and Go's side by side on an @every 1s schedule: ours leads, hands over to Go, and takes over from Go."""
    client = await make_client(queue="MIXED")
    schedule = await Schedules(client).add(Schedule("mixed-every", "@every 1s", "mixed:tick"))
    assert schedule.created is not None
    py1, py2 = Scheduler(client, name="py1"), Scheduler(client, name="py2")
    ours: list[Scheduler] = [py1]
    async with leader_events(client) as events, sampling(client.key_value(ELECTIONS_BUCKET), ours) as samples:
        py1_run = asyncio.create_task(py1.run())
        py2_run: asyncio.Task[None] | None = None
        try:
            # 1. Ours leads at once; Go joins, campaigns after its splay and loses while ours holds the key.
            await eventually(lambda: py1.is_leader, message="py1 leads")
            go = await start_go(go_schedulers, go_peer, nats_url, "MIXED", "go1")
            go_started = time.time()
            await eventually(lambda: go.logged("Campaigning for leadership"), timeout=GO_SPLAY_S + 1)
            await asyncio.sleep(max(0.0, go_started + 6 - time.time()))  # both run a while
            assert py1.is_leader and not go.logged(GO_BECAME_LEADER)

            # 2. Ours stops gracefully (deletes the key): Go's next campaign wins it and announces one interval later.
            py1_stopped = await stop(py1_run)
            await eventually(lambda: go.logged(GO_BECAME_LEADER), timeout=2 * GO_INTERVAL_S + 2, message="Go leads")
            go_took_over = go.logged(GO_BECAME_LEADER)[0] - py1_stopped

            # 3. Another of ours waits while Go leads (Go renews every 7.5 s: the key never expires) ...
            ours.append(py2)
            py2_run = asyncio.create_task(py2.run())
            # Stop Go 1 s before its next renewal (its announcement was one), so its key outlives it by only
            # ~3.5 s: the worst case for due times fired twice at the handover (see below).
            last_renewal = go.logged(GO_RENEWING)[-1]
            await asyncio.sleep(max(0.0, last_renewal + GO_INTERVAL_S - 1 - time.time()))
            assert len(go.created) >= 4 and not py2.is_leader

            # 4. ... and takes over once the key Go left expires: Go never deletes it.
            go_stopped = await go.stop()
            await eventually(lambda: py2.is_leader, timeout=TTL_S + 2, message="py2 leads")
            py_took_over = time.time() - go_stopped
            await eventually(lambda: events and events[-1][1] == "py2", message="py2's leader event")
            await asyncio.sleep(3)  # py2 fires a few due times
            py2_stopped = await stop(py2_run)
        finally:
            await stop(*[task for task in (py1_run, py2_run) if task is not None])

    figures = f"Go led {go_took_over:.2f} s after py1 stopped, py2 {py_took_over:.2f} s after Go stopped"
    log.info("%s", figures)
    assert go_took_over <= 2 * GO_INTERVAL_S + 1, figures  # its next campaign tick, then one interval to announce
    assert py_took_over <= TTL_S + 1, figures

    # At most one leader at a time: never two of ours, never ours while Go announced it leads, and the key names
    # the leader throughout.
    go_terms = go.leading(go_stopped)
    py_terms = {name: terms(samples, name) for name in ("py1", "py2")}
    assert len(go_terms) == 1 and all(len(t) == 1 for t in py_terms.values()), (go_terms, py_terms)
    every_term = sorted([*go_terms, *py_terms["py1"], *py_terms["py2"]])
    assert all(a[1] < b[0] for a, b in itertools.pairwise(every_term)), every_term
    assert all(len(s.any_leading) <= 1 for s in samples)
    assert all(s.holder == next(iter(s.leading)).encode() for s in samples if s.leading)
    (go_start, go_end) = go_terms[0]
    assert all(s.holder == b"go1" and not s.any_leading for s in samples if go_start < s.at < go_end)
    assert [name for _, name in events] == ["py1", "go1", "py2"]

    # About one task per due time. While ours leads, every due second has exactly one task (its id is the due
    # time). Go fires once per tick of its own @every registration (whole seconds here) with a fresh id each time.
    # Due times between py1's stop and Go's announcement get no task (upstream: "during a leadership change, some
    # tasks may not be scheduled"). py2 catches up the latest missed due time (misfire=run_once) and all of the
    # last 5 s (the misfire grace) at takeover; it cannot tell which of those Go fired (Go's ids are KSUIDs and Go
    # keeps no record), so the due seconds between takeover - 6 s and Go's stop get a task from Go and one from
    # py2. Go renews every 7.5 s, so its key outlives it by 2.5 to 10 s: up to 3 such seconds (here ~2-3, as Go
    # is stopped 1 s before a renewal). Within each leader's term there is exactly one task per due second.
    fired = await tasks_of(client, "mixed:tick")
    by_py = [t for t in fired if t.id.startswith("mixed-every:")]
    by_go = [t for t in fired if not t.id.startswith("mixed-every:")]
    assert {t.id for t in by_go} == set(go.created)
    assert all(t.id == schedule.task_id(t.created) for t in by_py)
    py1_seconds = sorted(second(t) for t in by_py if t.created.timestamp() <= py1_stopped)
    py2_seconds = sorted(second(t) for t in by_py if t.created.timestamp() > py1_stopped)
    go_seconds = sorted(second(t) for t in by_go)
    for seconds in (py1_seconds, py2_seconds, go_seconds):  # one task per due time within each leader's term
        assert seconds and len(set(seconds)) == len(seconds) and not gaps(seconds)
    assert py1_seconds[0] <= schedule.created.timestamp() + 2 and py1_seconds[-1] >= py1_stopped - 2
    assert py2_seconds[-1] >= py2_stopped - 2
    assert all(go_start - 1 < t.created.timestamp() < go_stopped for t in by_go)
    assert len(go_seconds) >= go_stopped - go_start - 2
    assert not set(py1_seconds) & set(go_seconds)
    twice = sorted(set(go_seconds) & set(py2_seconds))
    py2_led = py_terms["py2"][0][0]
    assert all(py2_led - MISFIRE_GRACE_S - 1 <= s <= go_stopped for s in twice), (twice, py2_led, go_stopped)
    assert len(twice) <= MISFIRE_GRACE_S + 1 - (py2_led - go_stopped) + 1, (twice, py2_led, go_stopped)
    missed = gaps(sorted(set(py1_seconds + go_seconds + py2_seconds)))
    log.info(
        "%s",
        f"tasks: py1 {len(py1_seconds)}, Go {len(go_seconds)}, py2 {len(py2_seconds)}; due seconds without a task: "
        f"{len(missed)}; with two tasks (Go's and py2's catch-up): {len(twice)}; Go's key outlived it by "
        f"{py2_led - go_stopped:.2f} s",
    )
