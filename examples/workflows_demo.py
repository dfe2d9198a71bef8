"""Workflows demo: a nightly ETL pipeline runs as a workflow, with a worker and a releaser in this process.

Run it with ``python examples/workflows_demo.py``. It starts an embedded nats-server unless ``--url`` names one, and
submits one run of the workflow ``nightly-etl`` on the queue ``WF_DEMO``::

    extract -> transform-0 .. transform-3 -> load -> report -> cleanup

It prints each step as the worker runs it. ``transform-2`` fails on its first try and the queue retries it, as it
retries any task; ``load`` waits for the four transforms and receives their results (``load_dependencies``);
``report`` runs only if ``load`` loaded rows (a ``when=`` condition); ``cleanup`` runs once the transforms and
``report`` have ended, however they ended (``trigger="all_done"``). At the end it prints the run's state, each
step's state and tries, and the run as a Mermaid flowchart.

The logic lives in :func:`run_demo`; ``tests/workflows/test_docs_workflows.py`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TextIO, TypeVar

import orjson

import asyncjobs
from asyncjobs.server import NatsServer
from asyncjobs_workflows import Workflow, WorkflowRun, Workflows

QUEUE = "WF_DEMO"
PARTITIONS = 4
FLAKY_STEP = "transform-2"
DEFAULT_DAY = "2026-03-01"
DEFAULT_TIMEOUT_S = 30.0
# Retries after a fraction of a second, so the demo finishes quickly. The named policies wait a minute or more.
DEMO_RETRY_POLICY = asyncjobs.LinearPolicy(steps=5, jitter=0.1, min_s=0.2, max_s=1.0)

T = TypeVar("T")


def build_workflow(day: str, partitions: int = PARTITIONS) -> Workflow:
    """The pipeline: extract, one transform per partition, load (fan-in), report, clean-up."""
    wf = Workflow("nightly-etl")
    wf.step("extract", "etl:extract", {"day": day, "partitions": partitions})
    transforms = [f"transform-{p}" for p in range(partitions)]
    for p, name in enumerate(transforms):
        wf.step(name, "etl:transform", {"day": day, "partition": p}, after="extract", max_tries=3)
    wf.step("load", "etl:load", {"table": "sales_daily"}, after=transforms, load_dependencies=True)
    wf.step(
        "report",
        "etl:report",
        {"to": "sales@example.com"},
        after="load",
        load_dependencies=True,
        when={"step": "load", "path": "rows", "not_equals": 0},
    )
    # After every transform too: when one fails, load and report end at once, and the clean-up must not remove
    # staging files that the other transforms still read.
    wf.step("cleanup", "etl:cleanup", {"day": day}, after=[*transforms, "report"], trigger="all_done")
    return wf


def step_name(task: asyncjobs.Task) -> str:
    """The step a task runs: step task ids are ``wf:<run id>:<step name>``."""
    return task.id.split(":", 2)[2]


@dataclass
class Summary:
    """What a demo run saw."""

    run: WorkflowRun | None = None
    """The run as it ended."""
    started: list[tuple[str, int]] = field(default_factory=list)
    """(step, try) for each handler call, in the order they started."""
    elapsed: float = 0.0
    """Seconds from submit to the end of the run."""

    @property
    def ok(self) -> bool:
        """The run completed, every step ran once, and the flaky step ran twice."""
        if self.run is None or self.run.state != "complete":
            return False
        tries = {name: status.tries for name, status in self.run.steps.items()}
        expected = {name: 2 if name == FLAKY_STEP else 1 for name in self.run.workflow.steps}
        return tries == expected and all(status.state == "complete" for status in self.run.steps.values())


@contextlib.asynccontextmanager
async def demo_server(url: str | None) -> AsyncIterator[str]:
    """Yields a server URL: ``url``, or an embedded nats-server's."""
    if url is not None:
        yield url
        return
    async with NatsServer() as server:
        yield server.url


