"""What a failure reads like: the ``last_err`` each way a task fails or expires stores, and the log lines at WARNING.

Every task that ends without completing stores a ``last_err`` saying why, and every failed try or such ending is
logged at WARNING (the default level of ``logging.basicConfig()``); docs/logging.md lists them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest

import asyncjobs
from asyncjobs import TaskState
from asyncjobs.delivery import MAX_ERROR_CHARS, error_text
from asyncjobs.handling import SHUTDOWN_ERROR
from asyncjobs.reconciler import Reconciler
from asyncjobs.wiretime import WireTime, format_time
from tests.core.conftest import ClientFactory, running, wait_state

HOUR_NS = 3600 * 1_000_000_000


class Interrupted(BaseException):
    """A BaseException subclass of the handler's own."""


class Silent(Exception):
    """An exception raised without a message."""


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


FAILURES: dict[str, tuple[BaseException, str]] = {
    "key": (KeyError("email"), "KeyError: 'email'"),
    "base": (Interrupted("stop right there"), "Interrupted: stop right there"),
    "silent": (Silent(), "Silent"),
    "unprintable": (Unprintable(), "Unprintable: (its message could not be read: RuntimeError)"),
    "own": (asyncjobs.RemoteHandlerError("the callout said no"), "the callout said no"),
}


async def test_last_err_names_the_exception_type(make_client: ClientFactory) -> None:
    client = await make_client(queue=asyncjobs.Queue("LASTERR", max_run_time=0.5), concurrency=10)
    router = asyncjobs.Router()

    @router.handler("")
    async def handle(task: asyncjobs.Task) -> None:
        if task.type == "slow":
            await asyncio.sleep(30)
        if task.type == "huge":
            raise ValueError("x" * 2_000_000)  # more than a task may hold
        raise FAILURES[task.type][0]

    tasks = {kind: await client.enqueue(asyncjobs.Task(kind, max_tries=1)) for kind in [*FAILURES, "slow", "huge"]}
    async with running(client, router):
        done = {kind: await wait_state(client, task.id, TaskState.EXPIRED) for kind, task in tasks.items()}
    for kind, (_, expected) in FAILURES.items():
        assert done[kind].last_err == expected, kind
    assert done["slow"].last_err == (
        "handler exceeded the queue's max run time of 0.5s (raise the queue's max_run_time, or call "
        "task.mark_in_progress() while the handler makes progress)"
    )
    # Cut, so the task can still be stored with its error (uncut, the outcome was lost: the task too large).
    assert done["huge"].last_err.startswith("ValueError: xxx")
    assert done["huge"].last_err.endswith(
        f"... ({2_000_000 + len('ValueError: ') - MAX_ERROR_CHARS} more characters cut)"
    )


def test_error_text_keeps_last_err_encodable() -> None:
    assert error_text(OSError("cannot open report-\udcff.pdf")) == "OSError: cannot open report-\\udcff.pdf"
    assert error_text(asyncjobs.TerminateTask("no")) == "no: terminate task"
    assert error_text(asyncjobs.TerminateTask()) == "terminate task"
    assert error_text(asyncjobs.RemoteHandlerError()) == "RemoteHandlerError"


async def test_a_failed_try_is_logged_at_warning_with_its_traceback(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)  # the level of logging.basicConfig()
    client = await make_client(queue="TRACED")
    router = asyncjobs.Router()

    @router.handler("email:new")
    async def send_email(task: asyncjobs.Task) -> str:
        if task.tries == 1:
            raise KeyError("email")
        return "sent"

    task = await client.enqueue(asyncjobs.Task("email:new"))
    async with running(client, router):
        await wait_state(client, task.id, TaskState.COMPLETED)
    [record] = [r for r in caplog.records if task.id in r.getMessage()]
    assert record.name == "asyncjobs" and record.levelno == logging.WARNING
    line = logging.Formatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert line.startswith(f"WARNING asyncjobs: queue TRACED: task {task.id} (email:new) failed on try 1, retrying in ")
    assert line.splitlines()[0].endswith("s: KeyError: 'email'")
    assert "Traceback (most recent call last):" in line
    assert 'raise KeyError("email")' in line and "in send_email" in line


