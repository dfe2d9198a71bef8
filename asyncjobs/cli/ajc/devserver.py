"""``ajc dev-server``: an embedded nats-server with JetStream for development, in the foreground.

It runs the nats-server from the ``server`` extra (:class:`asyncjobs.server.NatsServer`) on a loopback port with
a persistent JetStream store, prints the URL and how to point ``ajc`` and programs at it, and runs until Ctrl-C
(SIGINT), SIGTERM or SIGHUP (the terminal closed), which stop the server cleanly and exit 0.

The store directory defaults to ``$XDG_DATA_HOME/asyncjobs/dev-server`` (``~/.local/share/asyncjobs/dev-server``
when ``XDG_DATA_HOME`` is unset; ``%LOCALAPPDATA%\\asyncjobs\\dev-server`` on Windows), so queues, tasks, schedules
and workflows survive a restart; ``--temporary`` uses a fresh directory removed on exit instead. The server has no
authentication, so it listens only on a loopback address unless ``--unsafe-bind`` is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

import click

from asyncjobs.cli.ajc.session import EXIT_FAILED, EXIT_USAGE, fail

if TYPE_CHECKING:
    from asyncjobs.server import NatsServer

DEFAULT_PORT: Final = 4222
DEFAULT_HOST: Final = "127.0.0.1"
STORE_SUBDIR: Final = ("asyncjobs", "dev-server")
LOCK_FILE: Final = ".ajc-dev-server.lock"
"""Held (``flock``) in the store directory while a dev server uses it: two servers on one store would corrupt it."""
SELF_STOP_S: Final = 3.0
"""How long nats-server is given to stop by itself after a Ctrl-C on the terminal, before it is sent SIGTERM."""
EXIT_POLL_S: Final = 0.02
POLL_S: Final = 1.0
"""How often the foreground loop checks that the server process still runs (there is no exit notification)."""

_FATAL_RE: Final = re.compile(r"\[(?:FTL|ERR)\]\s*(.*)$")
_VERSION_RE: Final = re.compile(r"Version:\s*(\S+)")


def default_store_dir() -> Path:
    """The per-user directory the development server keeps its JetStream store in.

    ``$XDG_DATA_HOME/asyncjobs/dev-server``, else ``~/.local/share/asyncjobs/dev-server``; on Windows
    ``%LOCALAPPDATA%\\asyncjobs\\dev-server``.
    """
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base.joinpath(*STORE_SUBDIR)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command(
    "dev-server",
    help="Run a local NATS server with JetStream for development",
    epilog=(
        "The store defaults to $XDG_DATA_HOME/asyncjobs/dev-server (~/.local/share/asyncjobs/dev-server), so "
        "queues, tasks, schedules and workflows survive a restart. The server has no authentication: it is for "
        "development on this machine, not for production. Ctrl-C or SIGTERM stops it."
    ),
)
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True, metavar="PORT",
              help="client port to listen on (0 picks a free one)")  # fmt: skip
@click.option("--host", "-a", default=DEFAULT_HOST, show_default=True, metavar="ADDRESS",
              help="address to listen on; only loopback addresses without --unsafe-bind")  # fmt: skip
@click.option("--unsafe-bind", is_flag=True,
              help="allow a non-loopback --host: anyone who reaches it can read and change everything")  # fmt: skip
@click.option("--store-dir", "-d", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="JetStream store directory (default: see below)")  # fmt: skip
@click.option("--temporary", is_flag=True,
              help="keep the store in a fresh temporary directory, removed on exit (nothing persists)")  # fmt: skip
def dev_server(port: int, host: str, unsafe_bind: bool, store_dir: Path | None, temporary: bool) -> None:
    from asyncjobs.errors import ConfigurationError
    from asyncjobs.server import find_nats_server

    if not is_loopback(host) and not unsafe_bind:
        fail(f"--host {host} is not a loopback address and the dev server has no authentication: "
             "use 127.0.0.1, or pass --unsafe-bind to listen there anyway", status=EXIT_USAGE)  # fmt: skip
    if temporary and store_dir is not None:
        fail("--temporary and --store-dir contradict each other: pass one of them", status=EXIT_USAGE)
    try:
        binary = find_nats_server()
    except ConfigurationError as exc:
        fail(str(exc), status=EXIT_FAILED)
    store = None if temporary else (store_dir or default_store_dir()).expanduser().absolute()
    if store is not None:
        try:
            store.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail(f"cannot create the store directory {store}: {exc.strerror or exc}: pass another with --store-dir")
    # KeyboardInterrupt: a platform without signal handlers (Windows), where Ctrl-C is the way to stop.
    with _store_lock(store), contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(binary, host, port, store))


@contextlib.contextmanager
def _store_lock(store: Path | None) -> Iterator[None]:
    """Hold the store directory's lock file, or fail naming the process that holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; running two servers on one store is then up to the user
        yield
        return
    if store is None:  # a fresh temporary directory nobody else knows
        yield
        return
    try:
        handle = open(store / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - the with below closes it
    except OSError as exc:
        fail(f"cannot write to the store directory {store}: {exc.strerror or exc}: pass another with --store-dir")
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip()
            fail(f"another ajc dev-server{f' (pid {owner})' if owner.isdigit() else ''} uses the store directory "
                 f"{store}: stop it, or pass another --store-dir")  # fmt: skip
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield  # the lock goes with the file's closing, or with the process


async def _serve(binary: str, host: str, port: int, store: Path | None) -> None:
    from asyncjobs.server import NatsServer, NatsServerError

    server = NatsServer(host=host, port=port, store_dir=store, binary=binary)
    try:
        await server.start()
    except NatsServerError:
        fail(_start_failure(host, port, server.log_tail))
    stop = asyncio.Event()
    received = _on_signals(stop)
    try:
        _announce(server, temporary=store is None)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)
            if not server.running and not stop.is_set():
                # Ctrl-C reaches nats-server too (one process group): give our own handler a moment to see it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), POLL_S)
                if not stop.is_set():
                    fail(f"nats-server exited unexpectedly: {_last_error(server.log_tail) or 'no error was logged'}")
        # On a terminal the line starts after the echoed ^C.
        click.echo(("\n" if sys.stderr.isatty() else "") + "stopping the NATS server ...", err=True)
        if received == [signal.SIGINT] and _in_terminal_foreground():
            await _exited(server)
    finally:
        await server.stop()
    click.echo("stopped", err=True)


