"""``asyncjobs worker`` in this process: check the arguments and the router, then run the worker until it stops."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, Final

from asyncjobs.cli.connection import connection_options
from asyncjobs.cli.signals import StopSignals, run_loop
from asyncjobs.cli.supervisor import SUPERVISOR_PID_ENV
from asyncjobs.cli.worker import EXIT_FAILED, EXIT_USAGE
from asyncjobs.errors import AsyncJobsError, ConfigurationError
from asyncjobs.loops import loop_factory
from asyncjobs.queue import Queue
from asyncjobs.runner import check_router, run_worker_async

log = logging.getLogger("asyncjobs")

PARENT_CHECK_INTERVAL_S: Final = 1.0


def run(args: argparse.Namespace, index: int | None) -> int:
    """Run a worker (process ``index`` of a supervised set, or the only one); returns the exit status."""
    supervised = os.environ.get(SUPERVISOR_PID_ENV) is not None
    signals = StopSignals(grace=args.shutdown_grace, supervised=supervised)
    signals.install()  # first of all: a signal while the router module is imported exits at once
    try:
        options, new_loop = _prepare(args, index or 0)
    except ConfigurationError as exc:
        return _usage_error(exc)
    try:
        return run_loop(_work(args.router, options, args.until_idle, signals), signals, new_loop=new_loop)
    except ConfigurationError as exc:
        return _usage_error(exc)
    except AsyncJobsError as exc:
        log.error("worker failed: %s", exc)
        return EXIT_FAILED


def check(args: argparse.Namespace) -> int:
    """Check the arguments and the router (imported), running nothing; returns the exit status (0 when fine)."""
    try:
        _prepare(args, 0)
    except ConfigurationError as exc:
        return _usage_error(exc)
    return 0


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


def _prepare(args: argparse.Namespace, index: int) -> tuple[dict[str, Any], Callable[[], asyncio.AbstractEventLoop]]:
    # Everything that can be wrong with the command line fails here, before connecting or starting processes.
    sys.path.insert(0, os.path.abspath(args.app_dir))
    if args.processes < 1:
        raise ConfigurationError(f"--processes must be at least 1, not {args.processes}")
    options = connect_options(args, index)
    new_loop = loop_factory(args.loop)
    check_router(args.router)
    return options, new_loop


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


def _usage_error(exc: ConfigurationError) -> int:
    cause = exc.__cause__
    if cause is not None and not isinstance(cause, ModuleNotFoundError | AsyncJobsError):
        # An exception raised while importing the user's module: its traceback is what they need.
        traceback.print_exception(cause, file=sys.stderr)
    print(f"asyncjobs worker: error: {exc}", file=sys.stderr)
    return EXIT_USAGE
