"""``asyncjobs worker MODULE:ATTR``: run a router's handlers as a service, in one process or several.

This module parses the command and, with ``--processes N``, supervises; it imports only the standard library, so a
supervisor stays a bare interpreter's size. A process that runs a worker imports the rest (asyncio, nats-py, the
router) from :mod:`asyncjobs.cli.running`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import traceback
from types import FrameType
from typing import Any, Final

from asyncjobs.cli.connection import add_connection_arguments
from asyncjobs.cli.supervisor import CHILD_INDEX_ENV, STOP_SIGNALS, exit_now, supervise
from asyncjobs.constants import WORKER_CONCURRENCY

log = logging.getLogger("asyncjobs")

EXIT_FAILED: Final = 1
"""The worker stopped on an error (NATS unreachable, the connection closed for good): a supervisor restarts it."""
EXIT_USAGE: Final = 2
"""Bad arguments, options or router: restarting cannot help."""
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
# The choices of --loop and --retry-policy, spelt here so that parsing a command line imports neither asyncio nor the
# retry policies (tests/core/test_imports.py checks they are asyncjobs.loops.LOOP_CHOICES and retry_policy_names()).
LOOP_CHOICES: Final = ("auto", "uvloop", "asyncio")
RETRY_POLICY_NAMES: Final = ("10m", "1h", "1m", "default")


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
    work.add_argument(
        "--concurrency",
        "-c",
        type=int,
        default=WORKER_CONCURRENCY,
        help=f"handlers at once per process (default {WORKER_CONCURRENCY})",
    )
    work.add_argument("--processes", "-p", type=int, default=1, help="worker processes to supervise (default 1)")
    work.add_argument("--retry-policy", "--retry", default="default", choices=RETRY_POLICY_NAMES,
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
    child = os.environ.get(CHILD_INDEX_ENV)
    index = int(child) if child is not None and child.isdigit() else None
    _configure_logging(args.log_level, index)
    if args.processes > 1 and index is None:
        return _supervise(args, argv)
    # Only a process that runs a worker imports it: a supervisor never does.
    from asyncjobs.cli import running

    return running.run(args, index)


def _supervise(args: argparse.Namespace, argv: list[str]) -> int:
    checking: int | None = None

    def stop_at_once(signum: int, _frame: FrameType | None) -> None:
        log.warning("received %s before the worker started: exiting", signal.Signals(signum).name)
        if checking is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(checking, signal.SIGKILL)
        exit_now(0)

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop_at_once)  # until the supervisor takes over: nothing is running yet
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # an ignored SIGCHLD (inherited) would leave no exit to wait for
    # The arguments and the router are checked before any worker starts, in a child process of this one, so that
    # the supervisor never holds what that imports.
    sys.stdout.flush()
    sys.stderr.flush()
    checking = os.fork()
    if checking == 0:
        status = EXIT_FAILED
        try:
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            from asyncjobs.cli import running

            status = running.check(args)
        except BaseException:
            traceback.print_exc()
        finally:
            exit_now(status)  # never back into the parent's code
    status = os.waitstatus_to_exitcode(os.waitpid(checking, 0)[1])
    checking = None
    if status < 0:
        log.error("checking the arguments and the router failed: killed by %s", signal.Signals(-status).name)
    if status != 0:
        return status if status in (EXIT_FAILED, EXIT_USAGE) else EXIT_FAILED
    return supervise(args.processes, [sys.executable, "-m", "asyncjobs", *argv])


def _configure_logging(level: str, index: int | None) -> None:
    fmt = LOG_FORMAT if index is None else LOG_FORMAT.replace("%(name)s", f"%(name)s/worker-{index}")
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr)
