"""Quick-start demo: a few thousand tasks through one queue, with retries and one termination.

Run it with ``./dev demo`` (or ``python examples/quickstart.py``). It starts an embedded nats-server unless
``--url`` names one, enqueues ``--tasks`` tasks on the queue ``DEMO``, processes them with 20 concurrent handlers and
prints what happened. A few percent of the tasks fail once or twice before they succeed, and exactly one is
terminated, so the summary shows every outcome a handler can produce.

The logic lives in :func:`run_demo`, which returns a :class:`Summary`; ``tests/core/test_quickstart.py`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any, TextIO

import asyncjobs
from asyncjobs.server import NatsServer

QUEUE = "DEMO"
TASK_TYPE = "demo:square"
CONCURRENCY = 20
DEFAULT_TASKS = 3000
DEFAULT_TIMEOUT_S = 120.0
PROGRESS_INTERVAL_S = 0.25

# Retries after a fraction of a second, so the demo finishes quickly. The named policies wait minutes.
DEMO_RETRY_POLICY = asyncjobs.LinearPolicy(steps=5, jitter=0.1, min_s=0.2, max_s=1.0)


def planned_failures(n: int) -> int:
    """How many times task ``n`` fails before it succeeds: 2.5% fail once, 2% fail twice."""
    if n % 40 == 3:
        return 1
    if n % 50 == 11:
        return 2
    return 0


def terminated_index(total: int) -> int:
    """The one task (by payload number) whose handler raises TerminateTask."""
    return total // 2


@dataclass
class Summary:
    """What a demo run did, read back from the task store."""

    tasks: int
    """Tasks enqueued."""
    states: dict[str, int]
    """Tasks per state (wire strings: ``complete``, ``terminated``, ...) at the end."""
    tries: dict[int, int]
    """Tasks per number of tries."""
    expected_tries: dict[int, int]
    """Tasks per number of tries the failure plan predicts."""
    enqueue_seconds: float
    """Time taken by ``enqueue_many``."""
    process_seconds: float
    """Time from starting the worker until it stopped, once every task reached a final state (or at the timeout)."""
    failures: int
    """Handler failures seen as ``retry`` events."""
    terminated_errors: dict[str, str] = field(default_factory=dict)
    """``last_err`` of each terminated task, by task id."""
    unfinished: dict[str, str] = field(default_factory=dict)
    """State of each task that was not in a final state when the demo stopped, by task id."""

    @property
    def enqueue_rate(self) -> float:
        """Tasks enqueued per second."""
        return self.tasks / self.enqueue_seconds if self.enqueue_seconds else 0.0

    @property
    def finished(self) -> int:
        """Tasks that reached a final state."""
        return self.tasks - len(self.unfinished)

    @property
    def throughput(self) -> float:
        """Tasks brought to a final state per second of processing."""
        return self.finished / self.process_seconds if self.process_seconds else 0.0

    @property
    def ok(self) -> bool:
        """Every task finished: all completed but one terminated, with the tries the plan predicts."""
        return (
            not self.unfinished
            and self.states == {"complete": self.tasks - 1, "terminated": 1}
            and self.tries == self.expected_tries
        )


class Progress:
    """Follows lifecycle events of the demo's tasks to count their current states."""

    def __init__(self, task_ids: set[str]) -> None:
        self.task_ids = task_ids
        self.state_of: dict[str, asyncjobs.TaskState] = {}
        self.counts: Counter[asyncjobs.TaskState] = Counter()
        self.failures = 0

    async def follow(self, events: AsyncIterator[asyncjobs.Event]) -> None:
        """Count state changes until cancelled."""
        async for event in events:
            if not isinstance(event, asyncjobs.TaskStateEvent) or event.task_id not in self.task_ids:
                continue
            previous = self.state_of.get(event.task_id)
            if previous is not None:
                self.counts[previous] -= 1
            self.state_of[event.task_id] = event.state
            self.counts[event.state] += 1
            if event.state == asyncjobs.TaskState.RETRY:
                self.failures += 1

    def finished(self) -> int:
        """Tasks whose last event was a final state."""
        return sum(self.counts[state] for state in asyncjobs.TERMINAL_STATES)

    def line(self, elapsed: float) -> str:
        """The progress line: current counts and the completion rate so far."""
        c, s = self.counts, asyncjobs.TaskState
        rate = c[s.COMPLETED] / elapsed if elapsed > 0 else 0.0
        return (
            f"{elapsed:5.1f}s  completed {c[s.COMPLETED]:>5}/{len(self.task_ids)}  running {c[s.ACTIVE]:>3}  "
            f"retrying {c[s.RETRY]:>3}  terminated {c[s.TERMINATED]}  {rate:5.0f} tasks/s"
        )


