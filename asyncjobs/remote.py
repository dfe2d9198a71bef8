"""Handlers that run elsewhere: NATS request-reply services and external commands.

See docs/protocol.md, sections Remote handlers and External commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from asyncjobs import codec
from asyncjobs.constants import (
    HDR_AJ_CONTENT_TYPE,
    HDR_AJ_ERROR,
    HDR_AJ_HANDLER_DEADLINE,
    HDR_AJ_TERMINATE,
    REQUEST_REPLY_CATCHALL,
    REQUEST_REPLY_PREFIX,
    TASK_CONTENT_TYPE,
)
from asyncjobs.errors import ConfigurationError, HandlerNotSupported, RemoteHandlerError, TerminateTask
from asyncjobs.task import Task

log = logging.getLogger("asyncjobs")

MIN_REMOTE_DEADLINE_S: Final = 3.0
DEADLINE_MARGIN_S: Final = 2.0
DEFAULT_QUEUE_GROUP: Final = "asyncjobs"
DEFAULT_REMOTE_CONCURRENCY: Final = 100
TASK_ENV: Final = "CHORIA_AJ_TASK"


def request_reply_subject(task_type: str) -> str:
    """The subject a remote handler for ``task_type`` serves (``""`` is the catch-all)."""
    return REQUEST_REPLY_PREFIX + (task_type or REQUEST_REPLY_CATCHALL)


def format_deadline_header(unix_s: float) -> str:
    """``AJ-Handler-Deadline``: RFC3339 in UTC with whole seconds, as Go formats it."""
    return datetime.fromtimestamp(int(unix_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_deadline_header(value: str) -> float:
    """Parse ``AJ-Handler-Deadline`` into a Unix time.

    Raises:
        ConfigurationError: the header is not an RFC3339 time.
    """
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise ConfigurationError(f"invalid {HDR_AJ_HANDLER_DEADLINE} header {value!r}") from exc


class RequestReplyHandler:
    """Delegates a task to a service answering on ``CHORIA_AJ.H.T.<type>``.

    The request carries the task JSON and the handler's deadline less two seconds; a plain reply is the result
    (stored as base64, as Go does), ``AJ-Error`` retries the task and ``AJ-Terminate`` terminates it.
    Unlike the current Go release, the handler deadline is always set (the queue's max run time), so remote
    handlers work without a deadline on the worker's context.
    """

    def __init__(self, task_type: str) -> None:
        self.subject = request_reply_subject(task_type)

    async def __call__(self, task: Task) -> bytes:
        context = task._handler
        if context is None:
            raise HandlerNotSupported("a request-reply handler only runs inside a worker")
        remaining = context.deadline - time.time()
        if remaining < MIN_REMOTE_DEADLINE_S:
            raise RemoteHandlerError(f"deadline too short: {remaining:.1f}s left, remote handlers need 3s")
        headers = {
            HDR_AJ_CONTENT_TYPE: TASK_CONTENT_TYPE,
            HDR_AJ_HANDLER_DEADLINE: format_deadline_header(context.deadline - DEADLINE_MARGIN_S),
        }
        try:
            reply = await context.nc.request(self.subject, codec.encode_task(task), timeout=remaining, headers=headers)
        except Exception as exc:
            raise RemoteHandlerError(f"request-reply callout failed: {exc or type(exc).__name__}") from exc
        reply_headers = reply.headers or {}
        if HDR_AJ_TERMINATE in reply_headers:
            raise TerminateTask(reply_headers[HDR_AJ_TERMINATE])
        if HDR_AJ_ERROR in reply_headers:
            raise RemoteHandlerError(reply_headers[HDR_AJ_ERROR])
        return reply.data


async def serve_remote_handler(
    nc: NATS,
    task_type: str,
    handler: Callable[[Task], Awaitable[Any]],
    *,
    queue_group: str = DEFAULT_QUEUE_GROUP,
    concurrency: int = DEFAULT_REMOTE_CONCURRENCY,
) -> Subscription:
    """Serve ``handler`` for ``task_type`` over request-reply, for workers (Go or Python) that route it remotely.

    The handler runs with the deadline from the request's ``AJ-Handler-Deadline``. Its return value is the reply
    body (``bytes`` as they are, anything else JSON-encoded); :class:`TerminateTask` replies ``AJ-Terminate`` and
    other exceptions ``AJ-Error`` (and are logged at WARNING with their traceback). Unsubscribe the returned
    subscription to stop serving; requests already running still finish and reply.

    Args:
        nc: a connected nats-py client.
        task_type: the task type served (``""`` serves the catch-all subject).
        handler: ``async def handler(task) -> result``.
        queue_group: the queue group, so several processes share the requests.
        concurrency: requests handled at once; further requests wait in the subscription (back-pressure).

    Raises:
        ConfigurationError: ``concurrency`` is not an integer of at least 1.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be an integer of at least 1, not {concurrency!r}")
    slots = asyncio.Semaphore(concurrency)

    async def dispatch(msg: Msg) -> None:
        # nats-py awaits this callback before it hands over the next message: waiting here is the back-pressure.
        await slots.acquire()
        try:
            spawned = asyncio.create_task(_respond(nc, msg, handler, task_type))
        except BaseException:
            slots.release()
            raise
        _RUNNING.add(spawned)
        spawned.add_done_callback(finished)

    def finished(done: asyncio.Task[None]) -> None:
        _RUNNING.discard(done)
        slots.release()

    return await nc.subscribe(request_reply_subject(task_type), queue=queue_group, cb=dispatch)


# Requests in flight, so they are not garbage collected while they run (the subscription may be dropped first).
_RUNNING: Final[set[asyncio.Task[None]]] = set()


async def _respond(nc: NATS, msg: Msg, handler: Callable[[Task], Awaitable[Any]], task_type: str) -> None:
    """Run the handler for one request and publish its reply; never raises but for cancellation."""
    headers: dict[str, str] = {}
    body = b""
    task_id = "?"
    scope: asyncio.Timeout | None = None
    try:
        task = codec.decode_task(msg.data)
        task_id = task.id
        deadline = (msg.headers or {}).get(HDR_AJ_HANDLER_DEADLINE)
        timeout = None if deadline is None else max(0.0, parse_deadline_header(deadline) - time.time())
        scope = asyncio.timeout(timeout)
        async with scope:
            value = await handler(task)
        body = value if isinstance(value, bytes) else codec.dumps(codec.result_payload(value))
    except TerminateTask as exc:
        headers[HDR_AJ_TERMINATE] = str(exc.args[0]) if exc.args else "terminated"
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # we are being cancelled (shutdown): no reply, the requester's timeout covers it
        headers[HDR_AJ_ERROR] = "handler was cancelled"
        log.warning("remote handler for %r cancelled itself on task %s", task_type, task_id, exc_info=True)
    except BaseException as exc:  # SystemExit or KeyboardInterrupt from a handler must not reach nats-py
        headers[HDR_AJ_ERROR] = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError) and scope is not None and scope.expired():
            headers[HDR_AJ_ERROR] = "remote handler did not finish before its deadline"
        log.warning("remote handler for %r failed on task %s: %r", task_type, task_id, exc, exc_info=exc)
    if not msg.reply:
        return
    try:
        await nc.publish(msg.reply, body, headers=headers or None)
    except Exception as exc:
        log.warning("cannot send the reply of the remote handler for %r on task %s: %s", task_type, task_id, exc)


