"""``ajc tasks cron``, through the installed entry point, against a real nats-server (and beside Go's ajc)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
import pytest_asyncio

import asyncjobs
from asyncjobs.cli.ajc.durations import humanize_duration
from asyncjobs.cli.ajc.output import when
from asyncjobs.testing import eventually
from asyncjobs_scheduler import ScheduleNotFound, Schedules
from asyncjobs_scheduler.ajc_views import go_spec
from tests.cli.conftest import AJC, RunAjc

EMAIL = "EMAIL"
GO_KEYS = ("name", "schedule", "queue", "task_type", "payload", "max_tries", "created_at")


@pytest_asyncio.fixture
async def client(nats_url: str) -> AsyncIterator[asyncjobs.Client]:
    """A client bound to DEFAULT; the EMAIL queue exists too."""
    async with await asyncjobs.connect(nats_url, queue=EMAIL):
        pass
    async with await asyncjobs.connect(nats_url) as connected:
        yield connected


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def table_rows(text: str) -> list[list[str]]:
    """The cells of a boxed table's rows (header included), without the title."""
    rows = [[cell.strip() for cell in line.strip().strip("│").split("│")] for line in text.splitlines()]
    return [row for row in rows if len(row) > 1]


def expected_view(name: str, created: datetime | None, rows: list[tuple[str, str]]) -> list[str]:
    return [f"Scheduled Task {name} created at {when(created)}", "", *(f"{key:>21}: {value}" for key, value in rows)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def http_get(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        await writer.drain()
        return (await asyncio.wait_for(reader.read(), 10)).decode()
    finally:
        writer.close()


# ---- pure helpers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("daily", "@daily"),
        ("every 10s", "@every 10s"),
        ("midnight", "@midnight"),
        ("@hourly", "@hourly"),
        ("*/5 * * * *", "*/5 * * * *"),
        ("CRON_TZ=UTC 0 1 * * *", "CRON_TZ=UTC 0 1 * * *"),
    ],
)
def test_descriptors_get_upstreams_at_prefix(given: str, stored: str) -> None:
    assert go_spec(given) == stored


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "forever"), (45, "45.00s"), (90, "1m30s"), (3600, "1h0m0s"), (90000, "1d1h0m0s"), (366 * 86400, "1y1d0h0m0s")],
)
def test_durations_print_as_upstreams_views_do(seconds: float, text: str) -> None:
    assert humanize_duration(seconds) == text


# ---- our ajc ------------------------------------------------------------------------------------------------------


async def test_add_view_list_delete(run_ajc: RunAjc, client: asyncjobs.Client) -> None:
    schedules = Schedules(client)
    done = await run_ajc("tasks", "cron", "add", "daily", "daily", "email:daily", "--payload", '{"a":1}', "-q", EMAIL)
    assert done.code == 0, done.err
    daily = await schedules.get("daily")
    assert (daily.spec, daily.queue, daily.task_type, daily.payload) == (
        "@daily",
        EMAIL,
        "email:daily",
        b'"{\\"a\\":1}"',
    )
    assert daily.task_max_tries == 10
    upstream_rows = [
        ("Schedule", "@daily"),
        ("Queue", EMAIL),
        ("Task Type", "email:daily"),
        ("Payload", "11 B"),
        ("Maximum Tries", "10"),
    ]
    assert lines(done.out) == expected_view("daily", daily.created, upstream_rows)

    for alias in ("view", "v"):
        shown = await run_ajc("tasks", "cron", alias, "daily")
        assert shown.code == 0, shown.err
        assert lines(shown.out) == expected_view("daily", daily.created, upstream_rows)
    as_json = await run_ajc("t", "c", "show", "daily", "-j")
    assert as_json.code == 0, as_json.err
    document = as_json.json()
    assert isinstance(document, dict)
    assert list(document) == list(GO_KEYS)
    assert document["payload"] == "IntcImFcIjoxfSI="
    assert document["created_at"].startswith(daily.created.strftime("%Y-%m-%dT%H:%M:%S"))  # type: ignore[union-attr]

    assert (await run_ajc("tasks", "cron", "new", "every5", "*/5 * * * *", "email:five")).code == 0
    every5 = await schedules.get("every5")
    assert (every5.queue, every5.payload) == ("DEFAULT", None)
    before = datetime.now(UTC)
    listed = await run_ajc("tasks", "cron", "ls")
    after = datetime.now(UTC)
    assert listed.code == 0, listed.err
    assert lines(listed.out)[1].strip("│ ") == "2 Scheduled Task(s)"
    rows = table_rows(listed.out)
    assert [row[:5] for row in rows] == [
        ["Name", "Schedule", "Queue", "Task Type", "Created"],
        ["daily", "@daily", EMAIL, "email:daily", when(daily.created)],
        ["every5", "*/5 * * * *", "DEFAULT", "email:five", when(every5.created)],
    ]
    assert rows[0][5] == "Next"
    for row, schedule in zip(rows[1:], (daily, every5), strict=True):
        assert row[5] in {when(schedule.next_after(before)), when(schedule.next_after(after))}
    names = await run_ajc("tasks", "cron", "list", "--names")
    assert (names.code, names.out) == (0, "daily\nevery5\n")
    listed_json = await run_ajc("tasks", "cron", "list", "--json")
    assert listed_json.json() == [document, orjson.loads((await run_ajc("t", "c", "v", "every5", "-j")).out)]

    removed = await run_ajc("tasks", "cron", "rm", "every5", "-f")
    assert (removed.code, removed.out) == (0, "Removed Scheduled Task every5\n")
    with pytest.raises(ScheduleNotFound):
        await schedules.get("every5")
    assert [schedule.name for schedule in await schedules.list()] == ["daily"]


