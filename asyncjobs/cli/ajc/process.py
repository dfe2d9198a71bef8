"""``ajc tasks process``: process a queue's tasks of one type with a shell command, a remote handler or a router.

Upstream's command runs a shell command per task (the task JSON in the file named by ``CHORIA_AJ_TASK``, the output
as the result) or calls a request-reply service (``--remote``). This one also takes a Python router by import path,
stops on ``--count``/``--until-idle``, and stops cleanly on SIGTERM or SIGINT: no new tasks are taken, running
handlers get the shutdown grace, and a second signal hands their tasks back at once (``asyncjobs.cli.signals``,
shared with ``asyncjobs worker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, NoReturn

import click

from asyncjobs.cli.ajc.output import Output, go_duration, size
from asyncjobs.cli.ajc.session import EXIT_USAGE, connection_options, fail, run, session
from asyncjobs.errors import (
    AsyncJobsError,
    ConfigurationError,
    NoHandlerError,
    QueueNotFound,
    RemoteHandlerError,
    TerminateTask,
)
from asyncjobs.retry import retry_policy_names

if TYPE_CHECKING:
    from asyncjobs.cli.signals import StopSignals
    from asyncjobs.remote import ExternalCommand
    from asyncjobs.router import Handler, Router
    from asyncjobs.task import Task

# The worker machinery (asyncjobs.runner, asyncjobs.cli.signals) is imported when the command runs: importing it
# costs a tenth of a second, which every other ajc command would pay.

log = logging.getLogger("asyncjobs")

ALL_TYPES: Final = "*"
"""The ``<type>`` that means every type: the catch-all for a command or ``--remote``, all of a router's types."""
DEFAULT_SHUTDOWN_GRACE_S: Final = 30.0
STATUS_REFRESH_PER_S: Final = 4
DISCARD_CHOICES: Final = ("complete", "completed", "expired", "terminated")
QUIET_ERRORS: Final = (RemoteHandlerError, NoHandlerError)
"""Failures whose message says it all: the worker logs them without a traceback (which would point into asyncjobs)."""

HELP: Final = f"""Process Tasks from a given queue

Runs COMMAND (an executable file) once per task of type TYPE from the existing queue QUEUE, CONCURRENCY at a time:
the task's JSON is in the file named by $CHORIA_AJ_TASK, the command's output becomes the task's result, and a
non-zero exit fails the try (the task is retried). With --remote each task is sent to the request-reply service
for its type instead. TYPE, QUEUE, CONCURRENCY and COMMAND may come from $AJC_TYPE, $AJC_QUEUE, $AJC_CONCURRENCY and
$AJC_COMMAND, as with Go's ajc.

A Python router may be given by import path instead of COMMAND (MODULE:ATTR when no such file exists, or --router
MODULE:ATTR), an asyncjobs.Router or a callable returning one, imported from --app-dir. TYPE then picks which of
its types are served: those starting with TYPE (or the handler TYPE falls to); '{ALL_TYPES}' serves them all. With a
command or --remote, '{ALL_TYPES}' handles every type. Tasks of other types fail with "no handler" and are retried,
as with Go's ajc.

SIGTERM or SIGINT stops taking tasks and lets running handlers finish (--shutdown-grace); a second one hands their
tasks back to the queue at once (exit 128+signal)."""


class _Tally:
    """What this process did, for the status line, the last log line and ``--count``."""

    def __init__(self, queue: str, limit: int | None, stop: asyncio.Event) -> None:
        self.queue = queue
        self.limit = limit
        self.stop = stop
        self.processed = 0
        self.failed = 0
        self.running = 0
        self.final = 0

    def ended(self, *, failed: bool, final: bool) -> None:
        self.processed += 1
        self.failed += failed
        self.final += final
        if self.limit is not None and self.final >= self.limit and not self.stop.is_set():
            log.info("%d tasks reached a final state (--count %d): stopping", self.final, self.limit)
            self.stop.set()

    def __rich__(self) -> Any:
        from rich.text import Text

        return Text.assemble(
            ("processing ", "bold"),
            (self.queue, "bold cyan"),
            f": {self.processed} processed, ",
            (f"{self.failed} failed", "red" if self.failed else ""),
            f", {self.running} running",
        )