def make_router(total: int) -> asyncjobs.Router:
    """The demo's handlers: square the payload's number, failing or terminating as planned."""
    router = asyncjobs.Router()
    terminate_at = terminated_index(total)

    @router.handler(TASK_TYPE)
    async def square(task: asyncjobs.Task) -> int:
        n = int(task.payload_json()["n"])
        if n == terminate_at:
            raise asyncjobs.TerminateTask(f"payload {n} is not wanted")
        # task.tries counts this try too: 1 on the first.
        if task.tries <= planned_failures(n):
            raise RuntimeError(f"simulated failure {task.tries} of {planned_failures(n)} for payload {n}")
        await asyncio.sleep(0.001)  # stands in for real work
        return n * n

    return router


def expected_tries(total: int) -> dict[int, int]:
    plan = Counter(1 if n == terminated_index(total) else planned_failures(n) + 1 for n in range(total))
    return dict(sorted(plan.items()))


async def stop(worker: asyncio.Task[None]) -> None:
    """Stop ``client.run()``: handlers still running get the client's ``shutdown_grace`` to finish."""
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker


@contextlib.asynccontextmanager
async def demo_server(url: str | None) -> AsyncIterator[tuple[str, str]]:
    """Yields the server URL and a label: the given one, or an embedded nats-server started for the demo."""
    if url is not None:
        yield url, url
        return
    async with NatsServer() as server:
        yield server.url, f"embedded nats-server at {server.url}"


async def run_demo(
    url: str | None,
    tasks: int,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    out: TextIO | None = None,
) -> Summary:
    """Enqueue ``tasks`` tasks on the queue ``DEMO``, process them, and return what happened.

    Args:
        url: a NATS server with JetStream, or ``None`` to start an embedded one.
        tasks: how many tasks to enqueue, at least 1.
        timeout: seconds to wait for every task to reach a final state.
        out: where to write progress; ``None`` for silence.
    """
    if tasks < 1:
        raise ValueError("the demo needs at least one task")

    def say(text: str, end: str = "\n") -> None:
        if out is not None:
            out.write(text + end)
            out.flush()

    live = out is not None and out.isatty()
    async with (
        demo_server(url) as (server_url, label),
        await asyncjobs.connect(
            server_url,
            queue=asyncjobs.Queue(QUEUE, max_run_time=30),
            concurrency=CONCURRENCY,
            retry_policy=DEMO_RETRY_POLICY,
        ) as client,
    ):
        say(f"asyncjobs quick start: {tasks} tasks on queue {QUEUE} ({label})")
        batch = [asyncjobs.Task(TASK_TYPE, {"n": n}) for n in range(tasks)]
        progress = Progress({task.id for task in batch})

        # Follow events before enqueueing so no state change is missed; the flush makes sure the
        # subscription reached the server.
        following = asyncio.create_task(progress.follow(client.events()))
        await asyncio.sleep(0)
        await client.nc.flush()

        started = time.perf_counter()
        await client.enqueue_many(batch)
        enqueue_seconds = time.perf_counter() - started
        say(f"enqueued {tasks} tasks in {enqueue_seconds:.2f}s ({tasks / enqueue_seconds:.0f} tasks/s)")

        started = time.perf_counter()
        worker = asyncio.create_task(client.run(make_router(tasks)))
        deadline = started + timeout
        next_check = next_line = started
        while True:
            await asyncio.sleep(0.05)
            now = time.perf_counter()
            done = progress.finished() >= tasks
            if not done and now >= next_check:
                # Events are best effort: an empty queue is the authoritative sign that every task is final.
                next_check = now + PROGRESS_INTERVAL_S
                info = await client.admin.queue_info(QUEUE)
                done = info.items == 0 and info.in_flight == 0
            if live and (done or now >= next_line):
                say("\r" + progress.line(now - started), end="")
                next_line = now + PROGRESS_INTERVAL_S
            elif out is not None and not live and now >= next_line:
                say(progress.line(now - started))  # a log, not a terminal: one line per second
                next_line = now + 1.0
            if done or now >= deadline:
                break
        if live:
            say("")
        await stop(worker)
        process_seconds = time.perf_counter() - started
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)

        summary = Summary(
            tasks=tasks,
            states={},
            tries={},
            expected_tries=expected_tries(tasks),
            enqueue_seconds=enqueue_seconds,
            process_seconds=process_seconds,
            failures=progress.failures,
        )
        states: Counter[str] = Counter()
        tries: Counter[int] = Counter()
        async for task in client.admin.tasks(queue=QUEUE):
            if task.id not in progress.task_ids:
                continue  # left by an earlier run against the same server
            states[task.state.value] += 1
            tries[task.tries] += 1
            if task.state == asyncjobs.TaskState.TERMINATED:
                summary.terminated_errors[task.id] = task.last_err
            elif task.state not in asyncjobs.TERMINAL_STATES:
                summary.unfinished[task.id] = task.state.value
        summary.states = dict(states.most_common())
        summary.tries = dict(sorted(tries.items()))
        return summary