async def test_tasks_ending_without_completing_are_logged_at_warning(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    client = await make_client(queue="ENDINGS")
    router = asyncjobs.Router()

    @router.handler("")
    async def handle(task: asyncjobs.Task) -> None:
        if task.type == "stop":
            raise asyncjobs.TerminateTask("not wanted")
        raise asyncjobs.DependenciesFailed("the upstream report is missing")

    stop = await client.enqueue(asyncjobs.Task("stop"))
    orphan = await client.enqueue(asyncjobs.Task("orphan"))
    async with running(client, router):
        await wait_state(client, stop.id, TaskState.TERMINATED)
        await wait_state(client, orphan.id, TaskState.UNREACHABLE)
    lines = {r.getMessage(): r.levelno for r in caplog.records if r.name == "asyncjobs"}
    assert lines[f"queue ENDINGS: task {stop.id} (stop) terminated by its handler: not wanted: terminate task"] == (
        logging.WARNING
    )
    assert lines[f"queue ENDINGS: task {orphan.id} (orphan) is unreachable: the upstream report is missing"] == (
        logging.WARNING
    )


async def _store(client: asyncjobs.Client, task: asyncjobs.Task, **changes: object) -> asyncjobs.Task:
    """Rewrite a stored task as an earlier run would have left it."""
    stored = await client.get_task(task.id)
    for name, value in changes.items():
        setattr(stored, name, value)
    await client._storage.save_task(stored)
    return stored


async def test_expiry_by_deadline_says_so(make_client: ClientFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    client = await make_client(queue="LATE")
    deadline = datetime.now(UTC) - timedelta(seconds=1)
    fresh = await client.enqueue(asyncjobs.Task("late", deadline=deadline))
    failed = await client.enqueue(asyncjobs.Task("late", deadline=deadline + timedelta(hours=1)))
    # Its first try failed; the retry comes after the deadline.
    await _store(
        client, failed, state=TaskState.RETRY, tries=1, last_err="KeyError: 'email'", deadline_at=fresh.deadline_at
    )
    ran: list[str] = []
    router = asyncjobs.Router()

    @router.handler("late")
    async def handle(task: asyncjobs.Task) -> None:
        ran.append(task.id)

    async with running(client, router):
        expired_fresh = await wait_state(client, fresh.id, TaskState.EXPIRED)
        expired_failed = await wait_state(client, failed.id, TaskState.EXPIRED)
    assert ran == []
    assert fresh.deadline_at is not None
    when = format_time(fresh.deadline_at)
    assert expired_fresh.last_err == f"its deadline {when} passed before the task could run"
    assert (
        expired_failed.last_err == f"its deadline {when} passed before try 2 could start; last error: KeyError: 'email'"
    )
    [record] = [r for r in caplog.records if fresh.id in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"queue LATE: expiring task {fresh.id} (late) without running it: its deadline {when} passed before the "
        "task could run"
    )


async def test_expiry_by_used_up_tries_says_so(make_client: ClientFactory) -> None:
    client = await make_client(queue="USEDUP")
    # Its only try was cut short by a worker shutting down; it is delivered again with no try left.
    task = await client.enqueue(asyncjobs.Task("x", max_tries=1))
    await _store(client, task, state=TaskState.RETRY, tries=1, last_err=SHUTDOWN_ERROR)
    ran: list[str] = []
    router = asyncjobs.Router()

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> None:
        ran.append(task.id)

    async with running(client, router):
        done = await wait_state(client, task.id, TaskState.EXPIRED)
    assert ran == []
    assert done.last_err == f"the task's max_tries (1 try) is used up; last error: {SHUTDOWN_ERROR}"


async def test_expiry_on_the_queues_last_delivery_keeps_the_error(make_client: ClientFactory) -> None:
    client = await make_client(queue=asyncjobs.Queue("ONEDELIVERY", max_tries=1))
    router = asyncjobs.Router()

    @router.handler("x")
    async def handle(task: asyncjobs.Task) -> None:
        raise KeyError("email")

    task = await client.enqueue(asyncjobs.Task("x", max_tries=5))
    async with running(client, router):
        done = await wait_state(client, task.id, TaskState.EXPIRED)
    assert done.last_err == "KeyError: 'email'; the queue's max_tries (1 delivery) is used up"


async def test_expiry_by_the_reconciler_keeps_the_error(make_client: ClientFactory) -> None:
    client = await make_client(queue="PURGEDERR", reconcile_interval=None)
    task = await client.enqueue(asyncjobs.Task("x"))
    await _store(client, task, state=TaskState.RETRY, tries=1, last_err="KeyError: 'email'", tried_at=WireTime.now())
    await client.admin.purge_queue("PURGEDERR")
    # A clock an hour ahead: the task looks past the reconciler's grace without waiting for it.
    reconciler = Reconciler(
        client._storage, client.queue, interval=60, grace=60, clock=lambda: time.time_ns() + HOUR_NS
    )
    report = await reconciler.reconcile()
    assert report.expired == [task.id]
    done = await client.get_task(task.id)
    assert done.state == TaskState.EXPIRED
    assert done.last_err.startswith("its work item was removed when queue PURGEDERR was purged at ")
    assert done.last_err.endswith("; last error: KeyError: 'email'")