def _payload_size(value: Any) -> int:
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, str):
        return len(value.encode("utf-8", "replace"))
    from asyncjobs import codec

    try:
        return len(codec.dumps(codec.result_payload(value)))
    except (AsyncJobsError, TypeError, ValueError):
        return 0  # the worker reports the result it cannot store


def _observed(handler: Handler, using: str, tally: _Tally) -> Handler:
    """``handler`` with upstream's log lines around each try, counted in ``tally``."""

    async def observe(task: Task) -> Any:
        log.info("Running task %s try %d using %s", task.id, task.tries, using)
        started = time.monotonic()
        tally.running += 1
        try:
            result = await handler(task)
        except Exception as exc:  # not CancelledError: a stop is no outcome, the task is handed back
            if isinstance(exc, RemoteHandlerError) and exc.output:
                log.error("Running %s failed: %s", using, json.dumps(exc.output))  # quoted, as upstream logs it
            # The worker logs the failure; a last try, or a handler that terminates its task, is a final outcome.
            tally.ended(failed=True, final=isinstance(exc, TerminateTask) or 0 < task.max_tries <= task.tries)
            raise
        finally:
            tally.running -= 1
        log.info(
            "Task %s completed using %s after %s and %d tries with %s payload",
            task.id,
            using,
            go_duration(round(time.monotonic() - started, 9)),  # to the nanosecond, as Go prints it
            task.tries,
            size(_payload_size(result)),
        )
        tally.ended(failed=False, final=True)
        return result

    return observe


def _routes(source: Router, task_type: str) -> list[str]:
    """The types of ``source`` to serve for ``task_type`` (see the help text)."""
    from asyncjobs.router import Router

    if task_type == ALL_TYPES:
        return source.task_types
    chosen = [t for t in source.task_types if t.startswith(task_type)]
    if not chosen and source.lookup(task_type) is not Router().lookup(task_type):
        chosen = [task_type]  # a broader prefix (or the catch-all) of the router handles it
    if not chosen:
        raise ConfigurationError(
            f"the router has no handler for task type {task_type!r}: it handles "
            f"{', '.join(repr(t) for t in source.task_types)} (pass '{ALL_TYPES}' to serve them all)"
        )
    return chosen


