"""Running a worker as a service: connect, process until told to stop, stop cleanly, report an exit status.

:func:`run_worker` is what ``python -m asyncjobs worker`` runs, for programs that build their router in code. The
first SIGTERM or SIGINT stops the worker the way a supervisor expects: no new tasks are taken, running handlers get
the client's ``shutdown_grace`` to finish, the tasks of those still running are handed back to the queue (another
worker starts them at once) and the call returns 0. A second signal cuts the grace short: running handlers are
cancelled at once and their tasks handed back, and the call returns ``128 + signal``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

from asyncjobs.connecting import connect
from asyncjobs.constants import WORKER_CONCURRENCY
from asyncjobs.errors import ConfigurationError
from asyncjobs.loops import loop_factory, loop_name
from asyncjobs.queue import Queue
from asyncjobs.router import Router

log = logging.getLogger("asyncjobs")

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
"""The signals that stop a worker cleanly (a second one stops it at once)."""
EXIT_OK: Final = 0

RouterSource = Router | Callable[[], Any] | str
"""A router, a callable returning one (or an awaitable of one), or its import path ``"module:attribute"``."""


def check_router(source: RouterSource) -> None:
    """Check a router source without calling it: a router with handlers, a callable, or an importable path to one.

    A command line calls this before it connects or starts processes, so a typo fails at once.

    Raises:
        ConfigurationError: the path is malformed, the module cannot be imported (the message names the module
            that is missing), or the object is neither a :class:`Router` with handlers nor a callable.
    """
    target = _import(source) if isinstance(source, str) else source
    if not callable(target) or isinstance(target, Router):
        _checked(target, repr(source) if isinstance(source, str) else "the router")


def _checked(target: Any, where: str) -> Router:
    if not isinstance(target, Router):
        raise ConfigurationError(
            f"{where} must be an asyncjobs.Router (or a callable returning one), not {type(target).__name__}"
        )
    if len(target) == 0:
        raise ConfigurationError(f"{where} has no handlers: register some with @router.handler('type')")
    return target


def _import(path: str) -> Any:
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(
            f"{path!r} is not an import path: write it as MODULE:ATTRIBUTE, e.g. myapp.tasks:router"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigurationError(
                f"cannot import {module_name!r} (no module named {exc.name!r}): run from the directory that holds "
                "it, or add that directory to PYTHONPATH"
            ) from exc
        raise ConfigurationError(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise ConfigurationError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return target


async def resolve_router(source: RouterSource) -> Router:
    """The router a source names: the router itself, what a callable returns (awaited if need be), or the object at
    an import path ``"module:attribute"`` (itself resolved the same way).

    Raises:
        ConfigurationError: the path cannot be imported, or the result is not a :class:`Router` with handlers.
    """
    if isinstance(source, str):
        source = _import(source)
    if not isinstance(source, Router) and callable(source):
        made = source()
        source = (await made) if inspect.isawaitable(made) else made
    return _checked(source, "the router")


class _Stopping:
    """Turns stop signals (or the ``stop`` and ``hurry`` events) into a graceful stop, then a hurried one."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.work: asyncio.Task[None] | None = None
        self.grace = 0.0
        self.signals = 0
        self.hurried_by: int | None = None

    def on_signal(self, signum: int) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals == 1:
            log.warning(
                "received %s: stopping; no new tasks are taken, running handlers get up to %gs (shutdown_grace) to "
                "finish and the rest are handed back to the queue (send it again to stop at once)",
                name,
                self.grace,
            )
            self.stop.set()
        elif self.signals == 2:
            log.warning(
                "received %s again: stopping now; running handlers are cancelled and their tasks handed back", name
            )
            self.hurry(signum)
        else:
            log.error("received %s a third time: exiting without handing back; the reconciler recovers the tasks", name)
            os._exit(128 + signum)

    def hurry(self, signum: int) -> None:
        """End the shutdown grace now: running handlers are cancelled and their tasks handed back."""
        if self.hurried_by is not None:
            return
        self.hurried_by = signum
        self.stop.set()
        if self.work is not None and not self.work.done():
            self.work.cancel()

    async def follow(self, hurry: asyncio.Event) -> None:
        """Hurry once ``hurry`` is set (as a second SIGTERM would)."""
        await hurry.wait()
        if self.hurried_by is None:
            log.info("asked to stop now: running handlers are cancelled and their tasks handed back")
            self.hurry(signal.SIGTERM)


