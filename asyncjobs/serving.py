"""The HTTP endpoint a supervisor or Prometheus probes: ``/metrics``, ``/healthz`` and ``/readyz``.

It runs in a daemon thread, so it answers while the event loop is busy; that is also how it can tell that the loop
is stuck. Liveness comes from a heartbeat the event loop gives every second (:meth:`Health.heartbeat`): when no beat
arrived for ``stale_after`` seconds the loop is blocked (a handler calling blocking code, for instance) and
``/healthz`` answers 503 so the supervisor restarts the process. Readiness is the conjunction of named checks: the
client registers one for its NATS connection and one per running worker, so ``/readyz`` answers 503 while NATS is
unreachable or while a worker is stopping.

Both health answers are small JSON documents::

    GET /healthz  -> 200 {"alive": true, "last_beat_s": 0.4}
    GET /readyz   -> 503 {"ready": false, "checks": {"nats": "ok", "worker EMAIL": "stopping: ..."}}
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final

import orjson
import prometheus_client
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from asyncjobs.errors import ConfigurationError
from asyncjobs.metrics import METRICS

log = logging.getLogger("asyncjobs")

LIVENESS_STALE_S: Final = 30.0
"""Seconds without an event-loop heartbeat after which ``/healthz`` reports the process as stuck."""
HEARTBEAT_INTERVAL_S: Final = 1.0
"""Seconds between heartbeats the event loop gives."""
DEFAULT_ADDRESS: Final = "0.0.0.0"
"""Where the endpoint listens by default: every interface, as Go's ``--monitor`` port does."""

ReadinessCheck = Callable[[], str | None]
"""A readiness probe: ``None`` when ready, else the reason it is not (called from the server thread)."""


class Health:
    """Liveness and readiness of one process, as ``/healthz`` and ``/readyz`` report them.

    Args:
        stale_after: seconds without a heartbeat after which the process counts as stuck.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, *, stale_after: float = LIVENESS_STALE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_after = stale_after
        self._clock = clock
        self._last_beat = clock()
        self._checks: dict[str, ReadinessCheck] = {}
        self._lock = threading.Lock()

    def beat(self) -> None:
        """Record that the event loop is running."""
        self._last_beat = self._clock()

    async def heartbeat(self, interval: float = HEARTBEAT_INTERVAL_S) -> None:
        """Beat every ``interval`` seconds until cancelled."""
        while True:
            self.beat()
            await asyncio.sleep(interval)

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        """Add (or replace) a named readiness check."""
        with self._lock:
            self._checks[name] = check

    def remove_check(self, name: str) -> None:
        """Remove a readiness check; an unknown name is ignored."""
        with self._lock:
            self._checks.pop(name, None)

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the event loop beat recently, with the age of the last beat."""
        age = self._clock() - self._last_beat
        alive = age <= self.stale_after
        report: dict[str, Any] = {"alive": alive, "last_beat_s": round(age, 3)}
        if not alive:
            report["reason"] = (
                f"the event loop has not run for {age:.0f}s: a handler may be calling blocking code without awaiting"
            )
        return alive, report

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether every check passes, with each check's answer (``"ok"`` or why not)."""
        with self._lock:
            checks = list(self._checks.items())
        answers: dict[str, str] = {}
        for name, check in checks:
            try:
                problem = check()
            except Exception as exc:  # a probe must answer; a broken check is a reason too
                problem = f"check failed: {exc!r}"
            answers[name] = "ok" if problem is None else problem
        alive, _ = self.liveness()
        ready = alive and all(answer == "ok" for answer in answers.values())
        report: dict[str, Any] = {"ready": ready, "checks": answers}
        if not alive:
            report["reason"] = "the event loop is stuck (see /healthz)"
        return ready, report


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # an idle or slow client must not hold a thread forever

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(self.server.registry), content_type)
        elif path in ("/healthz", "/livez"):
            alive, report = self.server.health.liveness()
            self._send(200 if alive else 503, orjson.dumps(report), "application/json")
        elif path == "/readyz":
            ready, report = self.server.health.readiness()
            self._send(200 if ready else 503, orjson.dumps(report), "application/json")
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Probes arrive every few seconds: keep them out of the logs unless asked for.
        log.debug("http %s: " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, health: Health) -> None:
        self.registry = registry
        self.health = health
        super().__init__(address, _Handler)


