"""``ajc tasks`` (add, view, list, retry, delete, purge, initialize, configure, watch) against a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from datetime import timedelta
from pathlib import Path

import pytest

import asyncjobs
from asyncjobs import codec
from asyncjobs.cli.ajc.durations import humanize_duration, parse_duration
from asyncjobs.cli.ajc.output import when
from asyncjobs.signing import generate_key_pair
from tests.cli.conftest import AJC, Result, RunAjc

WATCH_LINE = re.compile(
    r"^\[\d\d:\d\d:\d\d\] (?P<id>\S+): queue: (?P<queue>\S+) type: (?P<type>\S+) tries: (?P<tries>\d+) "
    r"state: (?P<state>\S+)( error: (?P<error>.*))?$"
)


def table_rows(text: str) -> list[list[str]]:
    """The cells of a boxed table's rows, header first, without the title."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in text.splitlines()
        if line.startswith("│") and line.count("│") > 2
    ]


def command_env(config_home: Path) -> dict[str, str]:
    """The environment ``run_ajc`` gives a command, for one started by hand (to signal it, or to read it live)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "AJC_")) and k != "CONTEXT"}
    return {**env, "XDG_CONFIG_HOME": str(config_home), "TERM": "dumb"}


def enqueued_id(done: Result) -> str:
    assert done.code == 0, done.err
    match = re.fullmatch(r"Enqueued task (\S+)\n", done.out)
    assert match, done.out
    return match.group(1)


async def complete_and_terminate(client: asyncjobs.Client, ok: int, bad: int) -> None:
    """Enqueue ``ok`` tasks of type t:ok and ``bad`` of type t:bad, and process them all (t:bad terminates)."""
    router = asyncjobs.Router()

    @router.handler("t:ok")
    async def succeed(task: asyncjobs.Task) -> str:
        return "done"

    @router.handler("t:bad")
    async def terminate(task: asyncjobs.Task) -> None:
        raise asyncjobs.TerminateTask("broken")

    for kind, count in (("t:ok", ok), ("t:bad", bad)):
        for _ in range(count):
            await client.enqueue(asyncjobs.Task(kind, "x"))
    await client.run(router, until_idle=True)


# ---- durations (no server) ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("90s", 90), ("1h30m", 5400), ("1.5h", 5400), ("500ms", 0.5), ("2d", 172800), ("1w", 604800),
     ("1M", 2592000), ("1y", 31536000), ("1h1y", 31539600), ("+10m", 600)],
)  # fmt: skip
def test_durations_read_as_upstreams_ajc_reads_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "1H", "1mo", "-1h", "h", "1h-", "1..5s"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "forever"), (0, "forever"), (0.314, "0.31s"), (65.9, "1m5s"), (7200, "2h0m0s"), (180000, "2d2h0m0s"),
     (34560000, "1y35d0h0m0s")],
)  # fmt: skip
def test_durations_shown_as_upstreams_ajc_shows_them(seconds: float | None, text: str) -> None:
    assert humanize_duration(seconds) == text


# ---- add ---------------------------------------------------------------------------------------------------------


async def test_add_stores_the_payload_as_a_json_string_with_every_flag(run_ajc: RunAjc, nats_url: str) -> None:
    task_id = enqueued_id(
        await run_ajc("tasks", "add", "email:new", "hi <you>", "--deadline", "1h", "--tries", "3",
                      "--depends", "a,b", "--depends", "c", "--load")
    )  # fmt: skip
    async with await asyncjobs.connect(nats_url, no_storage_init=True) as client:
        task = await client.get_task(task_id)
        assert (await client.admin.queue_info("DEFAULT")).items == 1  # the DEFAULT queue was created
    assert task.payload == b'"hi \\u003cyou\\u003e"'  # a JSON string, escaped as Go's encoder escapes it
    assert (task.type, task.queue, task.max_tries, task.state) == ("email:new", "DEFAULT", 3, "blocked")
    assert (task.dependencies, task.load_dependencies) == (["a", "b", "c"], True)
    assert task.deadline is not None
    assert task.deadline - task.created == timedelta(hours=1)


async def test_add_aliases_and_json(run_ajc: RunAjc, nats_url: str) -> None:
    for alias in ("new", "a", "enqueue"):
        enqueued_id(await run_ajc("t", alias, "x:y", "hello"))
    done = await run_ajc("task", "add", "x:y", "hello", "--json")
    assert done.code == 0, done.err
    shown = done.json()
    assert isinstance(shown, dict)
    async with await asyncjobs.connect(nats_url, no_storage_init=True) as client:
        stored = await client.get_task(shown["id"])
    assert shown == codec.task_to_wire(stored)
    assert stored.max_tries == 10 and stored.payload == b'"hello"'


async def test_add_binds_existing_queues_and_refuses_missing_ones(run_ajc: RunAjc, nats_url: str) -> None:
    done = await run_ajc("tasks", "add", "x:y", "hi", "-q", "NOPE")
    assert (done.code, done.out) == (1, "")
    assert done.err == "ajc: error: queue 'NOPE' not found: create it with ajc queues new NOPE\n"
    async with await asyncjobs.connect(nats_url, queue="EMAIL") as client:
        assert "NOPE" not in await client.admin.queue_names()
        task_id = enqueued_id(await run_ajc("tasks", "add", "x:y", "hi", "--queue", "EMAIL"))
        assert (await client.get_task(task_id)).queue == "EMAIL"
        assert (await client.admin.queue_info("EMAIL")).items == 1


@pytest.mark.parametrize(
    ("args", "problem"),
    [(("--deadline", "1H"), "invalid duration '1H'"), (("--deadline", "-1h"), "negative"),
     (("--tries", "0"), "--tries"), (("-q", "bad queue"), "queue")],
)  # fmt: skip
async def test_add_refuses_bad_arguments(run_ajc: RunAjc, nats_url: str, args: tuple[str, ...], problem: str) -> None:
    done = await run_ajc("tasks", "add", "x:y", "hi", *args)
    assert done.code == 2, (done.out, done.err)
    assert problem in done.err and "Traceback" not in done.err


# ---- view, delete ------------------------------------------------------------------------------------------------


async def test_view_shows_upstreams_block_and_the_stored_json(run_ajc: RunAjc, nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url, queue="HOLD") as hold:  # no worker runs this queue
        blocked = await hold.enqueue(
            asyncjobs.Task("c:c", "hi", deadline=timedelta(minutes=10), dependencies=["p1", "p2"], max_tries=4)
        )
    async with await asyncjobs.connect(nats_url) as client:
        await complete_and_terminate(client, ok=1, bad=1)
        done_tasks = [t async for t in client.admin.tasks(states=["complete", "terminated"])]
    done = await run_ajc("tasks", "view", blocked.id)
    assert done.code == 0, done.err
    assert done.out.splitlines() == [
        f"Task {blocked.id} created at {when(blocked.created)}",
        "",
        "            Task Type: c:c",
        "              Payload: 4 B",
        "               Status: blocked",
        "         Dependencies: p1, p2",
        "     Load Dep Results: false",
        "                Queue: HOLD",
        "                Tries: 0",
        f"  Scheduling Deadline: {when(blocked.deadline)}",
        "        Maximum Tries: 4",
    ]
    for task in done_tasks:
        shown = await run_ajc("tasks", "show", task.id)
        lines = shown.out.splitlines()
        assert task.tried is not None
        if task.state == "complete":
            assert task.result is not None
            took = humanize_duration((task.result.completed - task.created).total_seconds())
            assert f"            Completed: {when(task.result.completed)} ({took})" in lines
            assert not any("Last Error" in line for line in lines)
        else:
            assert "               Status: terminated" in lines
            assert f"       Last Processed: {when(task.tried)}" in lines
            assert "           Last Error: broken: terminate task" in lines
        as_json = await run_ajc("tasks", "i", task.id, "-j")
        assert as_json.json() == codec.task_to_wire(task)


async def test_unknown_tasks_fail_with_one_line(run_ajc: RunAjc, nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url):
        pass  # the task store exists, the task does not
    for args in (("view", "nope"), ("delete", "nope", "-f"), ("retry", "nope")):
        done = await run_ajc("tasks", *args)
        assert (done.code, done.out, done.err) == (1, "", "ajc: error: task nope not found\n")


async def test_a_server_without_a_task_store_gets_short_errors(run_ajc: RunAjc, nats_url: str) -> None:
    no_store = "ajc: error: the task store does not exist: create it with ajc tasks initialize, or add a task\n"
    expected = {
        ("ls",): (1, "", "ajc: error: no tasks found\n"),
        ("ls", "--json"): (0, "[]\n", ""),
        ("view", "abc"): (1, "", "ajc: error: task abc not found\n"),
        ("purge", "-f"): (1, "", no_store),
        ("configure", "1h", "1"): (1, "", no_store),
        ("retry", "--failed", "-f"): (1, "", no_store),
    }
    for args, outcome in expected.items():
        done = await run_ajc("tasks", *args)
        assert (done.code, done.out, done.err) == outcome, args
    async with await asyncjobs.connect(nats_url, no_storage_init=True) as client:
        with pytest.raises(asyncjobs.JetStreamError):
            await client.admin.tasks_info()  # none of them created it


async def test_delete_asks_first_and_removes_the_task(run_ajc: RunAjc, nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url) as client:
        task = await client.enqueue(asyncjobs.Task("x:y", "hi"))
        refused = await run_ajc("tasks", "rm", task.id)
        assert refused.code == 2 and "pass -f" in refused.err
        assert (await client.get_task(task.id)).id == task.id
        done = await run_ajc("tasks", "del", task.id, "-f")
        assert (done.code, done.out) == (0, f"Removed Task {task.id}\n")
        with pytest.raises(asyncjobs.TaskNotFound):
            await client.get_task(task.id)


# ---- list, purge -------------------------------------------------------------------------------------------------


async def test_list_shows_upstreams_table_filters_and_json(run_ajc: RunAjc, nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url) as client:
        empty = await run_ajc("tasks", "list")
        assert (empty.code, empty.out, empty.err) == (1, "", "ajc: error: no tasks found\n")
        assert (await run_ajc("tasks", "ls", "--json")).json() == []
        await complete_and_terminate(client, ok=2, bad=1)
        async with await asyncjobs.connect(nats_url, queue="EMAIL") as email:
            await email.enqueue(asyncjobs.Task("e:e", "hi"))
        stored = [t async for t in client.admin.tasks()]
    done = await run_ajc("tasks", "list")
    assert done.code == 0, done.err
    assert "│ 4 Tasks │" in re.sub(r" +", " ", done.out)
    assert table_rows(done.out) == [["ID", "Type", "Created", "State", "Queue", "Tries"]] + [
        [t.id, t.type, when(t.created), t.state.value, t.queue, str(t.tries)] for t in stored
    ]
    first = await run_ajc("tasks", "ls", "1")
    assert "│ 1 of 4 Tasks │" in re.sub(r" +", " ", first.out) and len(table_rows(first.out)) == 2
    only = await run_ajc("tasks", "ls", "--state", "complete", "--state", "terminated", "--type", "t:ok")
    assert [row[0] for row in table_rows(only.out)[1:]] == [t.id for t in stored if t.type == "t:ok"]
    in_queue = await run_ajc("tasks", "ls", "--queue", "EMAIL", "--json")
    assert in_queue.json() == [codec.task_to_wire(t) for t in stored if t.queue == "EMAIL"]
    some = await run_ajc("tasks", "ls", "1", "--type", "t:ok")
    assert "│ 1 of 2 Tasks │" in re.sub(r" +", " ", some.out)
    bad = await run_ajc("tasks", "ls", "--state", "nosuch")
    assert bad.code == 2 and "--state" in bad.err


async def test_purge_asks_first_and_removes_every_task(run_ajc: RunAjc, nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url) as client:
        for _ in range(3):
            await client.enqueue(asyncjobs.Task("x:y", "hi"))
        refused = await run_ajc("tasks", "purge")
        assert refused.code == 2 and "really purge the Task Store of 3 entries" in refused.err
        assert (await client.admin.tasks_info()).tasks == 3
        done = await run_ajc("tasks", "purge", "-f")
        assert (done.code, done.out) == (0, "Purged all task entries\n")
        assert (await client.admin.tasks_info()).tasks == 0


# ---- initialize, configure ---------------------------------------------------------------------------------------


async def test_initialize_creates_only_the_store_and_configure_changes_it(run_ajc: RunAjc, nats_url: str) -> None:
    done = await run_ajc("tasks", "initialize", "--retention", "1h", "--memory")
    assert done.code == 0, done.err
    assert done.out.splitlines() == [
        "Tasks Storage:",
        "",
        "         Entries: 0 @ 0 B",
        "    Memory Based: true",
        "        Replicas: 1",
        "  Archive Period: 1h0m0s",
    ]
    async with await asyncjobs.connect(nats_url, no_storage_init=True) as client:
        info = await client.admin.tasks_info()
        assert (info.retention, info.memory, info.replicas) == (3600, True, 1)
        assert await client.admin.queue_names() == []  # no queue is created, as upstream's initialize
        again = await run_ajc("tasks", "initialize", "--retention", "5h")
        assert "  Archive Period: 1h0m0s" in again.out.splitlines()  # an existing store is left as it is
        async with await asyncjobs.connect(nats_url) as producer:
            await producer.enqueue(asyncjobs.Task("x:y", "hi"))
        configured = await run_ajc("tasks", "configure", "50h", "1")
        assert configured.code == 0, configured.err
        lines = configured.out.splitlines()
        assert "  Archive Period: 2d2h0m0s" in lines and "         Entries: 1 @ " in "\n".join(lines)
        assert any(re.fullmatch(r"     First Entry: .+ UTC \(\d+\.\d\ds\)", line) for line in lines), lines
        assert any(line.startswith("     Last Update: ") for line in lines)
        assert (await client.admin.tasks_info()).retention == 180000
        as_json = await run_ajc("tasks", "cfg", "0", "0", "--json")
        shown = as_json.json()
        assert isinstance(shown, dict)
        assert (shown["retention"], shown["replicas"], shown["tasks"]) == (None, 1, 1)
        assert (await client.admin.tasks_info()).retention is None
    for args in (("configure", "1H", "1"), ("configure", "1h"), ("initialize", "--replicas", "0")):
        bad = await run_ajc("tasks", *args)
        assert bad.code == 2 and "Traceback" not in bad.err, bad.err


# ---- retry -------------------------------------------------------------------------------------------------------


async def test_retry_shows_the_task_and_moves_it_to_the_queue_named(run_ajc: RunAjc, nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url, queue="EMAIL") as client:
        task = await client.enqueue(asyncjobs.Task("x:y", "hi"))
        done = await run_ajc("tasks", "retry", task.id)
        assert done.code == 0, done.err
        assert "               Status: retry" in done.out.splitlines()
        assert "                Queue: DEFAULT" in done.out.splitlines()  # upstream's default queue
        moved = await run_ajc("tasks", "retry", task.id, "-q", "EMAIL")
        assert "                Queue: EMAIL" in moved.out.splitlines()
        stored = await client.get_task(task.id)
        assert (stored.state, stored.queue) == ("retry", "EMAIL")
        missing = await run_ajc("tasks", "retry", task.id, "-q", "NOPE")
        assert (missing.code, missing.err) == (
            1,
            "ajc: error: queue 'NOPE' not found: create it with ajc queues new NOPE\n",
        )


async def test_retry_refuses_an_active_task_unless_forced(run_ajc: RunAjc, nats_url: str) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    router = asyncjobs.Router()

    @router.handler("t:slow")
    async def slow(task: asyncjobs.Task) -> str:
        started.set()
        await release.wait()
        return "done"

    async with await asyncjobs.connect(nats_url) as client:
        task = await client.enqueue(asyncjobs.Task("t:slow", "x"))
        worker = asyncio.ensure_future(client.run(router))
        try:
            await asyncio.wait_for(started.wait(), 10)
            refused = await run_ajc("tasks", "retry", task.id)
            assert refused.code == 1 and f"task {task.id} is active" in refused.err and "pass -f" in refused.err
            assert (await client.get_task(task.id)).state == "active"
            forced = await run_ajc("tasks", "retry", task.id, "-f")
            assert forced.code == 0, forced.err
            assert "               Status: retry" in forced.out.splitlines()
        finally:
            release.set()
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker


async def test_retry_many_retries_the_failed_tasks_that_match(run_ajc: RunAjc, nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url) as client:
        await complete_and_terminate(client, ok=1, bad=3)
        none = await run_ajc("tasks", "retry", "--failed", "--type", "t:ok")
        assert (none.code, none.out) == (0, "No tasks to retry\n")
        refused = await run_ajc("tasks", "retry", "--failed")
        assert refused.code == 2 and "really retry 3 tasks" in refused.err
        done = await run_ajc("tasks", "retry", "--failed", "--limit", "2", "-f")
        assert (done.code, done.out) == (0, "Retried 2 tasks\n"), done.err
        states = sorted([t.state.value async for t in client.admin.tasks(task_type="t:bad")])
        assert states == ["retry", "retry", "terminated"]
        rest = await run_ajc("tasks", "retry", "--state", "terminated", "--in-queue", "DEFAULT", "-f")
        assert rest.out == "Retried 1 tasks\n"
        assert [t.state.value async for t in client.admin.tasks(states=["terminated"])] == []
    for args in ((), ("someid", "--failed"), ("--type", "t:ok")):
        bad = await run_ajc("tasks", "retry", *args)
        assert bad.code == 2 and "Traceback" not in bad.err


async def test_retry_many_goes_past_one_batch_and_reports_a_missing_target_queue(
    run_ajc: RunAjc, nats_url: str
) -> None:
    count = 450  # more than the retries sent at once, and not a multiple of them
    async with await asyncjobs.connect(nats_url) as client:
        await client.enqueue_many([asyncjobs.Task("t:many", {"i": i}) for i in range(count)])
        missing = await run_ajc("tasks", "retry", "--state", "new", "--queue", "NOWHERE", "-f")
        assert missing.code == 1 and missing.out == f"Retried 0 of {count:,} tasks\n", missing.err
        errors = missing.err.splitlines()
        assert len(errors) == count and all("queue 'NOWHERE' not found" in line for line in errors)
        assert {t.state.value async for t in client.admin.tasks(task_type="t:many")} == {"new"}
        done = await run_ajc("tasks", "retry", "--state", "new", "-f")
        assert (done.code, done.out) == (0, f"Retried {count} tasks\n"), done.err
        states = [t.state.value async for t in client.admin.tasks(task_type="t:many")]
        assert len(states) == count and set(states) == {"retry"}


# ---- watch -------------------------------------------------------------------------------------------------------


async def watch_while_enqueueing(
    run_ajc: RunAjc, client: asyncjobs.Client, *args: str, task_type: str = "w:w"
) -> tuple[Result, list[str]]:
    """Run ``ajc tasks watch ARGS`` while enqueueing a task every 0.2 s until it ends (it subscribes at some point)."""
    watcher = asyncio.ensure_future(run_ajc("tasks", "watch", *args))
    ids: list[str] = []
    for _ in range(150):
        if watcher.done():
            break
        ids.append((await client.enqueue(asyncjobs.Task(task_type, "x"))).id)
        await asyncio.wait({watcher}, timeout=0.2)
    return await watcher, ids


async def test_watch_prints_upstreams_lines_until_count(run_ajc: RunAjc, nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url) as client:
        done, ids = await watch_while_enqueueing(run_ajc, client, "--count", "2")
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert len(lines) == 2, lines
    for line in lines:
        match = WATCH_LINE.match(line)
        assert match, line
        assert match.group("id") in ids
        assert (match.group("queue"), match.group("type"), match.group("tries"), match.group("state")) == (
            "DEFAULT", "w:w", "0", "new"
        )  # fmt: skip


async def test_watch_json_and_one_task(run_ajc: RunAjc, nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url) as client:
        done, ids = await watch_while_enqueueing(run_ajc, client, "--count", "2", "--json")
        assert done.code == 0, done.err
        events = done.json_lines()
        assert len(events) == 2
        for event in events:
            assert isinstance(event, dict)
            assert list(event)[:6] == ["event_id", "type", "timestamp", "task_id", "state", "tries"]
            assert event["type"] == "io.choria.asyncjobs.v1.task_state" and event["task_id"] in ids
            assert (event["queue"], event["task_type"], event["state"]) == ("DEFAULT", "w:w", "new")
        target = await client.enqueue(asyncjobs.Task("t:one", "x"))
        watcher = asyncio.ensure_future(run_ajc("tasks", "watch", "--task", target.id, "--count", "1"))
        for _ in range(150):
            if watcher.done():
                break
            await client.enqueue(asyncjobs.Task("t:other", "x"))  # not this task's: never shown
            await client.retry_task(target.id)
            await asyncio.wait({watcher}, timeout=0.2)
        one = await watcher
    match = WATCH_LINE.match(one.out.strip())
    assert match and match.group("id") == target.id and match.group("state") == "retry", one.out


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
async def test_watch_ends_cleanly_on_ctrl_c_and_term(nats_url: str, config_home: Path, stop: signal.Signals) -> None:
    watcher = await asyncio.create_subprocess_exec(
        str(AJC), "tasks", "watch", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=command_env(config_home),
    )  # fmt: skip
    try:
        assert watcher.stdout is not None
        async with await asyncjobs.connect(nats_url) as client:
            for _ in range(50):  # until it is subscribed: it prints the event of one of these
                await client.enqueue(asyncjobs.Task("w:w", "x"))
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(watcher.stdout.readline(), 0.3):
                        break
        watcher.send_signal(stop)
        _, err = await asyncio.wait_for(watcher.communicate(), 10)
        assert (watcher.returncode, err) == (0, b"")
    finally:
        if watcher.returncode is None:
            watcher.kill()
            await watcher.wait()


async def test_watch_for_a_while_ends_quietly(run_ajc: RunAjc, nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url):
        pass
    done = await run_ajc("tasks", "watch", "--for", "500ms")
    assert (done.code, done.out, done.err) == (0, "", "")
    bad = await run_ajc("tasks", "watch", "--for", "soon")
    assert bad.code == 2 and "invalid duration" in bad.err


# ---- signing -----------------------------------------------------------------------------------------------------


async def test_sign_and_verify_tasks(run_ajc: RunAjc, nats_url: str, tmp_path: Path) -> None:
    pair, other = generate_key_pair(), generate_key_pair()
    seed_file = tmp_path / "seed"
    seed_file.write_text(pair.seed_hex)
    signed = enqueued_id(await run_ajc("tasks", "--sign", str(seed_file), "add", "s:s", "hi"))
    async with await asyncjobs.connect(nats_url, verification_key=pair.public_key_hex) as client:
        assert (await client.get_task(signed)).signature  # verified on load
    shown = await run_ajc("tasks", "--verify", pair.public_key_hex, "view", signed)
    assert shown.code == 0 and shown.out.startswith(f"Task {signed} created at "), shown.err
    wrong = await run_ajc("tasks", "--verify", other.public_key_hex, "view", signed)
    assert (wrong.code, wrong.err) == (1, "ajc: error: invalid task signature\n")
    bad = await run_ajc("tasks", "--sign", "zz", "add", "s:s", "hi")
    assert bad.code == 2 and "seed" in bad.err