async def test_add_with_our_policies(run_ajc: RunAjc, client: asyncjobs.Client) -> None:
    done = await run_ajc(
        "tasks", "cron", "a", "nightly", "0 2 * * *", "report:nightly",
        "--payload", '{"format":"pdf"}', "--raw-payload", "--timezone", "Europe/London", "--deadline", "90s",
        "--tries", "3", "--misfire", "run_all", "--catchup-window", "2h", "--dst-gap", "skip",
        "--dst-overlap", "twice", "--overlap", "skip", "--jitter", "5s", "--paused", "--json",
    )  # fmt: skip
    assert done.code == 0, done.err
    stored = await Schedules(client).get("nightly")
    assert stored.wire_spec == "CRON_TZ=Europe/London 0 2 * * *"
    assert stored.payload == b'{"format":"pdf"}'
    assert (stored.deadline, stored.max_tries, stored.catchup_window, stored.jitter) == (90, 3, 7200, 5)
    assert (stored.misfire, stored.dst_gap, stored.dst_overlap, stored.overlap) == ("run_all", "skip", "twice", "skip")
    assert stored.paused
    document = done.json()
    assert isinstance(document, dict)
    assert document["schedule"] == "CRON_TZ=Europe/London 0 2 * * *"
    assert (document["deadline"], document["jitter"], document["paused"]) == (90_000_000_000, 5_000_000_000, True)

    shown = await run_ajc("tasks", "cron", "view", "nightly")
    assert shown.code == 0, shown.err
    assert lines(shown.out) == expected_view(
        "nightly",
        stored.created,
        [
            ("Schedule", "CRON_TZ=Europe/London 0 2 * * *"),
            ("Queue", "DEFAULT"),
            ("Task Type", "report:nightly"),
            ("Payload", "16 B"),
            ("Scheduling Deadline", "1m30s"),
            ("Maximum Tries", "3"),
            ("Misfire", "run_all"),
            ("Catch-up Window", "2h0m0s"),
            ("DST Gap", "skip"),
            ("DST Overlap", "twice"),
            ("Overlap", "skip"),
            ("Jitter", "5.00s"),
            ("Paused", "true"),
        ],
    )


