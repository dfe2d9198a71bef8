"""``asyncjobs worker MODULE:ATTR``: run a router's handlers as a service, in one process or several."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import traceback
from typing import Any, Final

from asyncjobs.cli.connection import add_connection_arguments, connection_options
from asyncjobs.cli.signals import StopSignals, run_loop
from asyncjobs.cli.supervisor import CHILD_INDEX_ENV, SUPERVISOR_PID_ENV, supervise
from asyncjobs.errors import AsyncJobsError, ConfigurationError
from asyncjobs.loops import LOOP_CHOICES, loop_factory
from asyncjobs.queue import Queue
from asyncjobs.retry import retry_policy_names
from asyncjobs.runner import check_router, run_worker_async

log = logging.getLogger("asyncjobs")

EXIT_FAILED: Final = 1
"""The worker stopped on an error (NATS unreachable, the connection closed for good): a supervisor restarts it."""
EXIT_USAGE: Final = 2
"""Bad arguments, options or router: restarting cannot help."""
PARENT_CHECK_INTERVAL_S: Final = 1.0
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def add_parser(commands: Any) -> None:
    """Add the ``worker`` command to an argparse sub-parser collection."""
    parser = commands.add_parser(
        "worker",
        help="process a queue with the handlers of a router",
        description=(
            "Process a queue with the handlers of an asyncjobs.Router. SIGTERM or SIGINT stops taking tasks, gives "
            "running handlers --shutdown-grace seconds, hands the rest back to the queue and exits 0; a second "
            "signal hands them back at once."
        ),
    )
    parser.add_argument("router", metavar="MODULE:ATTR", help="an asyncjobs.Router, or a callable returning one")
    add_connection_arguments(parser)
    work = parser.add_argument_group("work")
    work.add_argument("--queue", "-q", default="DEFAULT", help="the queue to process (default %(default)s)")
    work.add_argument("--no-create", action="store_true", help="fail if the queue does not exist (guards typos)")
    work.add_argument("--concurrency", "-c", type=int, default=10, help="handlers at once per process (default 10)")
    work.add_argument("--processes", "-p", type=int, default=1, help="worker processes to supervise (default 1)")
    work.add_argument("--retry-policy", "--retry", default="default", choices=retry_policy_names(),
                      help="delays between tries of a failed task (default %(default)s)")  # fmt: skip
    work.add_argument("--discard", action="append", default=[], metavar="STATE",
                      help="delete tasks that end in this state instead of keeping them (repeatable)")  # fmt: skip
    work.add_argument("--shutdown-grace", type=float, default=30.0,
                      help="seconds running handlers get to finish on stop (default %(default)s)")  # fmt: skip
    work.add_argument("--until-idle", action="store_true", help="exit 0 once the queue is idle")
    work.add_argument("--replicas", type=int, default=1,
                      help="replicas for streams this worker creates (1 to 5; existing ones keep theirs)")  # fmt: skip
    work.add_argument("--verification-key-file", help="verify task signatures with this ed25519 public key file")
    work.add_argument("--signatures-optional", action="store_true", help="with a key, accept unsigned tasks too")
    watch = parser.add_argument_group("monitoring")
    watch.add_argument("--metrics-port", type=int, help="serve /metrics, /healthz and /readyz on this port "
                       "(process N of --processes serves on PORT+N)")  # fmt: skip
    watch.add_argument("--metrics-address", default="0.0.0.0", help="address to bind (default %(default)s)")
    watch.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                       help="default %(default)s")  # fmt: skip
    watch.add_argument(
        "--loop",
        default="auto",
        choices=LOOP_CHOICES,
        help="event loop: uvloop when installed (auto, the default), or the one named",
    )
    watch.add_argument("--app-dir", default=".", help="directory to import MODULE from (default: the current one)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the ``worker`` command; returns the exit status."""
    supervised = os.environ.get(SUPERVISOR_PID_ENV) is not None
    signals = StopSignals(grace=args.shutdown_grace, supervised=supervised)
    signals.install()  # first of all: a signal while the router module is imported exits at once
    child = os.environ.get(CHILD_INDEX_ENV)
    index = int(child) if child is not None and child.isdigit() else None
    _configure_logging(args.log_level, index)
    sys.path.insert(0, os.path.abspath(args.app_dir))
    try:
        if args.processes < 1:
            raise ConfigurationError(f"--processes must be at least 1, not {args.processes}")
        options = connect_options(args, index or 0)
        new_loop = loop_factory(args.loop)
        check_router(args.router)  # fail here, before connecting or starting processes
    except ConfigurationError as exc:
        return _usage_error(exc)
    if args.processes > 1 and index is None:
        return supervise(args.processes, [sys.executable, "-m", "asyncjobs", *argv])
    try:
        return run_loop(_work(args.router, options, args.until_idle, signals), signals, new_loop=new_loop)
    except ConfigurationError as exc:
        return _usage_error(exc)
    except AsyncJobsError as exc:
        log.error("worker failed: %s", exc)
        return EXIT_FAILED


def connect_options(args: argparse.Namespace, index: int) -> dict[str, Any]:
    """The :func:`asyncjobs.connect` options the arguments ask for (process ``index`` of a supervised set).

    Raises:
        ConfigurationError: an argument is invalid.
    """
    queue = Queue(args.queue, no_create=True) if args.no_create else args.queue
    options: dict[str, Any] = {
        **connection_options(args),
        "queue": queue,
        "concurrency": args.concurrency,
        "retry_policy": args.retry_policy,
        "discard": args.discard,
        "shutdown_grace": args.shutdown_grace,
        "replicas": args.replicas,
        "verification_key_file": args.verification_key_file,
        "signatures_optional": args.signatures_optional,
    }
    if args.metrics_port is not None:
        port = args.metrics_port + index if args.metrics_port else 0
        options.update(prometheus_port=port, prometheus_address=args.metrics_address)
    return options


async def _work(router: str, options: dict[str, Any], until_idle: bool, signals: StopSignals) -> int:
    watcher = None
    parent = os.environ.get(SUPERVISOR_PID_ENV)
    if parent is not None and parent.isdigit():
        watcher = asyncio.create_task(_watch_parent(int(parent), signals.stop))
    try:
        status = await run_worker_async(
            router, until_idle=until_idle, handle_signals=False, stop=signals.stop, hurry=signals.hurry, **options
        )
        return status if signals.hurried_by is None else 128 + signals.hurried_by
    finally:
        if watcher is not None:
            watcher.cancel()


async def _watch_parent(pid: int, stop: asyncio.Event) -> None:
    # A supervised worker outlives a supervisor killed with SIGKILL: it stops cleanly instead of running orphaned.
    while os.getppid() == pid:  # noqa: ASYNC110 - no event tells of a parent's death; polling getppid is the way
        await asyncio.sleep(PARENT_CHECK_INTERVAL_S)
    log.warning("the supervisor (pid %d) is gone: stopping", pid)
    stop.set()


def _configure_logging(level: str, index: int | None) -> None:
    fmt = LOG_FORMAT if index is None else LOG_FORMAT.replace("%(name)s", f"%(name)s/worker-{index}")
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr)


def _usage_error(exc: ConfigurationError) -> int:
    cause = exc.__cause__
    if cause is not None and not isinstance(cause, ModuleNotFoundError | AsyncJobsError):
        # An exception raised while importing the user's module: its traceback is what they need.
        traceback.print_exception(cause, file=sys.stderr)
    print(f"asyncjobs worker: error: {exc}", file=sys.stderr)
    return EXIT_USAGE