def _on_signals(stop: asyncio.Event) -> list[int]:
    """Set ``stop`` on SIGINT, SIGTERM or SIGHUP; returns the list the signals received are appended to."""
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()

    # SIGHUP: the terminal was closed; nats-server would take it for "reload" and outlive us.
    hangup = getattr(signal, "SIGHUP", None)
    for signum in (signal.SIGINT, signal.SIGTERM, *([hangup] if hangup is not None else [])):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows: Ctrl-C raises KeyboardInterrupt
            loop.add_signal_handler(signum, on_signal, signum)
    return received


def _in_terminal_foreground() -> bool:
    """Whether this process group is a terminal's foreground group, so Ctrl-C on it reached nats-server too."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):  # no terminal, a closed stdin, or no job control (Windows)
        return False


async def _exited(server: NatsServer) -> None:
    # nats-server got the terminal's SIGINT too and is shutting down by itself. Signalling it again once it has
    # exited makes asyncio's child watcher lose the race to reap it ("Unknown child process pid ..."), so wait for
    # its own exit first (stop() still ends it if it lingers).
    # NatsServer has no exit notification to await: poll its state, a bounded number of times.
    for _ in range(int(SELF_STOP_S / EXIT_POLL_S)):
        if not server.running:
            return
        await asyncio.sleep(EXIT_POLL_S)


def _announce(server: NatsServer, *, temporary: bool) -> None:
    version = next((m[1] for line in server.log_tail if (m := _VERSION_RE.search(line))), "")
    store = f"{server.store_dir} (temporary, removed on exit)" if temporary else str(server.store_dir)
    lines = [
        f"NATS server{' ' + version if version else ''} with JetStream listening on {server.url}",
        f"Store directory: {store}",
        "",
        "Point ajc and your programs at it:",
        f"  export NATS_URL={server.url}",
        "  ajc info",
        f"or pass it each time: ajc --server {server.url} info",
        "",
        "Press Ctrl-C to stop.",
    ]
    for line in lines:
        click.echo(line)  # flushed per line, so a program reading the pipe sees the URL at once


def _last_error(log: list[str]) -> str:
    for line in reversed(log):
        match = _FATAL_RE.search(line)
        if match:
            return match[1].strip()
    return ""


def _start_failure(host: str, port: int, log: list[str]) -> str:
    error = _last_error(log)
    if "address already in use" in error:
        return f"port {port} on {host} is already in use: stop what listens there or pick another with --port"
    if "cannot assign requested address" in error:
        return f"{host} is not an address of this machine: pass another with --host"
    return f"nats-server did not start: {error or (log[-1] if log else 'it logged nothing')}"