async def test_pause_resume_trigger_next(run_ajc: RunAjc, client: asyncjobs.Client) -> None:
    schedules = Schedules(client)
    add = ("tasks", "cron", "add", "newyear", "0 9 1 1 *", "greet", "--tz", "Europe/Paris", "--payload", "hi", "-q")
    assert (await run_ajc(*add, EMAIL)).code == 0

    paused = await run_ajc("tasks", "cron", "pause", "newyear")
    assert (paused.code, paused.out) == (0, "Paused Scheduled Task newyear\n")
    assert (await schedules.get("newyear")).paused
    listed = await run_ajc("tasks", "cron", "list")
    assert table_rows(listed.out)[1][-1] == "paused"
    resumed = await run_ajc("tasks", "cron", "resume", "newyear")
    assert (resumed.code, resumed.out) == (0, "Resumed Scheduled Task newyear\n")
    assert not (await schedules.get("newyear")).paused

    triggered = await run_ajc("tasks", "cron", "trigger", "newyear")
    assert triggered.code == 0, triggered.err
    assert triggered.out.startswith("Enqueued task ")
    task = await client.get_task(triggered.out.split()[-1])
    assert (task.type, task.queue, task.payload, task.max_tries) == ("greet", EMAIL, b'"hi"', 10)
    as_json = await run_ajc("tasks", "cron", "trigger", "newyear", "--json")
    document = as_json.json()
    assert isinstance(document, dict)
    assert (await client.get_task(document["id"])).type == "greet"

    upcoming = await run_ajc("tasks", "cron", "next", "newyear", "2")
    assert upcoming.code == 0, upcoming.err
    dues = (await schedules.get("newyear")).next_times(datetime.now(UTC), 2)
    paris = ZoneInfo("Europe/Paris")
    assert table_rows(upcoming.out) == [
        ["#", "Local Time (Europe/Paris)", "UTC"],
        *(
            [str(n), due.astimezone(paris).strftime("%d %b %y 09:00:00 CET"), when(due)]
            for n, due in enumerate(dues, 1)
        ),
    ]
    upcoming_json = (await run_ajc("tasks", "cron", "next", "newyear", "-j")).json()
    assert isinstance(upcoming_json, dict)
    assert upcoming_json["timezone"] == "Europe/Paris"
    assert [due["utc"] for due in upcoming_json["next"]][:2] == [due.strftime("%Y-%m-%dT%H:%M:%SZ") for due in dues]
    assert upcoming_json["next"][0]["local"].endswith("T09:00:00+01:00")
    assert len(upcoming_json["next"]) == 5


async def test_errors(run_ajc: RunAjc, client: asyncjobs.Client) -> None:
    assert (await run_ajc("tasks", "cron", "add", "taken", "@hourly", "t")).code == 0
    cases = [
        (("add", "bad", "61 * * * *", "t"), 2, "minute"),
        (("add", "bad", "0 2 * * *", "t", "--timezone", "Mars/Olympus"), 2, "unknown time zone 'Mars/Olympus'"),
        (("add", "bad", "0 2 * * *", "t", "--deadline", "10s"), 2, "at least 30 s"),
        (("add", "bad", "0 2 * * *", "t", "--deadline", "soon"), 2, "--deadline: invalid duration 'soon'"),
        (("add", "bad", "0 2 * * *", "t", "-q", "NOPE"), 1, "queue 'NOPE' does not exist: create it with"),
        (("add", "taken", "@daily", "t"), 1, "`ajc tasks cron delete taken`"),
        (("view", "nope"), 1, "scheduled task 'nope' not found"),
        (("delete", "nope", "-f"), 1, "scheduled task 'nope' not found"),
        (("delete", "taken"), 2, "pass -f"),
        (("pause", "nope"), 1, "scheduled task 'nope' not found"),
        (("trigger", "nope"), 1, "scheduled task 'nope' not found"),
        (("next", "nope"), 1, "scheduled task 'nope' not found"),
        (("scheduler",), 2, "or set AJC_SCHEDULER_NAME"),
    ]
    results = await asyncio.gather(*(run_ajc("tasks", "cron", *args) for args, _, _ in cases))
    for (args, status, message), done in zip(cases, results, strict=True):
        assert done.code == status, (args, done.out, done.err)
        assert done.err.startswith("ajc: error: ") and message in done.err, (args, done.err)
        assert len(done.err.splitlines()) == 1 and "Traceback" not in done.err, done.err
    assert [schedule.name for schedule in await Schedules(client).list()] == ["taken"]  # nothing else stored