class _Plan:
    """What serves the tasks: a command, a remote service or a router, checked before anything connects."""

    def __init__(self, task_type: str, command: str | None, router: str | None, remote: bool, app_dir: str) -> None:
        self.task_type = task_type
        self.command: str | None = None
        self.router: str | None = router
        self.remote = remote
        self.external: ExternalCommand | None = None
        if command is not None and router is not None:
            fail(f"give either COMMAND ({command}) or --router ({router}), not both", status=EXIT_USAGE)
        if command is not None:
            if os.path.exists(command):
                self.command = command
            elif ":" in command:
                self.router = command
            else:
                fail(
                    f"command {command!r} not found: give an executable file, or MODULE:ATTR for a Python router",
                    status=EXIT_USAGE,
                )
        choices = (("a command", self.command), ("a router", self.router), ("--remote", remote))
        given = [name for name, value in choices if value]
        if not given:
            fail("either a command, a router (MODULE:ATTR or --router) or --remote is required", status=EXIT_USAGE)
        if len(given) > 1:
            fail(f"give only one of a command, a router or --remote, not {' and '.join(given)}", status=EXIT_USAGE)
        if self.command is not None:
            if not os.access(self.command, os.X_OK) or os.path.isdir(self.command):
                fail(f"command {self.command!r} is not an executable file: chmod +x it", status=EXIT_USAGE)
            from asyncjobs.remote import ExternalCommand

            self.external = ExternalCommand(os.path.abspath(self.command))
        if self.router is not None:
            from asyncjobs.runner import check_router

            sys.path.insert(0, os.path.abspath(app_dir))
            try:
                check_router(self.router)
            except AsyncJobsError as exc:
                fail(str(exc).splitlines()[0], status=EXIT_USAGE)
        elif task_type != ALL_TYPES:
            from asyncjobs.task import validate_name

            try:
                validate_name(task_type, "task type")
            except AsyncJobsError as exc:
                fail(str(exc), status=EXIT_USAGE)

    async def build(self, tally: _Tally) -> Router:
        """The router the worker runs: each handler wrapped with the log lines and the tally."""
        from asyncjobs.remote import RequestReplyHandler
        from asyncjobs.router import Router
        from asyncjobs.runner import resolve_router

        router = Router()
        catch = "" if self.task_type == ALL_TYPES else self.task_type
        if self.external is not None:
            router.add(catch, _observed(self.external, f'"{self.command}"', tally))
        elif self.remote:
            remote = RequestReplyHandler(catch)
            router.add(catch, _observed(remote, f"request-reply subject {remote.subject}", tally))
        else:
            assert self.router is not None
            source = await resolve_router(self.router)
            for route in _routes(source, self.task_type):
                router.add(route, _observed(source.lookup(route), f"{self.router} ({route or 'catch-all'})", tally))
        return router


class _QuietFailures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, QUIET_ERRORS):
            record.exc_info = None
        return True


@contextlib.contextmanager
def _status_line(out: Output, tally: _Tally) -> Iterator[None]:
    """On a terminal, a live line of counts under the log lines (logged through rich); nothing otherwise."""
    if not out.interactive:
        yield
        return
    from rich.live import Live
    from rich.logging import RichHandler

    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [RichHandler(console=out.console, show_path=False, markup=False, rich_tracebacks=False)]
    try:
        with Live(tally, console=out.console, refresh_per_second=STATUS_REFRESH_PER_S, transient=True):
            yield
    finally:
        root.handlers = saved


@contextlib.contextmanager
def _stop_signals(grace: float) -> Iterator[StopSignals]:
    """The worker command's stop signals, installed for the command's life (put back after, for in-process use)."""
    from asyncjobs.cli.signals import StopSignals
    from asyncjobs.runner import STOP_SIGNALS

    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    signals = StopSignals(grace=grace, supervised=False)
    signals.install()  # first: a signal while a router module is imported exits at once
    quiet = _QuietFailures()
    log.addFilter(quiet)
    try:
        yield signals
    finally:
        log.removeFilter(quiet)
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


class _Work:
    """The command's coroutine: build the router, run the worker until it stops, say what it did."""

    def __init__(
        self,
        plan: _Plan,
        queue: str,
        options: dict[str, Any],
        *,
        count: int | None,
        until_idle: bool,
        signals: StopSignals,
    ) -> None:
        self.plan = plan
        self.queue = queue
        self.options = options
        self.count = count
        self.until_idle = until_idle
        self.signals = signals

    async def run(self) -> int:
        from asyncjobs.queue import Queue
        from asyncjobs.runner import run_worker_async

        signals = self.signals
        tally = _Tally(self.queue, self.count, signals.stop)
        router = await self.plan.build(tally)
        options = dict(self.options)
        servers = options.pop("servers", None)
        try:
            with _status_line(Output(), tally):
                status = await run_worker_async(
                    router,
                    servers,
                    queue=Queue(self.queue, no_create=True),
                    until_idle=self.until_idle,
                    handle_signals=False,
                    stop=signals.stop,
                    hurry=signals.hurry,
                    **options,
                )
        except QueueNotFound:
            fail(f"queue {self.queue!r} not found: create it with ajc queues new {self.queue}")
        log.info("processed %d tasks, %d failed", tally.processed, tally.failed)
        return status if signals.hurried_by is None else 128 + signals.hurried_by


