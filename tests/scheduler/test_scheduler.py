"""Schedules and schedulers against a real nats-server, with a manual clock for scheduling time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import asyncjobs
from asyncjobs.constants import CONFIG_BUCKET
from asyncjobs.metrics import METRICS
from asyncjobs.testing import eventually
from asyncjobs_scheduler import (
    InvalidSchedule,
    ManualClock,
    Schedule,
    ScheduleExists,
    ScheduleNotFound,
    Scheduler,
    Schedules,
)
from asyncjobs_scheduler.codec import decode_schedule, encode_schedule
from asyncjobs_scheduler.constants import SCHEDULE_KEY_PREFIX

ClientFactory = Callable[..., Awaitable[asyncjobs.Client]]
START = datetime(2026, 3, 2, 9, 0, 30, tzinfo=UTC)


@pytest_asyncio.fixture
async def make_client(nats_url: str) -> AsyncIterator[ClientFactory]:
    clients: list[asyncjobs.Client] = []

    async def make(**options: Any) -> asyncjobs.Client:
        options.setdefault("queue", "SCHED")
        client = await asyncjobs.connect(nats_url, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@contextlib.asynccontextmanager
async def running(*schedulers: Scheduler) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks = [asyncio.create_task(s.run()) for s in schedulers]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def leader(*schedulers: Scheduler, timeout: float = 20) -> Scheduler:
    async def one() -> Scheduler | None:
        leading = [s for s in schedulers if s.is_leader]
        assert len(leading) <= 1, "two leaders at once"
        return leading[0] if leading else None

    return await eventually(one, timeout=timeout, message="a leader")


async def task_ids(client: asyncjobs.Client, prefix: str) -> list[str]:
    return sorted([t.id async for t in client.admin.tasks() if t.id.startswith(prefix)])


async def test_schedules_crud(make_client: ClientFactory) -> None:
    client = await make_client()
    schedules = Schedules(client)
    added = await schedules.add(Schedule("nightly", "0 2 * * *", "report:nightly", {"kind": "full"}, deadline=3600))
    assert added.queue == "SCHED" and added.created_at is not None
    with pytest.raises(ScheduleExists, match="already exists: change it with update"):
        await schedules.add(Schedule("nightly", "0 3 * * *", "report:nightly"))
    got = await schedules.get("nightly")
    assert got.spec == "0 2 * * *" and got.payload == b'{"kind":"full"}' and got.deadline == 3600

    updated = await schedules.update(Schedule("nightly", "30 2 * * *", "report:nightly", timezone="Europe/London"))
    assert updated.created_at == added.created_at  # kept: @every due times stay put
    raw = await client.key_value(CONFIG_BUCKET).get(SCHEDULE_KEY_PREFIX + "nightly")
    assert raw is not None and b'"schedule":"CRON_TZ=Europe/London 30 2 * * *"' in raw.value
    assert decode_schedule(raw.value).timezone == "Europe/London"

    assert (await schedules.pause("nightly")).paused
    assert not (await schedules.resume("nightly")).paused
    await schedules.add(Schedule("hourly", "@hourly", "report:hourly"))
    assert [s.name for s in await schedules.list()] == ["hourly", "nightly"]
    times = await schedules.next_times("hourly", 3, after=START)
    assert times == [datetime(2026, 3, 2, h, 0, tzinfo=UTC) for h in (10, 11, 12)]

    task = await schedules.trigger("hourly")
    assert (await client.get_task(task.id)).type == "report:hourly"

    await schedules.remove("hourly")
    with pytest.raises(ScheduleNotFound, match="schedule 'hourly' does not exist"):
        await schedules.get("hourly")
    with pytest.raises(ScheduleNotFound):
        await schedules.remove("hourly")
    with pytest.raises(InvalidSchedule, match="queue 'NOPE' does not exist: create it first"):
        await schedules.add(Schedule("elsewhere", "@daily", "x", queue="NOPE"))
    assert issubclass(InvalidSchedule, ValueError) and issubclass(ScheduleNotFound, asyncjobs.AsyncJobsError)


async def test_one_scheduler_fires_each_due_time_once(make_client: ClientFactory) -> None:
    client = await make_client()
    clock = ManualClock(datetime.now(UTC))
    await Schedules(client, clock=clock).add(Schedule("tick", "@every 10s", "tick", misfire="run_all"))
    scheduler = Scheduler(client, name="solo", clock=clock)
    async with running(scheduler):
        await leader(scheduler)
        for _ in range(3):
            await clock.wait_for_sleepers()
            clock.advance(10)
        await eventually(lambda: _count(client, "tick:", 3), timeout=10, message="three tasks")
    ids = await task_ids(client, "tick:")
    assert len(ids) == len(set(ids)) == 3


async def test_three_schedulers_fire_each_due_time_once(make_client: ClientFactory) -> None:
    clock = ManualClock(datetime.now(UTC))
    first = await make_client()
    await Schedules(first, clock=clock).add(Schedule("shared", "@every 5s", "shared", misfire="run_all"))
    schedulers = [Scheduler(await make_client(), name=f"s{n}", clock=clock) for n in range(3)]
    async with running(*schedulers):
        await leader(*schedulers)
        for _ in range(4):
            await clock.wait_for_sleepers()
            clock.advance(5)
        await eventually(lambda: _count(first, "shared:", 4), timeout=10, message="four tasks")
        assert sum(s.is_leader for s in schedulers) == 1
    ids = await task_ids(first, "shared:")
    assert len(ids) == len(set(ids)) == 4


async def test_a_successor_catches_up_missed_due_times(make_client: ClientFactory) -> None:
    clock = ManualClock(datetime.now(UTC))
    client = await make_client()
    every = Schedule("every", "@every 10s", "every", misfire="run_all", catchup_window=3600)
    await Schedules(client, clock=clock).add(every)
    first = Scheduler(client, name="first", clock=clock)
    async with running(first):
        await leader(first)
        clock.advance(10)
        await eventually(lambda: _count(client, "every:", 1), timeout=10, message="the first task")
    clock.advance(60)  # six due times while nobody leads
    second = Scheduler(await make_client(), name="second", clock=clock)
    async with running(second):
        await leader(second)
        await eventually(lambda: _count(client, "every:", 7), timeout=10, message="the missed six")
    ids = await task_ids(client, "every:")
    assert len(ids) == 7


async def test_changes_apply_to_a_running_scheduler(make_client: ClientFactory) -> None:
    clock = ManualClock(datetime.now(UTC))
    client = await make_client()
    schedules = Schedules(client)
    scheduler = Scheduler(client, name="watcher", clock=clock)
    async with running(scheduler):
        await leader(scheduler)
        await schedules.add(Schedule("late", "@every 10s", "late"))
        await eventually(lambda: "late" in scheduler.schedules or None, timeout=10, message="the new schedule")
        await schedules.pause("late")
        await eventually(lambda: scheduler.schedules["late"].paused or None, timeout=10, message="the pause")
        clock.advance(30)
        await asyncio.sleep(0.2)
        assert await task_ids(client, "late:") == []
        await schedules.remove("late")
        await eventually(lambda: "late" not in scheduler.schedules or None, timeout=10, message="the removal")


async def _count(client: asyncjobs.Client, prefix: str, expected: int) -> bool | None:
    return len(await task_ids(client, prefix)) >= expected or None


def test_schedule_validation_names_the_fix() -> None:
    with pytest.raises(InvalidSchedule, match="deadline"):
        Schedule("x", "@daily", "t", deadline=5)
    with pytest.raises(InvalidSchedule):
        Schedule("x", "not a spec", "t")
    assert Schedule("x", "@daily", "t").next_times(START, 1) == [
        START.replace(hour=0, minute=0, second=0) + timedelta(days=1)
    ]


@pytest.mark.parametrize(
    ("misfire", "expected"),
    [("skip", 0), ("run_once", 1), ("run_all", 6)],
)
async def test_misfire_policies_after_a_gap(make_client: ClientFactory, misfire: str, expected: int) -> None:
    clock = ManualClock(datetime.now(UTC))
    client = await make_client()
    name = f"gap_{misfire}"
    stored = await Schedules(client).add(Schedule(name, "@every 30s", "gap", misfire=misfire))
    dues = stored.next_times(clock.now(), 7)
    first = Scheduler(client, name="first", clock=clock)
    async with running(first):
        await leader(first)
    clock.set(dues[5] + timedelta(seconds=20))  # six due times pass while nobody leads, the last 20 s ago
    second = Scheduler(await make_client(), name="second", clock=clock)
    async with running(second):
        await leader(second)
        await clock.wait_for_sleepers()  # it has dealt with what was due and sleeps until the next due time
        assert len(await task_ids(client, f"{name}:")) == expected
        clock.set(dues[6])  # the next due time is on time whatever the policy
        await eventually(lambda: _count(client, f"{name}:", expected + 1), timeout=10, message="the next task")


async def test_missed_due_times_beyond_the_catchup_window_are_dropped(make_client: ClientFactory) -> None:
    clock = ManualClock(datetime.now(UTC))
    client = await make_client()
    stored = await Schedules(client).add(Schedule("window", "@every 30s", "w", misfire="run_all", catchup_window=70))
    dues = stored.next_times(clock.now(), 12)
    scheduler = Scheduler(client, name="late", clock=clock)
    clock.set(dues[11] + timedelta(seconds=20))  # twelve missed due times (20 s to 350 s ago), two within 70 s
    async with running(scheduler):
        await leader(scheduler)
        await clock.wait_for_sleepers()
    assert await task_ids(client, "window:") == sorted(stored.task_id(due) for due in dues[10:])


async def test_a_stored_task_without_its_item_is_completed_not_skipped(make_client: ClientFactory) -> None:
    clock = ManualClock(datetime.now(UTC))
    client = await make_client()
    stored = await Schedules(client).add(Schedule("half", "@every 10s", "half"))
    due = stored.next_times(clock.now(), 1)[0]
    # An earlier leader stored the task of this due time and died before publishing its work item.
    task = asyncjobs.Task("half", None, id=stored.task_id(due), max_tries=stored.task_max_tries)
    task.created_at = asyncjobs.wiretime.WireTime.from_datetime(due)
    task.queue = "SCHED"
    await client._storage.save_task(task)
    assert (await client.admin.queue_info("SCHED")).items == 0
    scheduler = Scheduler(client, name="finisher", clock=clock)
    async with running(scheduler):
        await leader(scheduler)
        clock.set(due + timedelta(seconds=1))
        await eventually(lambda: _items(client, 1), timeout=10, message="the work item of the half-enqueued task")
    assert await task_ids(client, "half:") == [task.id]


async def _items(client: asyncjobs.Client, expected: int) -> bool | None:
    return (await client.admin.queue_info("SCHED")).items >= expected or None


async def test_overlap_skip_waits_for_the_previous_task(make_client: ClientFactory) -> None:
    clock = ManualClock(datetime.now(UTC))
    client = await make_client()
    await Schedules(client, clock=clock).add(Schedule("busy", "@every 10s", "busy", overlap="skip"))
    scheduler = Scheduler(client, name="overlap", clock=clock)
    async with running(scheduler):
        await leader(scheduler)
        for _ in range(3):  # nothing processes the tasks: the first stays `new`, so the next two are skipped
            await clock.wait_for_sleepers()
            clock.advance(10)
        await clock.wait_for_sleepers()
        ids = await task_ids(client, "busy:")
        assert len(ids) == 1
        router = asyncjobs.Router()

        @router.handler("busy")
        async def done(task: asyncjobs.Task) -> None:
            return None

        await client.run(router, until_idle=True)  # the first task completes
        clock.advance(10)
        await eventually(lambda: _count(client, "busy:", 2), timeout=10, message="the next task")


async def test_jitter_delays_the_task_the_same_way_everywhere(make_client: ClientFactory) -> None:
    clock = ManualClock(datetime.now(UTC))
    client = await make_client()
    stored = await Schedules(client).add(Schedule("jit", "@every 60s", "jit", jitter=30))
    due = stored.next_times(clock.now(), 1)[0]
    fire_at = stored.jittered(due)
    assert due <= fire_at <= due + timedelta(seconds=30)
    scheduler = Scheduler(client, name="jitter", clock=clock)
    async with running(scheduler):
        await leader(scheduler)
        clock.set(due)
        await clock.wait_for_sleepers()
        if fire_at > due:
            assert await task_ids(client, "jit:") == []
        clock.set(fire_at)
        await eventually(lambda: _count(client, "jit:", 1), timeout=10, message="the jittered task")
    assert await task_ids(client, "jit:") == [stored.task_id(due)]


async def test_a_new_leader_announces_itself_and_counts_what_it_fires(make_client: ClientFactory) -> None:
    clock = ManualClock(datetime.now(UTC))
    client = await make_client()
    await Schedules(client, clock=clock).add(Schedule("counted", "@every 10s", "counted"))
    before = METRICS.scheduler_scheduled_count.value("counted", "SCHED")
    async with client.events() as events:
        scheduler = Scheduler(client, name="announcer", clock=clock)
        async with running(scheduler):
            await leader(scheduler)

            async def announced() -> asyncjobs.LeaderElectedEvent | None:
                event = await anext(events)
                return event if isinstance(event, asyncjobs.LeaderElectedEvent) else None

            event = await eventually(announced, timeout=10, message="the leader event")
            assert (event.name, event.component) == ("announcer", "task_scheduler")
            assert METRICS.scheduler_paused.value() == 0
            assert METRICS.scheduler_schedules_total.value() >= 1
            await clock.wait_for_sleepers()
            clock.advance(10)
            await eventually(lambda: _count(client, "counted:", 1), timeout=10, message="the task")
    assert METRICS.scheduler_scheduled_count.value("counted", "SCHED") == before + 1
    assert METRICS.scheduler_paused.value() == 1


async def test_a_paused_period_is_not_caught_up_after_resume(make_client: ClientFactory) -> None:
    clock = ManualClock(datetime.now(UTC))
    client = await make_client()
    schedules = Schedules(client, clock=clock)
    stored = await schedules.add(Schedule("nap", "@every 10s", "nap", misfire="run_all", paused=True))
    dues = stored.next_times(clock.now(), 4)
    clock.set(dues[2] + timedelta(seconds=8))  # three due times pass while it is paused and nobody leads
    await schedules.resume("nap")
    scheduler = Scheduler(client, name="rested", clock=clock)
    async with running(scheduler):
        await leader(scheduler)
        await clock.wait_for_sleepers()
        assert await task_ids(client, "nap:") == []
        clock.set(dues[3])
        await eventually(lambda: _count(client, "nap:", 1), timeout=10, message="the first due time after resume")
    assert await task_ids(client, "nap:") == [stored.task_id(dues[3])]


async def test_a_schedule_added_again_does_not_fire_for_times_before_it_existed(make_client: ClientFactory) -> None:
    clock = ManualClock(datetime.now(UTC))
    client = await make_client()
    schedules = Schedules(client)
    old = await schedules.add(Schedule("again", "@every 10s", "again", misfire="run_all"))
    scheduler = Scheduler(client, name="keeper", clock=clock)
    async with running(scheduler):
        await leader(scheduler)
        first = old.next_times(clock.now(), 1)[0]
        clock.set(first)
        await eventually(lambda: _count(client, "again:", 1), timeout=10, message="the first task")
    await schedules.remove("again")
    clock.advance(100)
    new = await schedules.add(Schedule("again", "@every 10s", "again", misfire="run_all", created_at=clock.now()))
    scheduler = Scheduler(client, name="keeper2", clock=clock)
    async with running(scheduler):
        await leader(scheduler)
        await clock.wait_for_sleepers()
        assert len(await task_ids(client, "again:")) == 1  # nothing for the 100 s it did not exist
        clock.set(new.next_times(clock.now(), 1)[0])
        await eventually(lambda: _count(client, "again:", 2), timeout=10, message="its first own task")


async def test_run_ends_when_the_client_is_closed(make_client: ClientFactory) -> None:
    client = await make_client()
    scheduler = Scheduler(client, name="closing")
    running_scheduler = asyncio.create_task(scheduler.run())
    await leader(scheduler)
    await client.close()
    await asyncio.wait_for(running_scheduler, 10)  # returns, without an error
    assert not scheduler.is_leader


async def test_a_fire_that_fails_is_counted_logged_and_retried(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(datetime.now(UTC))
    client = await make_client()
    await make_client(queue="GONE")  # creates the queue the schedule names
    stored = await Schedules(client).add(Schedule("lost", "@every 10s", "lost", queue="GONE"))
    await client.admin.delete_queue("GONE")  # removed behind the schedule's back
    before = METRICS.scheduler_schedule_error_count.value("lost", "GONE")
    scheduler = Scheduler(client, name="failing", clock=clock)
    async with running(scheduler):
        await leader(scheduler)
        clock.set(stored.next_times(clock.now(), 1)[0])
        await eventually(
            lambda: METRICS.scheduler_schedule_error_count.value("lost", "GONE") > before or None,
            timeout=15,
            message="the failed fire counted",
        )
    assert "could not enqueue the task of" in caplog.text and "trying again in 5s" in caplog.text


async def test_a_schedule_in_gos_exact_bytes_fires(make_client: ClientFactory) -> None:
    golden = (Path(__file__).parents[1] / "interop" / "fixtures" / "scheduled_task.json").read_bytes()
    go_written = decode_schedule(golden)
    client = await make_client(queue=go_written.queue)
    await client.key_value(CONFIG_BUCKET).create(SCHEDULE_KEY_PREFIX + go_written.name, golden)  # as Go stores it
    clock = ManualClock(datetime.now(UTC))
    scheduler = Scheduler(client, name="reader", clock=clock)
    async with running(scheduler):
        await leader(scheduler)
        due = go_written.next_times(clock.now(), 1)[0]
        clock.set(due)
        await eventually(lambda: _count(client, f"{go_written.name}:", 1), timeout=10, message="its task")
    task = await client.get_task(go_written.task_id(due))
    assert (task.type, task.queue, task.max_tries) == (go_written.task_type, go_written.queue, go_written.max_tries)
    assert task.deadline is not None and go_written.deadline is not None
    assert task.deadline - due == timedelta(seconds=go_written.deadline)


async def test_jitter_longer_than_the_gap_between_due_times_loses_none(make_client: ClientFactory) -> None:
    clock = ManualClock(datetime.now(UTC))
    client = await make_client()
    stored = await Schedules(client, clock=clock).add(Schedule("wide", "* * * * *", "wide", jitter=300))
    dues = stored.next_times(clock.now(), 8)
    scheduler = Scheduler(client, name="wide", clock=clock)
    async with running(scheduler):
        await leader(scheduler)
        end = dues[-1] + timedelta(seconds=301)
        while clock.now() < end:  # five seconds at a time: each due time jittered up to five minutes later
            await clock.wait_for_sleepers()
            clock.advance(5)
        await eventually(lambda: _count(client, "wide:", len(dues)), timeout=10, message="every due time")
    fired = await task_ids(client, "wide:")
    assert fired[: len(dues)] == sorted(stored.task_id(due) for due in dues)  # none lost (later ones may follow)


async def test_a_hanging_queue_does_not_hold_up_other_schedules(make_client: ClientFactory) -> None:
    clock = ManualClock(datetime.now(UTC))
    client = await make_client(retry_window=20, request_timeout=5)
    await make_client(queue="HANGS")
    schedules = Schedules(client, clock=clock)
    slow = await schedules.add(Schedule("slow", "@every 60s", "slow", queue="HANGS"))
    fast = await schedules.add(Schedule("fast", "@every 60s", "fast", created_at=slow.created))
    await client.admin.delete_queue("HANGS")
    hang = await client.nc.subscribe("CHORIA_AJ.Q.HANGS.>")  # takes the item publish, never answers it
    try:
        scheduler = Scheduler(client, name="unblocked", clock=clock)
        async with running(scheduler):
            await leader(scheduler)
            clock.set(fast.next_times(clock.now(), 1)[0])
            await eventually(lambda: _count(client, "fast:", 1), timeout=4, message="the healthy schedule's task")
    finally:
        await hang.unsubscribe()


def test_created_at_far_in_the_future_is_refused() -> None:
    with pytest.raises(InvalidSchedule, match=r"created_at 9999-12-31T23:30:00.*is out of range"):
        Schedule("far", "@every 1m", "t", created_at=datetime(9999, 12, 31, 23, 30, tzinfo=UTC))


async def test_a_broken_stored_schedule_is_ignored_with_a_warning(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client()
    configs = client.key_value(CONFIG_BUCKET)
    far = b'{"name":"far","schedule":"@every 1m","queue":"SCHED","task_type":"t","payload":null,"max_tries":1,'
    await configs.create(SCHEDULE_KEY_PREFIX + "far", far + b'"created_at":"9999-12-31T23:30:00Z"}')
    good = await Schedules(client).add(Schedule("good", "@every 1m", "t"))
    await configs.create(SCHEDULE_KEY_PREFIX + "alias", encode_schedule(good))  # named "good" inside
    scheduler = Scheduler(client, name="survivor")
    async with running(scheduler) as tasks:
        await leader(scheduler)
        await eventually(lambda: "good" in scheduler.schedules or None, timeout=10, message="the good schedule")
        assert set(scheduler.schedules) == {"good"}
        assert not tasks[0].done()
    assert "ignoring the stored schedule far" in caplog.text
    assert "ignoring the schedule stored at scheduled_tasks.alias: it is named 'good' inside" in caplog.text


@pytest.mark.parametrize("name", ["*", ">", "a.b", "", "bad name"])
async def test_schedule_names_are_never_key_patterns(make_client: ClientFactory, name: str) -> None:
    schedules = Schedules(await make_client())
    await schedules.add(Schedule("beta", "@daily", "t"))
    for call in (schedules.get, schedules.pause, schedules.remove):
        with pytest.raises(InvalidSchedule, match="schedule name"):
            await call(name)
    assert not (await schedules.get("beta")).paused


async def test_cancelling_twice_leaves_nothing_running(make_client: ClientFactory) -> None:
    scheduler = Scheduler(await make_client(), name="twice")
    run = asyncio.create_task(scheduler.run())
    await leader(scheduler)
    run.cancel()
    await asyncio.sleep(0)
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(run, 15)
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("scheduler twice")]
    assert left == []


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_stopping_while_nats_is_down_is_bounded() -> None:
    from asyncjobs.server import NatsServer

    async with NatsServer() as server:
        client = await asyncjobs.connect(server.url, queue="SCHED", retry_window=30)
        try:
            scheduler = Scheduler(client, name="outage")
            run = asyncio.create_task(scheduler.run())
            await leader(scheduler)
            await server.stop()
            started = asyncio.get_running_loop().time()
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(run, 30)
            took = asyncio.get_running_loop().time() - started
        finally:
            await client.close()
    assert took < 15, f"stopping took {took:.1f}s"  # within a systemd TimeoutStopSec of 15 s, not the retry window
