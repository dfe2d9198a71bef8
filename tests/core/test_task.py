"""Task construction and states, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import asyncjobs
from asyncjobs import TaskState


@pytest.mark.parametrize(
    ("payload", "stored"),
    [
        (None, None),
        ({"to": "a"}, b'{"to":"a"}'),
        (["a", 1], b'["a",1]'),
        ("text", b'"text"'),
        (b"\x00raw", b"\x00raw"),
        (bytearray(b"ba"), b"ba"),
        (42, b"42"),
    ],
)
def test_payload_encoding(payload: Any, stored: bytes | None) -> None:
    assert asyncjobs.Task("x", payload).payload == stored


def test_defaults() -> None:
    task = asyncjobs.Task("email:new")
    assert len(task.id) == 27
    assert task.state == TaskState.NEW and task.max_tries == 10 and task.tries == 0
    assert task.queue == "" and task.result is None and task.deadline is None
    assert abs(task.created - datetime.now(UTC)) < timedelta(seconds=5)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"type": "bad type"}, asyncjobs.InvalidNameError, "task type is invalid"),
        ({"type": ""}, asyncjobs.InvalidNameError, "task type is invalid"),
        ({"type": "x", "id": "a.b"}, asyncjobs.InvalidNameError, "task id is invalid"),
        ({"type": "x", "payload": object()}, asyncjobs.ConfigurationError, "cannot be JSON-encoded"),
        ({"type": "x", "deadline": datetime(2030, 1, 1)}, asyncjobs.ConfigurationError, "no timezone"),
        ({"type": "x", "deadline": 5}, asyncjobs.ConfigurationError, "datetime or timedelta"),
        ({"type": "x", "max_tries": "3"}, asyncjobs.ConfigurationError, "max_tries"),
        ({"type": "x", "id": "me", "dependencies": ["me"]}, asyncjobs.ConfigurationError, "itself"),
    ],
)
def test_invalid_tasks(kwargs: dict[str, Any], error: type[Exception], fragment: str) -> None:
    task_type = kwargs.pop("type")
    with pytest.raises(error, match=fragment):
        asyncjobs.Task(task_type, **kwargs)


def test_deadline_forms_and_dependencies() -> None:
    absolute = datetime(2030, 1, 1, 12, tzinfo=UTC)
    assert asyncjobs.Task("x", deadline=absolute).deadline == absolute
    relative = asyncjobs.Task("x", deadline=timedelta(minutes=5))
    assert relative.deadline is not None and relative.deadline - relative.created == timedelta(minutes=5)
    blocked = asyncjobs.Task("x", dependencies=["a", "b", "a"])
    assert blocked.state == TaskState.BLOCKED and blocked.dependencies == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "state"),
    [("complete", TaskState.COMPLETED), ("completed", TaskState.COMPLETED), ("retry", TaskState.RETRY)],
)
def test_state_names(name: str, state: TaskState) -> None:
    assert TaskState.parse(name) is state


def test_state_sets() -> None:
    assert {"complete", "expired", "terminated", "unreachable"} == asyncjobs.TERMINAL_STATES
    assert {"complete", "expired", "terminated"} == asyncjobs.DISCARDABLE_STATES
    with pytest.raises(asyncjobs.ConfigurationError, match="unknown task state 'done'"):
        TaskState.parse("done")


def test_terminate_message() -> None:
    assert str(asyncjobs.TerminateTask("invalid payload")) == "invalid payload: terminate task"
    assert str(asyncjobs.TerminateTask()) == "terminate task"