class MetricsServer:
    """A running HTTP endpoint (``/metrics``, ``/healthz``, ``/readyz``); stop it with :meth:`close`."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._closed = False

    @property
    def port(self) -> int:
        """The TCP port the server listens on, useful after asking for port 0."""
        return int(self._server.server_port)

    @property
    def address(self) -> str:
        """The address the server is bound to."""
        return str(self._server.server_address[0])

    @property
    def health(self) -> Health:
        """The liveness and readiness this endpoint reports."""
        return self._server.health

    def close(self) -> None:
        """Stop serving and release the port; calling it again does nothing.

        This blocks for up to half a second while the server thread notices; from async code call it through
        ``asyncio.to_thread``.
        """
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def serve_metrics(
    port: int,
    *,
    host: str = DEFAULT_ADDRESS,
    registry: CollectorRegistry | None = None,
    health: Health | None = None,
) -> MetricsServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` from a daemon thread, after registering the metrics.

    Args:
        port: the TCP port; 0 picks a free one (see :attr:`MetricsServer.port`).
        host: the address to bind: ``"0.0.0.0"`` for every interface, ``"127.0.0.1"`` for this host only.
        registry: the registry to expose; the global ``prometheus_client.REGISTRY`` when omitted.
        health: what the health paths report; a fresh :class:`Health` (always ready) when omitted.

    Raises:
        ConfigurationError: the port is out of range or cannot be bound, or the registry already holds another
            collector with these metric names.
    """
    if type(port) is not int or not 0 <= port <= 65535:
        raise ConfigurationError(f"metrics port must be an integer from 0 to 65535, got {port!r}")
    target = prometheus_client.REGISTRY if registry is None else registry
    METRICS.register(target)
    try:
        server = _Server((host, port), target, health or Health())
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}: choose another port (0 picks a free one) "
            "or another address"
        ) from exc
    thread = threading.Thread(target=server.serve_forever, name=f"asyncjobs-http-{server.server_port}", daemon=True)
    thread.start()
    return MetricsServer(server, thread)


class Monitor:
    """A client's endpoint: the HTTP server, the event-loop heartbeat behind ``/healthz`` and readiness checks.

    Created by :meth:`start` from within the event loop; :meth:`close` stops both.
    """

    def __init__(self, server: MetricsServer, heartbeat: asyncio.Task[None]) -> None:
        self.server = server
        self._heartbeat = heartbeat

    @classmethod
    def start(cls, port: int, host: str, *, connected: Callable[[], bool]) -> Monitor:
        """Serve on ``host:port`` with a readiness check ``nats`` that holds while ``connected()`` is true.

        Raises:
            ConfigurationError: the port cannot be bound.
        """
        health = Health()
        health.add_check("nats", lambda: None if connected() else "not connected to NATS (reconnecting)")
        server = serve_metrics(port, host=host, health=health)
        log.info("serving /metrics, /healthz and /readyz on http://%s:%d", server.address, server.port)
        heartbeat = asyncio.create_task(health.heartbeat(), name=f"asyncjobs-heartbeat-{server.port}")
        return cls(server, heartbeat)

    def watch_worker(self, queue: str, stopping: Callable[[], bool]) -> str:
        """Add a readiness check for a worker of ``queue`` that fails once it is stopping; returns its name."""
        name = f"worker {queue}"
        self.server.health.add_check(
            name,
            lambda: "stopping: takes no new tasks, running handlers are finishing" if stopping() else None,
        )
        return name

    def unwatch(self, name: str) -> None:
        """Remove a readiness check added by :meth:`watch_worker`."""
        self.server.health.remove_check(name)

    async def close(self) -> None:
        """Stop the heartbeat and the server."""
        self._heartbeat.cancel()
        await asyncio.gather(self._heartbeat, return_exceptions=True)
        await asyncio.to_thread(self.server.close)