async def run_worker_async(
    router: RouterSource,
    servers: str | Sequence[str] | None = None,
    *,
    queue: str | Queue | None = None,
    until_idle: bool = False,
    handle_signals: bool = True,
    stop: asyncio.Event | None = None,
    hurry: asyncio.Event | None = None,
    **options: Any,
) -> int:
    """Connect, process the queue until stopped, and stop cleanly; the coroutine behind :func:`run_worker`.

    Args:
        router: the handlers: a router, a callable returning one (``async def`` allowed), or ``"module:attribute"``.
        servers: NATS server URL(s); ``None`` uses the ``NATS_URL`` environment variable, else the ``context``
            option, else ``nats://127.0.0.1:4222``.
        queue: the queue to process (a name or a :class:`Queue`).
        until_idle: return once nothing is waiting, in flight or due for a retry.
        handle_signals: stop on SIGTERM and SIGINT (a second signal stops at once, a third exits the process);
            the process's handlers are put back on return, and a signal the program already handles is left to it.
        stop: an event that stops the worker gracefully when set, e.g. from another task.
        hurry: an event that, when set, stops the worker at once as a second signal does (running handlers are
            cancelled and their tasks handed back); the call then returns ``128 + SIGTERM``.
        **options: any other :func:`asyncjobs.connect` option (``concurrency``, ``retry_policy``,
            ``shutdown_grace``, ``prometheus_port``, credentials, ...). ``concurrency`` defaults to 50 here, not
            ``connect()``'s 10: a process that only runs a worker is sized for throughput (docs/deploying.md).

    Returns:
        0 after a clean stop (or once idle); ``128 + signal`` when a second signal cut the shutdown grace short.

    Raises:
        ConfigurationError: the router or an option is invalid.
        JetStreamError: NATS could not be reached (the message says why).
        ClientClosedError: the connection was closed for good while the worker ran.
    """
    resolved = await resolve_router(router)
    if servers is None and options.get("context") is None:
        servers = os.environ.get("NATS_URL") or None
    stopping = _Stopping(stop if stop is not None else asyncio.Event())
    loop = asyncio.get_running_loop()
    installed = _install_signal_handlers(loop, stopping) if handle_signals else {}
    following = None if hurry is None else asyncio.create_task(stopping.follow(hurry))
    try:
        return await _serve(stopping, resolved, servers, queue, until_idle, options)
    finally:
        if following is not None:
            following.cancel()
        for signum, previous in installed.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, previous)  # the process's own handler, as it was before


_DEFAULT_HANDLERS: Final = (signal.SIG_DFL, signal.default_int_handler, None)


def _install_signal_handlers(loop: asyncio.AbstractEventLoop, stopping: _Stopping) -> dict[signal.Signals, Any]:
    """Handle the stop signals on ``loop``; returns the handlers replaced, to put back afterwards.

    A signal that already has a handler of the program's own is left to it (the program then stops the worker with
    the ``stop`` and ``hurry`` events).
    """
    installed: dict[signal.Signals, Any] = {}
    for signum in STOP_SIGNALS:
        try:
            previous = signal.getsignal(signum)
            if previous not in _DEFAULT_HANDLERS:
                log.info("%s already has a handler of the program's own: leaving it to stop the worker", signum.name)
                continue
            loop.add_signal_handler(signum, stopping.on_signal, signum)
        except (NotImplementedError, RuntimeError, ValueError) as exc:  # not the main thread, or no Unix signals
            log.debug("cannot handle %s here: %s", signum.name, exc)
        else:
            installed[signum] = signal.SIG_DFL if previous is None else previous
    return installed


