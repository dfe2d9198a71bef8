"""Pure logic of the runtime, without a server: trigger rules, step task ids, run records, step outcomes."""

from __future__ import annotations

import pytest

from asyncjobs import CorruptDataError, Task, TaskState
from asyncjobs.wiretime import WireTime
from asyncjobs_workflows import InvalidWorkflow, RunState, Trigger, Workflow
from asyncjobs_workflows.constants import CANCELLED_ERROR, SKIPPED_PREFIX
from asyncjobs_workflows.decide import Scan, Verdict
from asyncjobs_workflows.graph import Graph
from asyncjobs_workflows.record import RunRecord, parse_step_task_id, step_task_id, validate_run_id
from asyncjobs_workflows.runevents import decode_run_event, encode_run_event
from asyncjobs_workflows.status import Outcome, StepStatus, outcome_of, step_state

P, C, S, F = Outcome.PENDING, Outcome.COMPLETE, Outcome.SKIPPED, Outcome.FAILED


@pytest.mark.parametrize(
    ("trigger", "outcomes", "verdict", "cause", "read"),
    [
        (Trigger.ALL_SUCCESS, [C, C, C], Verdict.RUN, None, 3),
        (Trigger.ALL_SUCCESS, [C, P, F], Verdict.WAIT, None, 2),
        (Trigger.ALL_SUCCESS, [F, P, C], Verdict.UNREACHABLE, "p0", 1),
        (Trigger.ALL_SUCCESS, [C, F], Verdict.UNREACHABLE, "p1", 2),
        (Trigger.ALL_SUCCESS, [S, C], Verdict.SKIP, "p0", 2),
        (Trigger.ALL_SUCCESS, [S, F], Verdict.UNREACHABLE, "p1", 2),
        (Trigger.ALL_SUCCESS, [S, P], Verdict.WAIT, "p0", 2),
        (Trigger.ALL_SUCCESS, [C, S, S], Verdict.SKIP, "p1", 3),
        (Trigger.ALL_DONE, [F, S, C], Verdict.RUN, None, 3),
        (Trigger.ALL_DONE, [F, P, C], Verdict.WAIT, None, 2),
        (Trigger.ALL_DONE, [C, C], Verdict.RUN, None, 2),
        (Trigger.ALL_DONE, [S, S], Verdict.RUN, None, 2),
        (Trigger.ALL_SUCCESS, [], Verdict.RUN, None, 0),
    ],
)
def test_trigger_rules(
    trigger: Trigger, outcomes: list[Outcome], verdict: Verdict, cause: str | None, read: int
) -> None:
    scan = Scan(trigger)
    taken = 0
    for n, outcome in enumerate(outcomes):
        taken += 1
        if not scan.add(f"p{n}", outcome):
            break
    assert (scan.verdict(), scan.cause, taken) == (verdict, cause, read)


@pytest.mark.parametrize(
    ("task_id", "parsed"),
    [
        ("wf:run1:extract", ("run1", "extract")),
        ("wf:run1:step:with:colons", ("run1", "step:with:colons")),
        ("wf:3Mqj5znyujMX9tHOVm3ch3z9Nc0:a", ("3Mqj5znyujMX9tHOVm3ch3z9Nc0", "a")),
        ("wf::a", None),
        ("wf:run1:", None),
        ("wf:run1", None),
        ("3Mqj5znyujMX9tHOVm3ch3z9Nc0", None),
        ("wfx:run1:a", None),
    ],
)
def test_step_task_ids(task_id: str, parsed: tuple[str, str] | None) -> None:
    assert parse_step_task_id(task_id) == parsed
    if parsed is not None:
        assert step_task_id(*parsed) == task_id


@pytest.mark.parametrize("run_id", ["", "a:b", "a.b", "a b", "x" * 65, 7, None])
def test_invalid_run_ids(run_id: object) -> None:
    with pytest.raises(InvalidWorkflow, match="run id"):
        validate_run_id(run_id)


