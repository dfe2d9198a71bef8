"""The asyncjobs library end to end: enqueue rates, processing rate and enqueue-to-start latency."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncjobs
from bench.common import (
    CONCURRENCY,
    QUEUE,
    TASK_TYPE,
    Results,
    Settings,
    percentile,
    rate,
    wait_until,
)

log = logging.getLogger("bench")

NS_PER_MS = 1_000_000
LATENCY_WARMUP = 50


def _tasks(count: int) -> list[asyncjobs.Task]:
    return [asyncjobs.Task(TASK_TYPE, {"i": i}) for i in range(count)]


async def _enqueue_many(client: asyncjobs.Client, count: int) -> list[asyncjobs.Task]:
    tasks = _tasks(count)
    await client.enqueue_many(tasks)
    return tasks


async def _enqueue_sequential(client: asyncjobs.Client, count: int) -> None:
    for i in range(count):
        await client.enqueue(asyncjobs.Task(TASK_TYPE, {"i": i}))


async def _empty_queue(client: asyncjobs.Client) -> bool:
    return (await client.admin.queue_info(QUEUE)).items == 0


async def _check_complete(client: asyncjobs.Client, tasks: list[asyncjobs.Task]) -> None:
    """Spot-check that the run did the work: one stored task each, the first, middle and last ones complete."""
    stored = (await client.admin.tasks_info()).tasks
    if stored != len(tasks):
        raise RuntimeError(f"library run: {stored} tasks stored, expected {len(tasks)}")
    for task in (tasks[0], tasks[len(tasks) // 2], tasks[-1]):
        state = (await client.get_task(task.id)).state
        if state != asyncjobs.TaskState.COMPLETED:
            raise RuntimeError(f"library run: task {task.id} is {state.value!r}, expected 'complete'")


class Counting:
    """A router with a no-op handler that counts the tasks it ran and can wait for a number of them."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.reached = asyncio.Event()
        self.latencies_ns: list[int] = []
        self.router = asyncjobs.Router()
        self.router.add(TASK_TYPE, self.handle)

    def expect(self, more: int) -> None:
        """Arm :meth:`wait` for ``more`` further tasks."""
        self.target = self.count + more
        self.reached.clear()

    async def handle(self, task: asyncjobs.Task) -> Any:
        self.latencies_ns.append(time.time_ns() - task.created_at.unix_ns)
        self.count += 1
        if self.count >= self.target:
            self.reached.set()
        return None

    async def wait(self, worker: asyncio.Task[None], timeout_s: float) -> None:
        """Wait for the expected count; fail at once if the worker itself died."""
        waiter = asyncio.ensure_future(self.reached.wait())
        done, _ = await asyncio.wait({waiter, worker}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            if worker in done:
                worker.result()
                raise RuntimeError("the worker stopped before all tasks were processed")
            raise TimeoutError(f"benchmark stalled: {self.count}/{self.target} tasks handled after {timeout_s:.0f}s")


async def _process(url: str, count: int, timeout_s: float) -> tuple[float, float]:
    """Run a worker client until ``count`` queued tasks are handled and the queue is empty.

    Returns:
        The wall seconds from calling ``run`` until the queue is empty, and the CPU seconds this process used.
    """
    counting = Counting()
    counting.expect(count)
    client = await asyncjobs.connect(url, queue=QUEUE, concurrency=CONCURRENCY)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        worker = asyncio.create_task(client.run(counting.router))
        await counting.wait(worker, timeout_s)
        await wait_until(lambda: _empty_queue(client), "an empty BENCH queue", timeout_s)
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        await client.close()


async def bench_library(url: str, settings: Settings, results: Results) -> None:
    """``enqueue_many``, sequential ``enqueue`` and ``run`` rates."""
    timeout_s = settings.scenario_timeout_s
    async with await asyncjobs.connect(url, queue=QUEUE) as producer:
        await _enqueue_many(producer, settings.warmup)
        await _process(url, settings.warmup, timeout_s)
        await producer.admin.purge_tasks()
        started = time.perf_counter()
        await asyncio.wait_for(_enqueue_sequential(producer, settings.sequential_tasks), timeout_s)
        sequential = rate(settings.sequential_tasks, time.perf_counter() - started)
        await producer.admin.purge_queue(QUEUE)
        await producer.admin.purge_tasks()
        started = time.perf_counter()
        tasks = await asyncio.wait_for(_enqueue_many(producer, settings.tasks), timeout_s)
        many = rate(settings.tasks, time.perf_counter() - started)
        elapsed, cpu = await _process(url, settings.tasks, timeout_s)
        processed, cpu_us = rate(settings.tasks, elapsed), cpu / settings.tasks * 1e6
        await _check_complete(producer, tasks)
        log.info(
            "library: enqueue_many %.0f, enqueue %.0f, run %.0f tasks/s, %.0f us CPU/task",
            many,
            sequential,
            processed,
            cpu_us,
        )
        results.add("lib_enqueue_many", "enqueue_many, tasks/s", "tasks/s", many)
        results.add("lib_enqueue", "enqueue (sequential), tasks/s", "tasks/s", sequential)
        results.add("lib_run", f"run (concurrency {CONCURRENCY}), tasks/s", "tasks/s", processed)
        results.add("lib_cpu", "run, client CPU per task, us", "us", cpu_us, higher_is_better=False)


async def _paced_enqueue(producer: asyncjobs.Client, per_second: float, seconds: float) -> int:
    """Enqueue tasks at a fixed rate, each created just before it is sent; return how many."""
    loop = asyncio.get_running_loop()
    total = max(1, int(per_second * seconds))
    sending: set[asyncio.Task[asyncjobs.Task]] = set()
    start = loop.time()
    for i in range(total):
        delay = start + i / per_second - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = asyncio.create_task(producer.enqueue(asyncjobs.Task(TASK_TYPE, {"i": i})))
        sending.add(sent)
        sent.add_done_callback(sending.discard)
    if sending:
        await asyncio.gather(*sending)
    return total


async def bench_latency(url: str, settings: Settings, results: Results) -> None:
    """Enqueue-to-start latency while a worker runs and a producer enqueues at a fixed moderate rate."""
    timeout_s = settings.scenario_timeout_s
    counting = Counting()
    async with (
        await asyncjobs.connect(url, queue=QUEUE) as producer,
        await asyncjobs.connect(url, queue=QUEUE, concurrency=CONCURRENCY) as client,
    ):
        worker = asyncio.create_task(client.run(counting.router))
        counting.expect(LATENCY_WARMUP)
        await producer.enqueue_many(_tasks(LATENCY_WARMUP))
        await counting.wait(worker, timeout_s)
        counting.latencies_ns.clear()
        counting.expect(int(settings.latency_rate * settings.latency_seconds))
        started = time.perf_counter()
        sent = await _paced_enqueue(producer, settings.latency_rate, settings.latency_seconds)
        offered = rate(sent, time.perf_counter() - started)
        await counting.wait(worker, timeout_s)
        samples = [ns / NS_PER_MS for ns in counting.latencies_ns]
        p50, p99 = percentile(samples, 50), percentile(samples, 99)
        log.info("latency: %d tasks at %.0f/s, p50 %.2f ms, p99 %.2f ms", sent, offered, p50, p99)
        label = f"at {settings.latency_rate:g} tasks/s"
        results.add("lat_p50", f"enqueue-to-start latency p50 {label}, ms", "ms", p50, higher_is_better=False)
        results.add("lat_p99", f"enqueue-to-start latency p99 {label}, ms", "ms", p99, higher_is_better=False)