async def _serve(
    stopping: _Stopping,
    router: Router,
    servers: str | Sequence[str] | None,
    queue: str | Queue | None,
    until_idle: bool,
    options: dict[str, Any],
) -> int:
    wait_stop = asyncio.ensure_future(stopping.stop.wait())
    try:
        connecting = asyncio.ensure_future(
            connect(servers, queue=queue, **{"concurrency": WORKER_CONCURRENCY, **options})
        )
        await asyncio.wait((connecting, wait_stop), return_when=asyncio.FIRST_COMPLETED)
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting  # connect() closes what it opened when cancelled
            log.info("stopped before the connection to NATS was made")
            return _status(stopping)
        async with connecting.result() as client:
            stopping.grace = client.options.shutdown_grace
            work = stopping.work = asyncio.create_task(client.run(router, until_idle=until_idle))
            log.info(
                "worker started: queue %s, %d concurrent handlers, task types %s",
                client.queue.name,
                client.options.concurrency,
                ", ".join(router.task_types) or "-",
            )
            log.info("event loop: %s", loop_name(asyncio.get_running_loop()))
            await asyncio.wait((work, wait_stop), return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                work.cancel()
            try:
                await work
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if not stopping.stop.is_set() or (me is not None and me.cancelling()):
                    raise  # cancelled from outside (the worker still stopped cleanly), not by a stop
        log.info("worker stopped")
        return _status(stopping)
    finally:
        wait_stop.cancel()


def _status(stopping: _Stopping) -> int:
    return EXIT_OK if stopping.hurried_by is None else 128 + stopping.hurried_by


def run_worker(
    router: RouterSource,
    servers: str | Sequence[str] | None = None,
    *,
    queue: str | Queue | None = None,
    until_idle: bool = False,
    event_loop: str = "auto",
    **options: Any,
) -> int:
    """Run a worker in this process until SIGTERM or SIGINT, then stop cleanly; returns the exit status.

    A blocking call that owns the event loop (it runs one as :func:`asyncio.run` does); from async code use
    :func:`run_worker_async`. The first signal stops taking tasks, gives running handlers ``shutdown_grace`` seconds
    and hands back the rest, then returns 0; a second signal hands back running tasks at once and returns
    ``128 + signal``. Logging is not configured here: call ``logging.basicConfig(level=logging.INFO)`` first to see
    the worker's lines. Typical use::

        router = asyncjobs.Router()


        @router.handler("email:new")
        async def send(task: asyncjobs.Task) -> str: ...


        if __name__ == "__main__":
            sys.exit(asyncjobs.run_worker(router, "nats://nats:4222", queue="EMAIL", concurrency=20))

    Args:
        router: a router, a callable returning one, or ``"module:attribute"``.
        servers: NATS server URL(s); ``None`` uses ``NATS_URL``, else the ``context`` option, else localhost.
        queue: the queue to process.
        until_idle: return once the queue has nothing waiting, in flight or due for a retry.
        event_loop: ``"auto"`` (uvloop when installed, see :mod:`asyncjobs.loops`), ``"uvloop"`` or ``"asyncio"``.
        **options: any other :func:`asyncjobs.connect` option.

    Raises:
        ConfigurationError: the router or an option is invalid, or ``event_loop="uvloop"`` without uvloop.
        JetStreamError: NATS could not be reached.
        ClientClosedError: the connection was closed for good while the worker ran.
    """
    if sys.platform == "win32":  # pragma: no cover - asyncio has no Unix signal handlers there
        log.warning("signal handling is not available on Windows: stop the worker with Ctrl-Break")
    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        return runner.run(run_worker_async(router, servers, queue=queue, until_idle=until_idle, **options))