@pytest.mark.parametrize("run_id", ["a", "order-42_retry", "x" * 64])
def test_valid_run_ids(run_id: str) -> None:
    assert validate_run_id(run_id) == run_id


def test_run_record_round_trip() -> None:
    created = WireTime(1_764_547_200_123_456_789)
    record = RunRecord("r1", "etl", "DEFAULT", RunState.FAILED, created, created, generation=2, submitted=True)
    data = record.encode()
    assert data.startswith(b'{"id":"r1","workflow":"etl","queue":"DEFAULT","state":"failed","created":"2025-12-01T')
    assert RunRecord.decode(data, revision=9) == record.with_changes(revision=9)


@pytest.mark.parametrize("data", [b"[]", b"{}", b'{"id":"r","workflow":"w","queue":"Q","state":"odd","created":"x"}'])
def test_corrupt_run_records(data: bytes) -> None:
    with pytest.raises(CorruptDataError):
        RunRecord.decode(data)


def test_run_event_round_trip() -> None:
    record = RunRecord("r1", "etl", "DEFAULT", RunState.COMPLETE, WireTime.now(), generation=1)
    event = decode_run_event(encode_run_event(record))
    assert (event.run_id, event.workflow, event.state, event.generation) == ("r1", "etl", RunState.COMPLETE, 1)
    with pytest.raises(CorruptDataError, match="unknown event type"):
        decode_run_event(b'{"type":"io.choria.asyncjobs.v1.task_state"}')


def _task(state: TaskState, last_err: str = "") -> Task:
    task = Task("t", id="wf:r:s")
    task.state = state
    task.last_err = last_err
    return task


@pytest.mark.parametrize(
    ("state", "last_err", "outcome", "shown", "label"),
    [
        (TaskState.BLOCKED, "", P, TaskState.BLOCKED, "pending"),
        (TaskState.NEW, "", P, TaskState.NEW, "pending"),
        (TaskState.RETRY, "boom", P, TaskState.RETRY, "pending"),
        (TaskState.ACTIVE, "", P, TaskState.ACTIVE, "active"),
        (TaskState.COMPLETED, "", C, TaskState.COMPLETED, "complete"),
        (TaskState.TERMINATED, SKIPPED_PREFIX + "x", S, "skipped", "skipped"),
        (TaskState.TERMINATED, CANCELLED_ERROR, F, TaskState.TERMINATED, "cancelled"),
        (TaskState.TERMINATED, "handler said so", F, TaskState.TERMINATED, "failed"),
        (TaskState.EXPIRED, "", F, TaskState.EXPIRED, "failed"),
        (TaskState.UNREACHABLE, "task dependencies failed: x", F, TaskState.UNREACHABLE, "unreachable"),
        (TaskState.QUEUE_ERROR, "", F, TaskState.QUEUE_ERROR, "failed"),
    ],
)
def test_step_outcomes(state: TaskState, last_err: str, outcome: Outcome, shown: object, label: str) -> None:
    task = _task(state, last_err)
    assert outcome_of(task) is outcome
    assert step_state(task) == shown
    status = StepStatus.of("s", task, None)
    assert (status.state, status.label, status.task_id) == (shown, label, "wf:r:s")


def test_graph_children_leaves_and_index() -> None:
    wf = (
        Workflow("g")
        .step("report", "t", after=["b", "a"])
        .step("b", "t", after="root")
        .step("a", "t", after="root")
        .step("root", "t")
        .step("lone", "t")
    )
    graph = Graph(wf)
    assert graph.order == ("lone", "root", "a", "b", "report")
    assert graph.children["root"] == ("a", "b")
    assert graph.roots == ("lone", "root")
    assert graph.leaves == ("lone", "report")
    assert graph.index == {"report": 0, "b": 1, "a": 2, "root": 3, "lone": 4}