class ExternalCommand:
    """Runs a command for each task (Go's ``ExternalProcess``).

    The task JSON is written to a temporary file whose path is in ``CHORIA_AJ_TASK`` (as Go does) and is also
    given on standard input. The environment holds ``CHORIA_AJ_TASK``, ``PATH`` and ``env``. Combined standard
    output and error become the result (a JSON string); a non-zero exit fails the task with
    ``execution failed: exit status N`` (the output is on the error's ``output``) and it is retried. The process
    is killed if the handler is cancelled.

    Raises:
        RemoteHandlerError: the command does not exist, is a directory, or is not executable.
    """

    def __init__(self, command: str | Path, *, args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> None:
        path = Path(command)
        if not path.exists() or path.is_dir() or not os.access(path, os.X_OK):
            raise RemoteHandlerError(f"command not found: {command} must be an executable file")
        self.command = str(path)
        self.args = tuple(args)
        self.env = dict(env or {})

    async def __call__(self, task: Task) -> str:
        data = codec.encode_task(task)
        fd, tmp = tempfile.mkstemp(prefix="asyncjobs-task-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            env = {"PATH": os.environ.get("PATH", os.defpath), **self.env, TASK_ENV: tmp}
            proc = await asyncio.create_subprocess_exec(
                self.command,
                *self.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                # Its own session: a Ctrl-C in the worker's terminal is the worker's to handle (it lets the command
                # finish within the shutdown grace); the command is killed only if the handler is cancelled.
                start_new_session=True,
            )
            try:
                output, _ = await proc.communicate(data)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if proc.returncode != 0:
            raise RemoteHandlerError(
                f"execution failed: exit status {proc.returncode}", output=output.decode("utf-8", "replace")
            )
        return output.decode("utf-8", "replace")
