"""``ajc tasks`` beside upstream's Go ``ajc`` on one server: the same arguments, the same views, tables and events."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

import asyncjobs
from asyncjobs.signing import generate_key_pair
from tests.cli.conftest import Result, RunAjc
from tests.cli.test_tasks import WATCH_LINE, command_env, complete_and_terminate, enqueued_id, table_rows

ADD_FLAGS = ("-q", "EMAIL", "--tries", "3", "--deadline", "1h", "--depends", "a,b", "--depends", "c", "--load")


def without_ages(text: str) -> str:
    """A store block without its ``(12.34s)`` ages, which differ between two runs."""
    return re.sub(r" \([0-9.dhms]+\)$", "", text, flags=re.MULTILINE)


def same_view(ours: Result, go: Result) -> None:
    assert (ours.code, go.code) == (0, 0), (ours.err, go.err)
    assert ours.out.rstrip("\n") == go.out.rstrip("\n")


async def test_go_adds_and_ours_shows_the_same(run_ajc: RunAjc, run_go_ajc: RunAjc, nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url, queue="EMAIL"):
        pass  # Go's `tasks add` binds the queue, and fails on a server without it
    flagged = enqueued_id(await run_go_ajc("tasks", "add", "email:new", "hi <you>", *ADD_FLAGS))
    plain = enqueued_id(await run_go_ajc("t", "enqueue", "email:new", "hello", "--queue", "EMAIL"))
    for task_id in (flagged, plain):
        same_view(await run_ajc("tasks", "view", task_id), await run_go_ajc("tasks", "view", task_id))
        ours, go = await run_ajc("tasks", "v", task_id, "-j"), await run_go_ajc("tasks", "v", task_id, "-j")
        assert ours.json() == go.json()
    ours_list, go_list = await run_ajc("tasks", "ls"), await run_go_ajc("tasks", "ls")
    assert table_rows(ours_list.out) == table_rows(go_list.out)
    assert "2 Tasks" in ours_list.out and "2 Tasks" in go_list.out
    ours_one, go_one = await run_ajc("tasks", "ls", "1"), await run_go_ajc("tasks", "ls", "1")
    assert table_rows(ours_one.out) == table_rows(go_one.out) and "1 of 2 Tasks" in ours_one.out


async def test_ours_adds_what_go_would_and_go_shows_the_same(
    run_ajc: RunAjc, run_go_ajc: RunAjc, nats_url: str
) -> None:
    async with await asyncjobs.connect(nats_url, queue="EMAIL"):
        pass
    ours_id = enqueued_id(await run_ajc("tasks", "add", "email:new", "hi <you>", *ADD_FLAGS))
    go_id = enqueued_id(await run_go_ajc("tasks", "add", "email:new", "hi <you>", *ADD_FLAGS))
    same_view(await run_ajc("tasks", "view", ours_id), await run_go_ajc("tasks", "view", ours_id))
    ours = await run_go_ajc("tasks", "view", ours_id, "-j")
    go = await run_go_ajc("tasks", "view", go_id, "-j")
    mine, theirs = ours.json(), go.json()
    assert isinstance(mine, dict) and isinstance(theirs, dict)
    assert list(mine) == list(theirs)  # the same fields, in Go's order
    for key in ("type", "queue", "payload", "max_tries", "dependencies", "load_dependencies", "state", "tries"):
        assert mine[key] == theirs[key], key
    for alias in ("new", "a"):  # both CLIs take the same aliases
        enqueued_id(await run_ajc("task", alias, "x:y", "hi", "-q", "EMAIL"))
        enqueued_id(await run_go_ajc("task", alias, "x:y", "hi", "-q", "EMAIL"))


async def test_processed_tasks_look_the_same(run_ajc: RunAjc, run_go_ajc: RunAjc, nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url) as client:
        await complete_and_terminate(client, ok=1, bad=1)
        ids = [task.id async for task in client.admin.tasks()]
    for task_id in ids:
        same_view(await run_ajc("tasks", "view", task_id), await run_go_ajc("tasks", "view", task_id))
    same_rows = table_rows((await run_ajc("tasks", "ls")).out) == table_rows((await run_go_ajc("tasks", "ls")).out)
    assert same_rows


async def test_retry_delete_and_purge_beside_go(run_ajc: RunAjc, run_go_ajc: RunAjc, nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url, queue="EMAIL") as client:
        first = await client.enqueue(asyncjobs.Task("x:y", "one"))
        second = await client.enqueue(asyncjobs.Task("x:y", "two"))
    ours = await run_ajc("tasks", "retry", first.id, "-q", "EMAIL")
    same_view(ours, await run_go_ajc("tasks", "view", first.id))
    go = await run_go_ajc("tasks", "retry", second.id)  # to DEFAULT, upstream's default
    same_view(await run_ajc("tasks", "view", second.id), go)
    assert "                Queue: DEFAULT" in go.out.splitlines()
    removed = await run_ajc("tasks", "delete", first.id, "-f")
    assert removed.out == f"Removed Task {first.id}\n"
    gone = await run_go_ajc("tasks", "view", first.id)
    assert gone.code == 1 and "task not found" in gone.err
    assert (await run_go_ajc("tasks", "purge", "-f")).out == "Purged all task entries\n"
    empty = await run_ajc("tasks", "ls")
    assert (empty.code, empty.err) == (1, "ajc: error: no tasks found\n")
    go_empty = await run_go_ajc("tasks", "ls")
    assert go_empty.code == 1 and "no tasks found" in go_empty.err


async def test_store_commands_show_what_go_shows(run_ajc: RunAjc, run_go_ajc: RunAjc, nats_url: str) -> None:
    ours = await run_ajc("tasks", "initialize", "--retention", "1h", "--replicas", "1")
    go = await run_go_ajc("tasks", "initialize", "--retention", "5h")  # the store exists: left as it is
    same_view(ours, go)
    enqueued_id(await run_ajc("tasks", "add", "x:y", "hi"))
    for retention in ("2h", "50h", "400d", "0"):
        ours, go = await run_ajc("tasks", "configure", retention, "1"), await run_go_ajc("tasks", "cfg", retention, "1")
        assert (ours.code, go.code) == (0, 0), (ours.err, go.err)
        assert without_ages(ours.out).rstrip("\n") == without_ages(go.out).rstrip("\n")


async def test_watch_shows_the_lines_go_shows(run_ajc: RunAjc, nats_url: str, config_home: Path, go_peer: Path) -> None:
    go = await asyncio.create_subprocess_exec(
        str(go_peer / "ajc"),
        "tasks",
        "watch",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=command_env(config_home),
    )
    try:
        async with await asyncjobs.connect(nats_url) as client:
            assert go.stdout is not None
            for _ in range(50):  # until Go's watch is subscribed: it prints the events of these
                await client.enqueue(asyncjobs.Task("w:pre", "x"))
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(go.stdout.readline(), 0.3):
                        break
            watcher = asyncio.ensure_future(run_ajc("tasks", "watch", "--count", "3"))
            for _ in range(150):
                if watcher.done():
                    break
                await client.enqueue(asyncjobs.Task("w:w", "x"))
                await asyncio.wait({watcher}, timeout=0.2)
            ours = await watcher
        assert ours.code == 0, ours.err
        wanted = ours.out.splitlines()
        assert len(wanted) == 3 and all(WATCH_LINE.match(line) for line in wanted), wanted
        seen: list[str] = []
        while not set(wanted) <= set(seen):  # Go subscribed first, so it saw every event ours saw
            line = await asyncio.wait_for(go.stdout.readline(), 10)
            assert line, "Go's watch ended"
            seen.append(line.decode().rstrip("\n"))
    finally:
        with contextlib.suppress(ProcessLookupError):
            go.kill()
        await go.wait()


async def test_signed_tasks_verify_across_both(run_ajc: RunAjc, run_go_ajc: RunAjc, nats_url: str) -> None:
    pair, other = generate_key_pair(), generate_key_pair()
    ours = enqueued_id(await run_ajc("tasks", "--sign", pair.seed_hex, "add", "s:s", "hi"))
    go = enqueued_id(await run_go_ajc("tasks", "--sign", pair.seed_hex, "add", "s:s", "hi"))
    for task_id in (ours, go):
        same_view(
            await run_ajc("tasks", "--verify", pair.public_key_hex, "view", task_id),
            await run_go_ajc("tasks", "--verify", pair.public_key_hex, "view", task_id),
        )
        for run in (run_ajc, run_go_ajc):
            refused = await run("tasks", "--verify", other.public_key_hex, "view", task_id)
            assert refused.code == 1 and "invalid task signature" in refused.err