async def test_a_fresh_server_has_none_and_reading_creates_nothing(run_ajc: RunAjc, nats_url: str) -> None:
    listed = await run_ajc("tasks", "cron", "list")
    assert (listed.code, listed.out) == (0, "No Scheduled Tasks found\n")
    assert (await run_ajc("tasks", "cron", "list", "-j")).json() == []
    missing = await run_ajc("tasks", "cron", "view", "nope")
    assert (missing.code, missing.err) == (1, "ajc: error: scheduled task 'nope' not found: list them with "
                                              "`ajc tasks cron list`\n")  # fmt: skip
    async with await asyncjobs.connect(nats_url, no_storage_init=True) as client:
        assert await client.admin.queue_names() == []


@contextlib.asynccontextmanager
async def scheduler_process(
    config_home: Path, *args: str, tasks_flags: tuple[str, ...] = (), **env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Our ``ajc tasks [TASKS_FLAGS] cron scheduler ARGS`` against the test's server; killed if running at the end."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "AJC_")) and k != "CONTEXT"}
    environ.update(XDG_CONFIG_HOME=str(config_home), **env)
    proc = await asyncio.create_subprocess_exec(
        str(AJC), "tasks", *tasks_flags, "cron", "scheduler", *args, env=environ, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def fired(client: asyncjobs.Client, prefix: str) -> list[str]:
    """The ids of the tasks fired so far for schedule ``prefix``, once there are two."""
    ids = [task.id async for task in client.admin.tasks() if task.id.startswith(prefix + ":")]
    assert len(ids) >= 2
    return ids


async def stop(proc: asyncio.subprocess.Process, signum: signal.Signals) -> str:
    """Send ``signum`` and return the scheduler's log once it has exited."""
    proc.send_signal(signum)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    return err.decode()


async def test_scheduler_fires_and_stops_cleanly_on_sigterm(
    run_ajc: RunAjc, client: asyncjobs.Client, config_home: Path
) -> None:
    assert (await run_ajc("tasks", "cron", "add", "beat", "every 1s", "beat:tick")).code == 0
    port = free_port()
    async with scheduler_process(config_home, AJC_SCHEDULER_NAME="cli-scheduler", AJC_MONITOR=str(port)) as proc:
        ids = await eventually(lambda: fired(client, "beat"), timeout=20, message="tasks fired by our scheduler")
        assert (await client.get_task(ids[0])).type == "beat:tick"
        assert "choria_asyncjobs_task_scheduler_paused 0.0" in await http_get(port, "/metrics")  # it leads
        log = await stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, log
    assert "scheduler cli-scheduler leads" in log and "INFO" in log
    assert "received SIGTERM: stopping" in log and "Traceback" not in log


async def test_scheduler_signs_what_it_enqueues_with_tasks_sign(
    run_ajc: RunAjc, client: asyncjobs.Client, config_home: Path
) -> None:
    from asyncjobs.signing import generate_key_pair

    pair = generate_key_pair()
    assert (await run_ajc("tasks", "cron", "add", "signed", "every 1s", "beat:signed")).code == 0
    async with scheduler_process(config_home, "signer", tasks_flags=("--sign", pair.seed_hex)) as proc:
        ids = await eventually(lambda: fired(client, "signed"), timeout=20, message="tasks fired by our scheduler")
        await stop(proc, signal.SIGTERM)
    assert (await client.get_task(ids[0])).signature
    async with await asyncjobs.connect(client.nc, verification_key=pair.public_key_hex) as verifying:
        assert (await verifying.get_task(ids[0])).id == ids[0]  # loads only when the signature checks out
    other = generate_key_pair()
    async with await asyncjobs.connect(client.nc, verification_key=other.public_key_hex) as verifying:
        with pytest.raises(asyncjobs.InvalidSignature):
            await verifying.get_task(ids[0])


# ---- beside upstream's ajc ----------------------------------------------------------------------------------------


async def test_go_adds_ours_shows_the_same(run_ajc: RunAjc, run_go_ajc: RunAjc, client: asyncjobs.Client) -> None:
    go_add = await run_go_ajc("tasks", "cron", "add", "daily", "daily", "email:daily", "--payload", '{"a":"<b>"}',
                              "-q", EMAIL, "--deadline", "1h", "--tries", "3")  # fmt: skip
    assert go_add.code == 0, go_add.err
    assert (await run_go_ajc("t", "c", "new", "every5", "*/5 * * * *", "email:five")).code == 0

    ours, theirs = await run_ajc("tasks", "cron", "view", "daily"), await run_go_ajc("tasks", "cron", "view", "daily")
    assert ours.code == 0, ours.err
    assert lines(ours.out) == lines(theirs.out) == lines(go_add.out)
    ours, theirs = await run_ajc("t", "c", "show", "daily", "-j"), await run_go_ajc("t", "c", "show", "daily", "-j")
    assert ours.out == theirs.out
    ours, theirs = await run_ajc("tasks", "cron", "ls"), await run_go_ajc("tasks", "cron", "ls")
    assert [row[:5] for row in table_rows(ours.out)] == table_rows(theirs.out)
    assert lines(ours.out)[1].strip("│ ") == lines(theirs.out)[1].strip("│ ") == "2 Scheduled Task(s)"
    ours, theirs = await run_ajc("t", "c", "list", "--names"), await run_go_ajc("t", "c", "list", "--names")
    assert ours.out == theirs.out == "daily\nevery5\n"

    removed = await run_ajc("tasks", "cron", "del", "every5", "-f")
    assert removed.out == "Removed Scheduled Task every5\n"
    assert (await run_go_ajc("tasks", "cron", "ls", "--names")).out == "daily\n"


async def test_ours_adds_go_shows_the_same(run_ajc: RunAjc, run_go_ajc: RunAjc, client: asyncjobs.Client) -> None:
    forms = [
        ("a", "weekly", "every 10s", "email:weekly", "--payload", "x & y", "-q", EMAIL, "--tries", "4"),
        ("new", "hourly", "hourly", "email:hourly", "--deadline", "2m"),
        ("add", "fivemin", "*/5 * * * *", "email:five", "--queue", EMAIL),
    ]
    for alias, *args in forms:
        done = await run_ajc("tasks", "cron", alias, *args)
        assert done.code == 0, done.err
        theirs = await run_go_ajc("tasks", "cron", "view", args[0])
        assert lines(theirs.out) == lines(done.out), args
        ours_json = orjson.loads((await run_ajc("t", "c", "v", args[0], "-j")).out)
        go_json = orjson.loads((await run_go_ajc("t", "c", "v", args[0], "-j")).out)
        assert ours_json == go_json
    stored = {schedule.name: schedule for schedule in await Schedules(client).list()}
    assert stored["weekly"].spec == "@every 10s" and stored["weekly"].payload == b'"x \\u0026 y"'
    assert stored["hourly"].spec == "@hourly" and stored["hourly"].deadline == 120
    ours, theirs = await run_ajc("tasks", "cron", "list"), await run_go_ajc("tasks", "cron", "list")
    # Go lists in the order the keys were written; ours sorts by name
    assert [row[:5] for row in table_rows(ours.out)] == [table_rows(theirs.out)[0], *sorted(table_rows(theirs.out)[1:])]

    removed = await run_go_ajc("tasks", "cron", "rm", "fivemin", "-f")
    assert removed.code == 0, removed.err
    assert (await run_ajc("tasks", "cron", "list", "--names")).out == "hourly\nweekly\n"


async def test_our_scheduler_fires_gos_schedule_and_go_sees_it_lead(
    run_go_ajc: RunAjc, client: asyncjobs.Client, config_home: Path
) -> None:
    added = await run_go_ajc("tasks", "cron", "add", "gobeat", "every 1s", "beat:go", "--payload", "tick")
    assert added.code == 0, added.err
    async with scheduler_process(config_home, "py-leader") as proc:
        ids = await eventually(lambda: fired(client, "gobeat"), timeout=20, message="tasks of Go's schedule")
        task = await client.get_task(ids[0])
        assert (task.type, task.payload) == ("beat:go", b'"tick"')
        info = await run_go_ajc("info")
        assert "task_scheduler: py-leader" in info.out, info.out
        log = await stop(proc, signal.SIGINT)
    assert proc.returncode == 0, log
    assert "received SIGINT: stopping" in log
    assert "task_scheduler:" not in (await run_go_ajc("info")).out  # it gave the leadership up on the way out
