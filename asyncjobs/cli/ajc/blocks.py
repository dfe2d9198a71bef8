"""The views of the stores shared by ``info``, ``queues`` and ``tasks``: upstream's layout, and their JSON."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from asyncjobs.cli.ajc.durations import humanize_duration
from asyncjobs.cli.ajc.output import STORE_KEY_WIDTH, Output, go_duration, limit, size, when_since
from asyncjobs.storeinfo import BucketInfo, QueueInfo, TaskStoreInfo


def _seconds(value: float | timedelta | None) -> float | None:
    return value.total_seconds() if isinstance(value, timedelta) else value


def _flag(value: bool) -> str:
    return "true" if value else "false"


def task_store_block(out: Output, info: TaskStoreInfo) -> None:
    """``Tasks Storage:`` and its size, storage, replicas, retention and first/last times."""
    rows: list[tuple[str, Any]] = [
        ("Entries", f"{info.tasks:,} @ {size(info.bytes)}"),
        ("Memory Based", _flag(info.memory)),
        ("Replicas", info.replicas),
        ("Archive Period", humanize_duration(info.retention)),
    ]
    if info.first is not None:
        rows.append(("First Entry", when_since(info.first)))
    if info.last is not None:
        rows.append(("Last Update", when_since(info.last)))
    out.block("Tasks Storage:", rows, width=STORE_KEY_WIDTH)


def bucket_block(out: Output, title: str, info: BucketInfo | None, extra: list[tuple[str, Any]] | None = None) -> None:
    """A key-value bucket's size, storage and replicas under ``title`` (``not created yet`` when missing)."""
    if info is None:
        out.block(title, [("Entries", "not created yet")], width=STORE_KEY_WIDTH)
        return
    rows: list[tuple[str, Any]] = [
        ("Entries", f"{info.values:,} @ {size(info.bytes)}"),
        ("Memory Based", _flag(info.memory)),
        ("Replicas", info.replicas),
    ]
    out.block(title, rows + (extra or []), width=STORE_KEY_WIDTH)


def queue_block(out: Output, info: QueueInfo) -> None:
    """``NAME Work Queue:`` with upstream's rows, then the delivery counts upstream does not show."""
    queue = info.queue
    rows: list[tuple[str, Any]] = [
        ("Entries", f"{info.items:,} @ {size(info.bytes)}"),
        ("Memory Based", _flag(info.memory)),
        ("Replicas", info.replicas),
        ("Archive Period", humanize_duration(_seconds(queue.max_age))),
        ("Max Task Tries", limit(queue.max_tries, unlimited=-1)),
        ("Max Run Time", go_duration(queue.max_run_time)),
        ("Max Concurrent", queue.max_concurrent),
        ("Max Entries", limit(queue.max_entries)),
    ]
    if queue.discard_old:
        rows.append(("Discard", "oldest when full"))
    if info.first is not None:
        rows.append(("First Item", when_since(info.first)))
    if info.last is not None:
        rows.append(("Last Item", when_since(info.last)))
    rows += [
        ("Waiting", info.pending),
        ("In Flight", info.in_flight),
        ("Redelivered", info.redelivered),
        ("Worker Pulls", info.waiting_pulls),
    ]
    out.block(f"{queue.name} Work Queue:", rows, width=STORE_KEY_WIDTH)


def queue_row(info: QueueInfo) -> list[Any]:
    """A row of ``queues list``: Name, Items, Size, Replicas, Max Tries, Max Items, Max Concurrent."""
    queue = info.queue
    return [
        queue.name,
        info.items,
        size(info.bytes),
        info.replicas,
        limit(queue.max_tries, unlimited=-1),
        limit(queue.max_entries),
        queue.max_concurrent,
    ]


QUEUE_HEADERS = ("Name", "Items", "Size", "Replicas", "Max Tries", "Max Items", "Max Concurrent")


def queue_json(info: QueueInfo) -> dict[str, Any]:
    """A queue as JSON: its settings (durations in seconds, ``null`` for unlimited) and its counts."""
    queue = info.queue
    return {
        "name": queue.name,
        "created": info.created,
        "items": info.items,
        "bytes": info.bytes,
        "replicas": info.replicas,
        "memory": info.memory,
        "max_age": queue.max_age,
        "max_entries": queue.max_entries,
        "max_tries": queue.max_tries,
        "max_run_time": queue.max_run_time,
        "max_concurrent": queue.max_concurrent,
        "discard_old": queue.discard_old,
        "first": info.first,
        "last": info.last,
        "waiting": info.pending,
        "in_flight": info.in_flight,
        "redelivered": info.redelivered,
        "worker_pulls": info.waiting_pulls,
    }


def task_store_json(info: TaskStoreInfo) -> dict[str, Any]:
    """The task store as JSON (retention in seconds, ``null`` for forever)."""
    return {
        "tasks": info.tasks,
        "bytes": info.bytes,
        "memory": info.memory,
        "replicas": info.replicas,
        "retention": info.retention,
        "first": info.first,
        "last": info.last,
    }


def bucket_json(info: BucketInfo | None) -> dict[str, Any] | None:
    """A bucket as JSON, ``null`` when missing."""
    if info is None:
        return None
    return {"values": info.values, "bytes": info.bytes, "memory": info.memory, "replicas": info.replicas}