def print_summary(summary: Summary, out: TextIO) -> None:
    finished = "all" if not summary.unfinished else f"only {summary.finished} of"
    out.write(
        f"{finished} {summary.tasks} tasks finished in {summary.process_seconds:.2f}s: "
        f"{summary.throughput:.0f} tasks/s processed ({summary.enqueue_rate:.0f} tasks/s enqueued), "
        f"{summary.failures} handler failures retried\n\n"
    )
    out.write("tasks per state\n")
    for state, count in summary.states.items():
        out.write(f"  {state:<12} {count:>6}\n")
    out.write("tasks per number of tries\n")
    for tries, count in summary.tries.items():
        out.write(f"  {tries} {'try  ' if tries == 1 else 'tries'}      {count:>6}\n")
    for task_id, last_err in summary.terminated_errors.items():
        out.write(f"terminated task {task_id}: last_err = {last_err!r}\n")
    if summary.unfinished:
        shown = list(summary.unfinished.items())[:10]
        out.write(f"\n{len(summary.unfinished)} tasks did not reach a final state in time, for example:\n")
        out.writelines(f"  {task_id}  {state}\n" for task_id, state in shown)
    elif not summary.ok:
        out.write(f"\nunexpected outcome: the failure plan predicts tries {summary.expected_tries}\n")


async def _until_signalled(demo: Coroutine[Any, Any, Summary]) -> Summary:
    """Run the demo; SIGTERM cancels it like Ctrl-C does, so the embedded server is always stopped."""
    task = asyncio.ensure_future(demo)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=DEFAULT_TASKS, help="tasks to enqueue (default %(default)s)")
    parser.add_argument("--url", help="use this NATS server (with JetStream) instead of an embedded one")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for all tasks (default %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.tasks < 1:
        parser.error("--tasks must be at least 1")
    # The library logs each failed try at WARNING with its traceback, and each task that ends without completing
    # (expired, terminated, unreachable) at WARNING too; INFO adds connection and queue events (docs/logging.md).
    # This demo fails some 200 tries on purpose, so its handler leaves out those planned failures: any other
    # warning, and the one terminated task, still show.
    handler = logging.StreamHandler()
    handler.addFilter(lambda record: "simulated failure" not in record.getMessage())
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", handlers=[handler])
    try:
        summary = asyncio.run(_until_signalled(run_demo(args.url, args.tasks, timeout=args.timeout, out=sys.stdout)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted: the embedded server was stopped", file=sys.stderr)
        return 130
    print_summary(summary, sys.stdout)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
