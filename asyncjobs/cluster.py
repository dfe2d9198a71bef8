"""An embedded JetStream cluster: several nats-server children on loopback, routed to each other.

Used by the fault-injection tests, so that streams with ``num_replicas: 3`` work and one node can be killed::

    async with NatsCluster(3) as cluster:
        nc = await nats.connect(cluster.urls)
        cluster.kill(0)
        await cluster.restart(0)

Route ports must be known to every member before any of them starts, so they are picked up front by binding port 0
on the host; client ports are read from each server's log as :class:`~asyncjobs.server.NatsServer` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import StorageType, StreamConfig

from asyncjobs.constants import JS_API_PREFIX
from asyncjobs.errors import ConfigurationError
from asyncjobs.server import DEFAULT_STOP_TIMEOUT, NatsServer, NatsServerError, _seconds, _str_list, nats_url

__all__ = ["NatsCluster"]

DEFAULT_CLUSTER_READY_TIMEOUT: Final = 30.0
_POLL_INTERVAL: Final = 0.1
_REQUEST_TIMEOUT: Final = 1.0
_PROBE_STREAM: Final = "ASYNCJOBS_CLUSTER_READY_PROBE"
_MAX_REPLICAS: Final = 5  # JetStream's limit for num_replicas


def _free_ports(host: str, count: int) -> list[int]:
    # All sockets stay bound until every port is read, so the kernel hands out distinct ports.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(family, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


async def _jetstream_problem(nc: NatsClient, replicas: int) -> object | None:
    """Returns None when JetStream is usable, else what is wrong.

    With ``replicas`` 0 an answer from ``$JS.API.INFO`` suffices: there is a meta leader. With more, a probe stream
    of that many replicas is created and deleted, because a fresh meta leader answers before it knows every peer
    and refuses such streams with "no suitable peers for placement" until then.
    """
    try:
        if replicas == 0:
            msg = await nc.request(f"{JS_API_PREFIX}.INFO", b"", timeout=_REQUEST_TIMEOUT)
            error: object | None = json.loads(msg.data).get("error")
            return error
        jsm = nc.jsm(timeout=_REQUEST_TIMEOUT)
        config = StreamConfig(name=_PROBE_STREAM, storage=StorageType.MEMORY, num_replicas=replicas)
        await jsm.add_stream(config)  # a second create with the same config succeeds, so retries are safe
        await jsm.delete_stream(_PROBE_STREAM)
        return None
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.APIError) as exc:
        return repr(exc)


async def _wait_for_jetstream(servers: list[str], *, seconds: float, replicas: int = 0) -> None:
    """Polls JetStream through ``servers`` until it works, see :func:`_jetstream_problem`.

    Raises:
        NatsServerError: JetStream was not usable within ``seconds``.
    """
    last: object = "no answer"
    try:
        async with asyncio.timeout(seconds):
            nc = await nats.connect(servers, connect_timeout=_REQUEST_TIMEOUT, max_reconnect_attempts=-1)
            try:
                while True:
                    last = await _jetstream_problem(nc, replicas)
                    if last is None:
                        return
                    await asyncio.sleep(_POLL_INTERVAL)
            finally:
                await nc.close()
    except TimeoutError:
        raise NatsServerError(f"JetStream at {servers} was not usable within {seconds:g}s: {last}") from None


class NatsCluster:
    """``size`` nats-servers with JetStream, routed into one cluster on loopback; an async context manager.

    Each member has a unique server name (``<cluster_name>-<i>``) and its own store dir. :meth:`start` returns when
    the cluster has a JetStream meta leader that knows every member, so ``num_replicas: 3`` streams can be created
    right away (it creates and deletes a probe stream, ``ASYNCJOBS_CLUSTER_READY_PROBE``, to be sure).

    Args:
        size: the number of servers.
        host: the address every server listens on.
        cluster_name: the cluster's name, also the prefix of the server names.
        store_root: a folder that gets one store dir per server (kept); None uses temporary dirs.
        extra_args: more nats-server arguments for every member.
        binary: the nats-server executable; None uses :func:`~asyncjobs.server.find_nats_server`.
        ready_timeout: seconds (or a timedelta) to wait for all servers and the meta leader.
        stop_timeout: seconds (or a timedelta) each server gets after SIGTERM before SIGKILL.

    Raises:
        ConfigurationError: an option is invalid.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        host: str = "127.0.0.1",
        cluster_name: str = "asyncjobs",
        store_root: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        binary: str | os.PathLike[str] | None = None,
        ready_timeout: float | timedelta = DEFAULT_CLUSTER_READY_TIMEOUT,
        stop_timeout: float | timedelta = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError(f"size must be a positive int (3 for num_replicas=3 streams), got {size!r}")
        self._size: Final = size
        self._ready_timeout: Final = _seconds("ready_timeout", ready_timeout)
        # Build one member now only to validate the shared options early; real members need their route ports.
        NatsServer(
            host=host,
            server_name=f"{cluster_name}-0",
            cluster_name=cluster_name,
            cluster_port=0,
            extra_args=_str_list("extra_args", extra_args),
            binary=binary,
            stop_timeout=stop_timeout,
        )
        self._host: Final = host
        self._cluster_name: Final = cluster_name
        self._store_root: Final = Path(store_root) if store_root is not None else None
        self._extra_args: Final = tuple(extra_args)
        self._binary: Final = binary
        self._stop_timeout: Final = stop_timeout
        self._servers: tuple[NatsServer, ...] = ()

    def __repr__(self) -> str:
        return f"<NatsCluster {self._cluster_name} size={self._size} running={sum(s.running for s in self._servers)}>"

    @property
    def servers(self) -> tuple[NatsServer, ...]:
        """The member servers, in order; empty before the first :meth:`start`."""
        return self._servers

    @property
    def urls(self) -> list[str]:
        """Every member's client URL, for ``nats.connect(servers=cluster.urls)``."""
        return [server.url for server in self._servers]

    @property
    def url(self) -> str:
        """Every member's client URL joined with commas, the usual NATS spelling of a server list.

        nats-py wants a list (:attr:`urls`) instead.
        """
        return ",".join(self.urls)

    @property
    def cluster_name(self) -> str:
        """The cluster's name."""
        return self._cluster_name

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _build(self) -> tuple[NatsServer, ...]:
        ports = _free_ports(self._host, self._size)
        route_urls = [nats_url(self._host, port) for port in ports]
        servers = []
        for i, port in enumerate(ports):
            name = f"{self._cluster_name}-{i}"
            servers.append(
                NatsServer(
                    host=self._host,
                    store_dir=self._store_root / name if self._store_root is not None else None,
                    server_name=name,
                    cluster_name=self._cluster_name,
                    cluster_port=port,
                    routes=[url for j, url in enumerate(route_urls) if j != i],
                    extra_args=self._extra_args,
                    binary=self._binary,
                    ready_timeout=self._ready_timeout,
                    stop_timeout=self._stop_timeout,
                )
            )
        return tuple(servers)

    async def start(self) -> None:
        """Starts every member and waits until a stream with one replica per member can be placed.

        Raises:
            ConfigurationError: the nats-server binary cannot be found.
            NatsServerError: a member failed to start, or no meta leader was elected within ``ready_timeout``.
        """
        if any(server.running for server in self._servers):
            raise NatsServerError(f"{self!r} is already running: stop() it first")
        if not self._servers:
            self._servers = self._build()
        results = await asyncio.gather(*(server.start() for server in self._servers), return_exceptions=True)
        try:
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            replicas = min(self._size, _MAX_REPLICAS) if self._size > 1 else 0
            await _wait_for_jetstream(self.urls, seconds=self._ready_timeout, replicas=replicas)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stops every member; calling it again does nothing."""
        await asyncio.gather(*(server.stop() for server in self._servers))

    def kill(self, index: int) -> None:
        """Sends SIGKILL to member ``index``, as a crash would.

        Raises:
            IndexError: there is no such member.
        """
        self._servers[index].kill()

    async def restart(self, index: int) -> None:
        """Restarts member ``index`` on its ports and store dir, and waits until JetStream answers through it.

        Raises:
            IndexError: there is no such member.
            NatsServerError: it did not come back within ``ready_timeout``.
        """
        server = self._servers[index]
        await server.restart()
        await _wait_for_jetstream([server.url], seconds=self._ready_timeout)
