"""``python -m asyncjobs_scheduler``: run a scheduler process until SIGTERM or SIGINT.

Run as many as you like (on several hosts, beside Go schedulers): they elect one leader, which fires the schedules.
The first SIGTERM or SIGINT stops it cleanly: a leader gives up the leadership so that another scheduler takes over
within a second. A second signal exits at once (another scheduler then takes over once the key expires, 10 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Final

import asyncjobs
from asyncjobs.cli.connection import add_connection_arguments, connection_options
from asyncjobs_scheduler.scheduler import Scheduler, default_name

log = logging.getLogger("asyncjobs.scheduler")

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m asyncjobs_scheduler",
        description="Run an asyncjobs scheduler: it campaigns for the leadership and, while it leads, enqueues the "
        "stored schedules' tasks. SIGTERM or SIGINT stops it and hands the leadership over at once.",
    )
    add_connection_arguments(parser)
    parser.add_argument("--name", default=default_name(), help="this scheduler's name in the election "
                        "(default <hostname>-<pid>)")  # fmt: skip
    parser.add_argument("--queue", "-q", default="DEFAULT", help="the queue its client binds (default DEFAULT); each "
                        "stored schedule names the queue of its own tasks")  # fmt: skip
    parser.add_argument("--no-create", action="store_true", help="fail if that queue does not exist")
    parser.add_argument("--signing-seed-file", help="sign the tasks it enqueues with this ed25519 seed file "
                        "(workers that verify signatures refuse unsigned tasks)")  # fmt: skip
    parser.add_argument("--metrics-port", type=int, help="serve /metrics, /healthz and /readyz on this port")
    parser.add_argument("--metrics-address", default="0.0.0.0", help="address to bind (default %(default)s)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    options = connection_options(args)
    if args.signing_seed_file:
        options["signing_seed_file"] = args.signing_seed_file
    if args.metrics_port is not None:
        options.update(prometheus_port=args.metrics_port, prometheus_address=args.metrics_address)
    try:
        queue = asyncjobs.Queue(args.queue, no_create=True) if args.no_create else args.queue
        return asyncio.run(run_scheduler(args.name, queue, options))
    except asyncjobs.ConfigurationError as exc:
        print(f"asyncjobs_scheduler: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except asyncjobs.AsyncJobsError as exc:
        log.error("scheduler failed: %s", exc)
        return EXIT_FAILED


async def run_scheduler(name: str, queue: str | asyncjobs.Queue, options: dict[str, object]) -> int:
    """Run a scheduler named ``name`` until SIGTERM or SIGINT; shared with ``ajc tasks cron scheduler``.

    The first signal stops it cleanly (a leader hands the leadership over at once); a second exits at once with
    128 + the signal number.

    Args:
        name: its name in the election.
        queue: the queue its client binds (created unless ``no_create``).
        options: the other :func:`asyncjobs.connect` arguments (connection, signing, metrics).

    Returns:
        0 once it has stopped.
    """
    async with await asyncjobs.connect(queue=queue, **options) as client:  # type: ignore[arg-type]
        scheduler = Scheduler(client, name=name)
        running = asyncio.create_task(scheduler.run())
        stops = 0

        def on_signal(signum: int) -> None:
            nonlocal stops
            stops += 1
            signame = signal.Signals(signum).name
            if stops == 1:
                log.warning("received %s: stopping (a leader hands the leadership over)", signame)
                running.cancel()
            else:
                log.error("received %s again: exiting at once", signame)
                os._exit(128 + signum)

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        with contextlib.suppress(asyncio.CancelledError):
            await running
    return 0