async def run_demo(
    url: str | None, *, day: str = DEFAULT_DAY, timeout: float = DEFAULT_TIMEOUT_S, out: TextIO | None = None
) -> Summary:
    """Submit one run of the pipeline and process it with a worker and a releaser in this process.

    Args:
        url: a NATS server with JetStream, or ``None`` to start an embedded one.
        day: the day the pipeline processes (it only appears in payloads and results).
        timeout: seconds to wait for the run to end.
        out: where to print what happens; ``None`` for silence.

    Raises:
        asyncjobs.WaitTimeout: the run had not ended within ``timeout``.
    """
    summary = Summary()
    started = time.monotonic()

    def say(text: str) -> None:
        if out is not None:
            out.write(f"{time.monotonic() - started:5.1f}s  {text}\n")
            out.flush()

    router = asyncjobs.Router()

    @router.handler("etl:extract")
    async def extract(task: asyncjobs.Task) -> dict[str, object]:
        job = task.payload_json()
        _started(task)
        await asyncio.sleep(0.1)
        return _done(task, {"day": job["day"], "files": job["partitions"]})

    @router.handler("etl:transform")
    async def transform(task: asyncjobs.Task) -> dict[str, object]:
        partition = task.payload_json()["partition"]
        _started(task)
        await asyncio.sleep(0.15 + 0.05 * partition)
        if step_name(task) == FLAKY_STEP and task.tries == 1:
            say(f"{step_name(task):<12} try {task.tries}  failed: its source was not ready (the queue retries it)")
            raise RuntimeError(f"simulated failure: partition {partition} is not ready")
        return _done(task, {"partition": partition, "rows": 1000 + 250 * partition})

    @router.handler("etl:load")
    async def load(task: asyncjobs.Task) -> dict[str, object]:
        # The parents' results, keyed by their task ids (wf:<run id>:transform-<n>).
        rows = sum(result.payload["rows"] for result in task.dependency_results.values())
        _started(task, f"with the results of {len(task.dependency_results)} transforms")
        await asyncio.sleep(0.1)
        return _done(task, {"table": task.payload_json()["table"], "rows": rows})

    @router.handler("etl:report")
    async def report(task: asyncjobs.Task) -> str:
        [loaded] = task.dependency_results.values()
        _started(task)
        await asyncio.sleep(0.05)
        return _done(task, f"{loaded.payload['rows']} rows reported to {task.payload_json()['to']}")

    @router.handler("etl:cleanup")
    async def cleanup(task: asyncjobs.Task) -> str:
        _started(task)
        await asyncio.sleep(0.05)
        return _done(task, f"staging files of {task.payload_json()['day']} removed")

    def _started(task: asyncjobs.Task, detail: str = "") -> None:
        summary.started.append((step_name(task), task.tries))
        say(f"{step_name(task):<12} try {task.tries}  started{' ' + detail if detail else ''}")

    def _done(task: asyncjobs.Task, result: T) -> T:
        say(f"{step_name(task):<12} try {task.tries}  complete: {orjson.dumps(result).decode()}")
        return result

    async with contextlib.AsyncExitStack() as stack:
        server_url = await stack.enter_async_context(demo_server(url))
        # The releaser and the submitter share one client, which creates the queue; the worker has its own.
        client = await stack.enter_async_context(await asyncjobs.connect(server_url, queue=QUEUE))
        flows = Workflows(client)
        worker_client = await stack.enter_async_context(
            await asyncjobs.connect(
                server_url,
                queue=asyncjobs.Queue(QUEUE, no_create=True),
                concurrency=PARTITIONS,
                retry_policy=DEMO_RETRY_POLICY,
            )
        )
        background = [
            asyncio.create_task(flows.run(), name="releaser"),
            asyncio.create_task(worker_client.run(router), name="worker"),
        ]
        try:
            workflow = build_workflow(day)
            # A run id of our own (the default is a new KSUID): submitting again with it would not start a second run.
            run_id = f"{day}-{uuid.uuid4().hex[:8]}"
            say(f"submitting run {run_id} of {workflow.name} on queue {QUEUE} ({len(workflow.steps)} steps)")
            submitted = time.monotonic()
            run = await flows.submit(workflow, run_id=run_id)
            summary.run = await flows.wait(run.id, timeout=timeout)
            summary.elapsed = time.monotonic() - submitted
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
    return summary


def print_summary(summary: Summary, out: TextIO) -> None:
    """Print how the run ended, step by step, and its picture."""
    run = summary.run
    if run is None:
        out.write("UNEXPECTED OUTCOME: the run did not end\n")
        return
    out.write(f"\nrun {run.id} of {run.name}: {run.state} in {summary.elapsed:.1f}s\n")
    out.write(f"  {'step':<12} {'state':<10} {'tries':>5}  result\n")
    for name, status in run.steps.items():
        result = "" if status.result is None else orjson.dumps(status.result).decode()
        out.write(f"  {name:<12} {status.label:<10} {status.tries:>5}  {result}\n")
    out.write("\nthe run as a Mermaid flowchart (GitHub and most Markdown viewers draw it):\n\n")
    out.write(run.mermaid())
    out.write(
        f"\nevery step completed: {FLAKY_STEP} on its second try, the others on their first\n"
        if summary.ok
        else "\nUNEXPECTED OUTCOME\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="use this NATS server (with JetStream) instead of an embedded one")
    parser.add_argument("--day", default=DEFAULT_DAY, help="the day to process (default %(default)s)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for the run (default %(default)s)"
    )
    args = parser.parse_args(argv)
    # The library logs each failed try at WARNING with its traceback; the demo's one planned failure is left out,
    # any other warning still shows.
    handler = logging.StreamHandler()
    handler.addFilter(lambda record: "simulated failure" not in record.getMessage())
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", handlers=[handler])
    try:
        summary = asyncio.run(run_demo(args.url, day=args.day, timeout=args.timeout, out=sys.stdout))
    except KeyboardInterrupt:
        return 130
    print_summary(summary, sys.stdout)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