def _usage(message: str) -> NoReturn:
    fail(message, status=EXIT_USAGE)


@click.command("process", help=HELP, short_help="Process Tasks from a given queue")
@click.argument("task_type", metavar="TYPE", envvar="AJC_TYPE")
@click.argument("queue", envvar="AJC_QUEUE")
@click.argument("concurrency", type=int, envvar="AJC_CONCURRENCY")
@click.argument("command", required=False, envvar="AJC_COMMAND")
@click.option("--remote/--no-remote", default=False, help="Process tasks using a remote request-reply callout")
@click.option(
    "--monitor",
    type=int,
    envvar="AJC_MONITOR",
    metavar="PORT",
    help="Runs monitoring (Prometheus) on the given port (env AJC_MONITOR)",
)
@click.option(
    "--discard-complete/--no-discard-complete", default=False, help="Discard messages in the 'complete' state"
)
@click.option("--discard-expired/--no-discard-expired", default=False, help="Discard messages in the 'expired' state")
@click.option("--discard", "discard", multiple=True, type=click.Choice(DISCARD_CHOICES, case_sensitive=False),
              help="Discard tasks reaching this state (repeatable)")  # fmt: skip
@click.option("--backoff", "--retry-policy", "backoff", default="default", show_default=True,
              type=click.Choice(retry_policy_names()), help="Selects a backoff policy to apply")  # fmt: skip
@click.option("--router", "router", metavar="MODULE:ATTR", help="A Python router (asyncjobs.Router) to run")
@click.option("--app-dir", default=".", show_default=True, metavar="DIR", help="Directory the router is imported from")
@click.option("--count", type=int, metavar="N", help="Stop once N tasks reached a final state")
@click.option("--until-idle", is_flag=True, help="Stop once nothing is waiting, running or due for a retry")
@click.option("--shutdown-grace", type=float, default=DEFAULT_SHUTDOWN_GRACE_S, show_default=True, metavar="SECONDS",
              help="How long running handlers get to finish after a stop signal")  # fmt: skip
@connection_options()
def process(
    task_type: str,
    queue: str,
    concurrency: int,
    command: str | None,
    remote: bool,
    monitor: int | None,
    discard_complete: bool,
    discard_expired: bool,
    discard: tuple[str, ...],
    backoff: str,
    router: str | None,
    app_dir: str,
    count: int | None,
    until_idle: bool,
    shutdown_grace: float,
) -> None:
    if concurrency < 1:
        _usage(f"concurrency must be at least 1, not {concurrency}")
    if count is not None and count < 1:
        _usage(f"--count must be at least 1, not {count}")
    if monitor is not None and not 0 <= monitor <= 65535:
        _usage(f"--monitor must be a TCP port (1-65535), not {monitor}")
    if shutdown_grace < 0:
        _usage(f"--shutdown-grace must be 0 or more seconds, not {shutdown_grace:g}")
    from asyncjobs.cli.signals import run_loop

    with _stop_signals(shutdown_grace) as signals:
        plan = _Plan(task_type, command, router, remote, app_dir)
        states = {*discard, *(["complete"] if discard_complete else []), *(["expired"] if discard_expired else [])}
        options: dict[str, Any] = {
            **session().client_options(),
            "concurrency": concurrency,
            "retry_policy": backoff,
            "discard": sorted(states),
            "shutdown_grace": shutdown_grace,
        }
        if monitor:  # 0, as upstream's default, means no monitoring
            options["prometheus_port"] = monitor
        work = _Work(plan, queue, options, count=count, until_idle=until_idle, signals=signals)
        status = run(work.run, service=True, runner=lambda main: run_loop(main, signals))
    if status:
        raise click.exceptions.Exit(status)
