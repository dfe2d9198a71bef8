"""The client: connects, prepares storage, enqueues and manages tasks, and runs workers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from enum import Enum
from types import TracebackType
from typing import Any, Final, Self

from nats.aio.client import Client as NATS

from asyncjobs.admin import Admin
from asyncjobs.errors import (
    AsyncJobsError,
    ClientClosedError,
    ConfigurationError,
    InvalidTaskStateError,
)
from asyncjobs.events import EventStream, iterate_events, wait_final
from asyncjobs.finishing import Finishing
from asyncjobs.jsapi import JetStream
from asyncjobs.kv import KeyValue
from asyncjobs.options import ClientOptions
from asyncjobs.pipelining import enqueue_pipelined
from asyncjobs.provisioning import prepare_events, prepare_queue, prepare_tasks, warn_if_still_empty
from asyncjobs.queue import Queue
from asyncjobs.reconciler import Reconciler
from asyncjobs.router import Router
from asyncjobs.serving import Monitor
from asyncjobs.signing import signer_for, verifier_for
from asyncjobs.staged import StagedTasks
from asyncjobs.storage import Storage
from asyncjobs.task import Task, TaskState
from asyncjobs.wiretime import to_ns
from asyncjobs.worker import Worker

log = logging.getLogger("asyncjobs")

SIGN_YIELD_EVERY: Final = 256


class _Lifecycle(Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class Client:
    """A connection to an asyncjobs deployment, bound to one queue.

    Create it with :func:`asyncjobs.connect`; use it as an async context manager or call :meth:`close`.
    """

    def __init__(self, nc: NATS, options: ClientOptions, *, owns_connection: bool) -> None:
        self._nc = nc
        self._options = options
        self._owns_connection = owns_connection
        self._js = JetStream(
            nc, timeout=options.request_timeout, api_prefix=options.api_prefix, retry_window=options.retry_window
        )
        self._signer = signer_for(options.signing_seed, options.signing_seed_file)
        self._storage = Storage(
            nc,
            self._js,
            discard=options.discard,
            verifier=verifier_for(
                options.verification_key,
                options.verification_key_file,
                self._signer,
                optional=options.signatures_optional,
            ),
        )
        self._queue = options.queue
        self._state = _Lifecycle.NEW
        self._workers: set[asyncio.Task[None]] = set()
        self._finishing = Finishing()
        self._monitor: Monitor | None = None
        self._created_queue = False
        self.admin = Admin(
            self._storage,
            self._js,
            replicas=options.replicas,
            memory=options.memory_storage,
            events_retention_ns=to_ns(options.events_retention, name=""),
        )
        """Queue and task-store administration."""
        self.staged = StagedTasks(
            self._storage, self._js, lambda: self._queue, self._sign, self._finishing.shielded, self._check_open
        )
        """Tasks stored without a work item and released onto the queue later (workflows, approval gates)."""

    async def _open(self) -> None:
        opts = self._options
        if not opts.no_storage_init:
            await prepare_tasks(
                self._js,
                replicas=opts.replicas,
                memory=opts.memory_storage,
                retention_ns=to_ns(opts.task_retention, name=""),
            )
            if opts.persist_events:
                await prepare_events(
                    self._js,
                    replicas=opts.replicas,
                    memory=opts.memory_storage,
                    retention_ns=to_ns(opts.events_retention, name=""),
                )
            self._queue, self._created_queue = await prepare_queue(
                self._js, opts.queue, replicas=opts.replicas, memory=opts.memory_storage
            )
        if opts.prometheus_port is not None:
            self._monitor = Monitor.start(
                opts.prometheus_port, opts.prometheus_address, connected=lambda: self._nc.is_connected
            )
        self._state = _Lifecycle.OPEN

    # ---- properties -----------------------------------------------------------------------------------------

    @property
    def queue(self) -> Queue:
        """The bound queue, with the server's settings once bound."""
        return self._queue

    @property
    def nc(self) -> NATS:
        """The underlying nats-py connection."""
        return self._nc

    @property
    def options(self) -> ClientOptions:
        """The options the client was created with."""
        return self._options

    def key_value(self, bucket: str) -> KeyValue:
        """A key-value bucket on this client's connection and JetStream API prefix, e.g. ``CHORIA_AJ_ELECTIONS``.

        No I/O happens here; the bucket must exist when it is used (a JetStreamError says so otherwise).
        """
        return KeyValue(self._js, bucket)

    @property
    def metrics_port(self) -> int | None:
        """The port ``/metrics``, ``/healthz`` and ``/readyz`` are served on (useful with ``prometheus_port=0``)."""
        return None if self._monitor is None else self._monitor.server.port

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called or the NATS connection was closed for good."""
        return self._state is _Lifecycle.CLOSED or self._nc.is_closed

    def _check_open(self) -> None:
        if self._state is not _Lifecycle.OPEN:
            raise ClientClosedError("the client is closed: create a new one with asyncjobs.connect()")
        if self._nc.is_closed:
            raise ClientClosedError(
                "the client's NATS connection was closed (by its owner or by the server): create a new client "
                "with asyncjobs.connect()"
            )

    # ---- tasks ----------------------------------------------------------------------------------------------

    def _sign(self, task: Task) -> None:
        if self._signer is None or task.signature:
            return
        task.signature = self._signer.sign(task.signature_envelope())

    async def enqueue(self, task: Task) -> Task:
        """Store a task and put it on the client's queue; returns the same task, now stored.

        Safe to cancel and to repeat: once started, the enqueue finishes even if the caller is cancelled or times
        out, and enqueueing the same ``Task`` again (after an error, a timeout or a cancellation) never creates a
        second run: while the task waits its item is published again under the same ``Nats-Msg-Id``, and once it
        has started nothing more is published. Transient JetStream failures are retried for ``retry_window``.

        With ``pipeline_enqueue`` the task and its item are sent without waiting for the first acknowledgement
        (:mod:`asyncjobs.pipelining`); the item may then reach a worker a moment before its task.

        Raises:
            InvalidTaskStateError: the task is not new, retry or blocked.
            DuplicateTaskError: another task with that id exists, or its item is a duplicate.
            EnqueueError: the queue item could not be published (the message says whether the task was saved as
                ``queue_error`` or is still waiting for its item).
        """
        self._check_open()
        task.queue = self._queue.name
        self._sign(task)
        self._created_queue = False  # a queue this client enqueues to is the one meant
        if self._options.pipeline_enqueue:
            await self._finishing.shielded(enqueue_pipelined(self._storage, task, self._queue))
        else:
            await self._finishing.resumed(lambda: self._storage.enqueue(task, self._queue))
        return task

    async def enqueue_many(self, tasks: Iterable[Task], *, return_exceptions: bool = False) -> list[Any]:
        """Enqueue many tasks with pipelined requests, much faster than one :meth:`enqueue` at a time.

        Every task is attempted, with the same guarantees as :meth:`enqueue`. With ``return_exceptions`` the result
        holds each task or the error that stopped it; otherwise the tasks are returned, and if any failed an
        ``ExceptionGroup`` of the errors is raised.

        Raises:
            ExceptionGroup: some tasks failed (only without ``return_exceptions``).
        """
        self._check_open()
        batch = list(tasks)
        self._created_queue = False
        for n, task in enumerate(batch, 1):
            task.queue = self._queue.name
            self._sign(task)
            if n % SIGN_YIELD_EVERY == 0 and self._signer is not None:
                await asyncio.sleep(0)  # signing is CPU work: let the loop breathe between chunks
        outcomes: list[Any] = await self._finishing.shielded(self._storage.enqueue_many(batch, self._queue))
        failures = [o for o in outcomes if isinstance(o, AsyncJobsError)]
        if failures and not return_exceptions:
            raise ExceptionGroup(f"{len(failures)} of {len(batch)} tasks could not be enqueued", failures)
        return outcomes

    async def get_task(self, task_id: str) -> Task:
        """Load a task by id (verifying its signature when a verification key is set).

        Raises:
            TaskNotFound: no task has that id.
            SignatureError: the signature is missing or wrong.
        """
        self._check_open()
        return await self._storage.load_task(task_id)

    async def retry_task(self, task_id: str, *, force: bool = False) -> Task:
        """Run a task again: its result is cleared and it is re-enqueued on the client's queue.

        Any queued item for it is replaced. Unlike Go, ``tries`` restarts at 0 so a task that expired by
        running out of tries can run again, and a task with dependencies goes back to ``blocked`` so its
        parents are checked again (Go sets ``retry`` and skips the check). A task whose handler is running
        (state ``active``) is refused unless ``force`` is given: retrying it would start a second run beside the
        first, whose result is then dropped.

        Raises:
            TaskNotFound: no task has that id.
            SignatureError: the stored task fails verification.
            InvalidTaskStateError: the task is active and ``force`` is not set.
            EnqueueError: the queue item could not be published.
        """
        self._check_open()
        task = await self._storage.load_task(task_id)
        if task.state == TaskState.ACTIVE and not force:
            since = f" since {task.tried.isoformat()}" if task.tried is not None else ""
            raise InvalidTaskStateError(
                f"task {task_id} is active (its handler has been running{since}, try {task.tries}): retrying it "
                "now would run it twice at once; wait for it with client.wait(), or pass force=True if its worker "
                "is gone"
            )
        task.state = TaskState.BLOCKED if task.dependencies else TaskState.RETRY
        task.result = None
        task.tries = 0
        task.dependency_results = {}
        await self._finishing.shielded(self._storage.enqueue(task, self._queue, dedupe=False))
        return task

    async def wait(self, task_id: str, *, timeout: float | None = None) -> Task:
        """Wait until a task reaches a final state and return it as stored.

        Final states are ``complete``, ``expired``, ``terminated``, ``unreachable`` and ``queue_error``. The wait
        follows the task's lifecycle events (with a store read after subscribing, so a change in between is not
        missed, and a slow re-read in case an event is lost). A task discarded on completion (``discard``) is
        returned as its last stored copy with the final state of its event.

        Args:
            task_id: the task to wait for.
            timeout: seconds to wait at most; ``None`` waits as long as it takes.

        Raises:
            TaskNotFound: no task has that id.
            WaitTimeout: the task was not final within ``timeout``.
        """
        self._check_open()
        return await wait_final(self._nc, self._storage.load_task, task_id, timeout=timeout)

    async def delete_task(self, task_id: str) -> None:
        """Erase a task from the store (a queued item for it is terminated when delivered).

        Raises:
            TaskNotFound: no task has that id.
        """
        self._check_open()
        await self._storage.delete_task(task_id)

    def events(self, task_id: str | None = None, *, replay: bool = False, until_caught_up: bool = False) -> EventStream:
        """Iterate over lifecycle events of every task, or of one task.

        With ``replay`` the events kept in the events stream (``persist_events=True``) come first. With
        ``until_caught_up`` (needs ``replay``) the iteration ends after the newest event stored when it starts, at
        once when none is, instead of going on with live events. The stream is also an async context manager;
        breaking out of ``async for`` releases its subscription too.

        Raises:
            InvalidNameError: ``task_id`` is not a valid task id.
            ConfigurationError: ``until_caught_up`` without ``replay``.
        """
        self._check_open()
        return iterate_events(
            self._nc, task_id=task_id, replay=replay, until_caught_up=until_caught_up, api_prefix=self._js.prefix
        )

    # ---- processing -----------------------------------------------------------------------------------------

    async def run(self, router: Router, *, until_idle: bool = False) -> None:
        """Process the queue with ``router``'s handlers until cancelled or the client is closed.

        When it stops, running handlers get ``shutdown_grace`` seconds to finish; the rest are handed back to
        the queue for another worker. While it runs, the reconciler repairs stuck tasks of the queue every
        ``reconcile_interval`` seconds.

        Args:
            router: the handlers.
            until_idle: return once nothing is waiting, in flight or due for a retry in the queue (for scripts and
                tests); tasks waiting for a retry delay are waited for.

        Raises:
            ConfigurationError: the router has no handlers.
            ClientClosedError: the client is closed, or its NATS connection was closed for good.
        """
        self._check_open()
        if not isinstance(router, Router) or len(router) == 0:
            raise ConfigurationError("run() needs a Router with at least one handler")
        opts = self._options
        if self._created_queue:
            self._created_queue = False  # said once per client
            await warn_if_still_empty(self._js, self._queue)
        worker = Worker(
            self._storage,
            self._queue,
            router,
            concurrency=opts.concurrency,
            retry_policy=opts.retry_policy,
            shutdown_grace=opts.shutdown_grace,
            api_prefix=self._js.prefix,
            until_idle=until_idle,
            reconciler=self._reconciler(),
        )
        current = asyncio.current_task()
        if current is not None:
            self._workers.add(current)
        check = None if self._monitor is None else self._monitor.watch_worker(self._queue.name, lambda: worker.stopping)
        try:
            await worker.run()
        except ClientClosedError:
            self._state = _Lifecycle.CLOSED
            raise
        except asyncio.CancelledError:
            if self._state is _Lifecycle.CLOSED and current is not None and current.cancelling() <= 1:
                current.uncancel()
                return
            raise
        finally:
            if current is not None:
                self._workers.discard(current)
            if check is not None and self._monitor is not None:
                self._monitor.unwatch(check)

    def _reconciler(self) -> Reconciler | None:
        opts = self._options
        if opts.reconcile_interval is None:
            return None
        return Reconciler(self._storage, self._queue, interval=opts.reconcile_interval, grace=opts.reconcile_grace)

    # ---- lifecycle ------------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop running workers (letting handlers finish within ``shutdown_grace``) and close the connection.

        Enqueues still under way (their callers may have been cancelled) are given up to ``retry_window`` plus
        ``request_timeout`` seconds to finish first, so that no task is left half enqueued. Idempotent.
        """
        if self._state is _Lifecycle.CLOSED:
            return
        self._state = _Lifecycle.CLOSED
        workers = [w for w in self._workers if w is not asyncio.current_task()]
        for worker in workers:
            worker.cancel()
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)
        # Enqueues whose callers were cancelled still finish, so that no task is left half enqueued.
        await self._finishing.wait(self._options.retry_window + self._options.request_timeout)
        if self._monitor is not None:
            monitor, self._monitor = self._monitor, None
            await monitor.close()
        if self._owns_connection and not self._nc.is_closed:
            try:
                await self._nc.drain()
            except Exception as exc:  # e.g. while reconnecting: closing is all that is left to do
                log.debug("draining the NATS connection failed: %s", exc)
                try:
                    await self._nc.close()
                except Exception as close_exc:
                    log.debug("closing the NATS connection failed: %s", close_exc)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
