"""The entry point: :class:`Workflows` submits runs, reports on them, controls them, and runs the release loop."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import math
from datetime import timedelta

from asyncjobs import Client, ConfigurationError, EventFeed, WaitTimeout
from asyncjobs.kv import Deleted, Entry
from asyncjobs_workflows.constants import (
    FEED_ACK_WAIT_S,
    FEED_NAME,
    RELEASE_CONCURRENCY,
    RUN_KEY_PREFIX,
    SWEEP_INTERVAL_S,
)
from asyncjobs_workflows.control import cancel_run, delete_run, require, retry_run, snapshot
from asyncjobs_workflows.definition import Workflow
from asyncjobs_workflows.engine import Engine
from asyncjobs_workflows.errors import InvalidWorkflow, WorkflowError, WorkflowNotFound
from asyncjobs_workflows.record import RunRecord, RunState, new_run_id, run_key, validate_run_id
from asyncjobs_workflows.releaser import Releaser
from asyncjobs_workflows.runevents import RunEvents
from asyncjobs_workflows.status import StepStatus, WorkflowRun

__all__ = ["Workflows"]

log = logging.getLogger("asyncjobs.workflows")


class Workflows:
    """Submit and control workflow runs on a client's deployment, and release their steps.

    Steps run as tasks on the client's queue, processed by any worker with handlers for their types (Go workers
    included). Something must release the steps as their parents end: :meth:`run` in at least one process (run it
    in several for high availability; each child is released once).

    Example::

        flows = Workflows(client)
        run = await flows.submit(wf)
        releasing = asyncio.create_task(flows.run())
        finished = await flows.wait(run.id, timeout=60)

    Args:
        client: a connected client; its queue is where submitted runs put their steps.
        sweep_interval: seconds between a releaser's sweeps of running runs (the safety net for lost events).
        concurrency: task events a releaser handles at once.

    Raises:
        ConfigurationError: an option is invalid.
    """

    def __init__(
        self,
        client: Client,
        *,
        sweep_interval: float | timedelta = SWEEP_INTERVAL_S,
        concurrency: int = RELEASE_CONCURRENCY,
    ) -> None:
        if not isinstance(client, Client):
            raise ConfigurationError(f"Workflows needs an asyncjobs.Client, not {type(client).__name__}")
        if isinstance(sweep_interval, timedelta):
            sweep_interval = sweep_interval.total_seconds()
        if (
            not isinstance(sweep_interval, int | float)
            or isinstance(sweep_interval, bool)
            or not math.isfinite(sweep_interval)
            or sweep_interval < 1
        ):
            raise ConfigurationError(f"sweep_interval must be at least 1 second, not {sweep_interval!r}")
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be a whole number of at least 1, not {concurrency!r}")
        self._client = client
        self._engine = Engine(client)
        self._sweep_interval = float(sweep_interval)
        self._concurrency = concurrency
        self._feed_ready = False

    @property
    def client(self) -> Client:
        """The client runs are submitted with."""
        return self._client

    async def submit(self, workflow: Workflow, *, run_id: str | None = None) -> WorkflowRun:
        """Store a run of ``workflow`` and queue its first steps; returns the run.

        The run and every step's task are stored at once, each step waiting for its parents (``blocked``, with
        their task ids as its ``dependencies``); the roots are queued. Give ``run_id`` to make the submit
        idempotent: submitting again with the same id and definition (after a crash or a timeout) completes the
        same run instead of starting a second. Once started, a submit finishes even if the caller is cancelled.

        Args:
            workflow: the definition; validated first.
            run_id: the run's id (``^[a-zA-Z0-9_-]+$``, at most 64 characters); a new KSUID by default.

        Raises:
            InvalidWorkflow: the definition or the run id is invalid.
            DuplicateRun: a run with that id exists with another definition or queue.
            WorkflowError: a step's task could not be stored (submit again with the same ``run_id``).
            JetStreamError: JetStream stayed unavailable.
        """
        if not isinstance(workflow, Workflow):
            raise InvalidWorkflow(
                f"submit() takes a Workflow, not {type(workflow).__name__}: build one or use from_dict()"
            )
        workflow.validate()
        run_id = new_run_id() if run_id is None else validate_run_id(run_id)
        job = asyncio.ensure_future(self._submit(workflow, run_id))
        return await asyncio.shield(job)

    async def _submit(self, workflow: Workflow, run_id: str) -> WorkflowRun:
        from asyncjobs_workflows.submission import submit_run

        await self._ensure_feed()
        record, tasks = await submit_run(self._engine, workflow, run_id)
        steps = {name: StepStatus.of(name, task, None) for name, task in tasks.items()}
        return WorkflowRun(record, workflow, steps)

    async def _ensure_feed(self) -> None:
        # The releasers' consumer must exist before the first step can end, or its event would not be kept for them.
        if not self._feed_ready:
            await EventFeed(self._client, FEED_NAME, ack_wait=FEED_ACK_WAIT_S).ensure()
            self._feed_ready = True

    async def get(self, run_id: str) -> WorkflowRun:
        """The run and each step's status, as stored now.

        Raises:
            WorkflowNotFound: no run has that id.
        """
        record, loaded = await require(self._engine, _checked(run_id))
        return await snapshot(self._engine, record, loaded)

    async def wait(self, run_id: str, timeout: float | None = None) -> WorkflowRun:
        """Wait for a run to end (complete, failed or cancelled) and return it.

        Args:
            run_id: the run.
            timeout: seconds to wait at most; ``None`` waits as long as it takes.

        Raises:
            WorkflowNotFound: no run has that id, or it was deleted while waited for.
            WaitTimeout: the run had not ended within ``timeout``.
        """
        run_id = _checked(run_id)
        if timeout is not None and (not isinstance(timeout, int | float) or timeout < 0):
            raise ConfigurationError(f"timeout must be seconds (0 or more) or None, not {timeout!r}")
        record, loaded = await require(self._engine, run_id)
        if record.state is not RunState.RUNNING:
            return await snapshot(self._engine, record, loaded)
        kv = await self._engine.kv()
        try:
            async with asyncio.timeout(timeout) as scope:
                async with kv.watch(run_key(run_id)) as watch:
                    async for change in watch:
                        if isinstance(change, Deleted):
                            raise WorkflowNotFound(f"workflow run {run_id} was deleted while it was waited for")
                        if isinstance(change, Entry) and RunRecord.decode(change.value).state is not RunState.RUNNING:
                            break
        except TimeoutError:
            if not scope.expired():
                raise  # a request timed out, not the wait
            raise WaitTimeout(
                f"workflow run {run_id} had not ended after {timeout}s: wait longer, or look at it with get()"
            ) from None
        return await self.get(run_id)

    async def cancel(self, run_id: str) -> WorkflowRun:
        """Cancel a run: it ends ``cancelled`` and its steps that have not started never start.

        Steps already running finish, but nothing after them is released. Cancelling a cancelled run again is
        harmless (it stops any step a cancel cut short by a crash left behind).

        Raises:
            WorkflowNotFound: no run has that id.
            RunStateError: the run already completed or failed.
        """
        record = await asyncio.shield(asyncio.ensure_future(cancel_run(self._engine, _checked(run_id))))
        loaded = await self._engine.loaded(record)
        assert loaded is not None
        return await snapshot(self._engine, record, loaded)

    async def retry(self, run_id: str) -> WorkflowRun:
        """Run a failed or cancelled run again: every step that did not complete runs again, in order.

        Completed steps keep their results (their children get them again). The run is ``running`` again, and
        :attr:`WorkflowRun.generation` counts the retries.

        Raises:
            WorkflowNotFound: no run has that id.
            RunStateError: the run is still running, or completed.
        """
        record = await asyncio.shield(asyncio.ensure_future(retry_run(self._engine, _checked(run_id))))
        loaded = await self._engine.loaded(record)
        assert loaded is not None
        return await snapshot(self._engine, record, loaded)

    async def list(
        self, *, workflow: str | None = None, state: RunState | str | None = None
    ) -> builtins.list[WorkflowRun]:
        """Runs stored in the deployment, oldest first, optionally only of one workflow or in one state.

        Raises:
            ConfigurationError: ``state`` is not a run state.
        """
        wanted = None
        if state is not None:
            try:
                wanted = RunState(state)
            except ValueError:
                choices = ", ".join(s.value for s in RunState)
                raise ConfigurationError(f"state {state!r} is not a run state: use one of {choices}") from None
        records = []
        for entry in await (await self._engine.kv()).entries(RUN_KEY_PREFIX + "*"):
            with contextlib.suppress(Exception):
                record = RunRecord.decode(entry.value, revision=entry.revision)
                if (workflow is None or record.workflow == workflow) and (wanted is None or record.state is wanted):
                    records.append(record)
        records.sort(key=lambda r: (r.created.unix_ns, r.id))
        runs = []
        for record in records:
            try:
                loaded = await self._engine.loaded(record)
            except WorkflowError as exc:
                log.warning("listing workflow runs: skipping run %s: %s", record.id, exc)
                continue
            if loaded is not None:
                runs.append(await snapshot(self._engine, record, loaded))
        return runs

    async def delete(self, run_id: str) -> None:
        """Erase an ended run: its step tasks and its record (runs are kept until deleted).

        Raises:
            WorkflowNotFound: no run has that id.
            RunStateError: the run is still running (cancel it first).
        """
        await asyncio.shield(asyncio.ensure_future(delete_run(self._engine, _checked(run_id))))

    def events(self, run_id: str | None = None) -> RunEvents:
        """Follow run state events (submitted, ended, cancelled, retried) live, of every run or of one.

        Use it as ``async with flows.events() as events: async for event in events: ...``; entering subscribes.
        Events are published on core NATS and not stored: one published before that, or while the connection is
        down, is not seen. Use :meth:`wait` to know for sure that a run ended.

        Raises:
            InvalidWorkflow: ``run_id`` is not a valid run id.
        """
        return RunEvents(self._client, None if run_id is None else _checked(run_id))

    async def run(self) -> None:
        """The release loop: release steps as their parents end, until cancelled or the client closes.

        Run it in at least one process of the deployment; several may run it at once. It also sweeps running runs
        every ``sweep_interval`` seconds (see :mod:`asyncjobs_workflows.releaser`).

        Raises:
            JetStreamError: the runs bucket or the event feed could not be prepared.
        """
        await Releaser(self._engine, sweep_interval=self._sweep_interval, concurrency=self._concurrency).run()

    async def sweep(self) -> int:
        """Check every running run once, as the release loop does periodically; returns how many were checked.

        Useful in scripts and tests, and after an outage, to catch up without waiting for the next sweep.
        """
        return await Releaser(self._engine, sweep_interval=self._sweep_interval, concurrency=self._concurrency).sweep()


def _checked(run_id: str) -> str:
    return validate_run_id(run_id)
