"""What a fault run measured: its fault timeline, the figures of one scenario, and the report of several.

The figures are defined in :data:`DEFINITIONS`, which the report prints too.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import asyncjobs
from bench.fault_ledger import Ledger, ProcessLog
from bench.fault_load import Leftover, ProducerStats, Tracker

NS: Final = 1_000_000_000
FAULT_LEAD_S: Final = 1.0
FAULT_SETTLE_S: Final = 15.0
"""After a server or node fault, completions within this many seconds may still be lost: a client reconnects
within about 6 s and a request it sent into the outage times out after 5 s."""
QUORUM_GRACE_S: Final = 60.0
LEFTOVERS_SHOWN: Final = 20

DEFINITIONS: Final = (
    "- offered: tasks the producer tried to enqueue at least once (it retries a failed enqueue with the same Task "
    "object until it succeeds or raises DuplicateTaskError or InvalidTaskStateError).",
    "- lost: offered tasks not in a final state at the end, including tasks the store does not have at all.",
    "- stuck: lost tasks the store does have, in a state that is not final (active, new, retry, queue_error, ...).",
    "- dup. completions / starts: tasks whose handler returned / began more than once, over every worker process.",
    "- unexplained duplicates: duplicate completions not caused by the fault: for a killed worker, tasks that were "
    "not in flight in it; for a server or node fault, tasks whose first completion lies outside every fault window "
    f"(from {FAULT_LEAD_S:g} s before the fault to {FAULT_SETTLE_S:g} s after its end).",
    "- recovery: seconds from the end of the last fault until every offered task is final; backlog cleared: until "
    "every task offered before the end of the last fault is final. Both are polled every 0.5 s.",
    f"- complete {QUORUM_GRACE_S:g} s after quorum: tasks complete {QUORUM_GRACE_S:g} s after the cluster had a "
    "majority of its nodes again (after the last fault when it never lost one).",
    "- items left: items in the queue stream when the run ended (pending, in flight).",
)


@dataclass(kw_only=True)
class FaultRecord:
    """One injected fault, in seconds on the run's clock and in unix ns (to compare with handler logs)."""

    what: str
    start_s: float
    start_ns: int
    end_s: float | None = None
    end_ns: int | None = None


class Timeline:
    """The faults of one run, and for a cluster when a majority of its nodes was running again.

    Args:
        clock: the run's clock, in seconds.
        cluster_size: the number of nodes, or 0 for a single server.
    """

    def __init__(self, clock: Callable[[], float], *, cluster_size: int = 0) -> None:
        self.clock = clock
        self.faults: list[FaultRecord] = []
        self.cluster_size = cluster_size
        self.nodes_down: set[int] = set()
        self.quorum_lost = False
        self.quorum_back_s: float | None = None

    def begin(self, what: str) -> FaultRecord:
        fault = FaultRecord(what=what, start_s=self.clock(), start_ns=time.time_ns())
        self.faults.append(fault)
        return fault

    def end(self, fault: FaultRecord) -> None:
        fault.end_s, fault.end_ns = self.clock(), time.time_ns()

    def node_down(self, index: int) -> None:
        self.nodes_down.add(index)
        if self.cluster_size - len(self.nodes_down) <= self.cluster_size // 2:
            self.quorum_lost = True

    def node_up(self, index: int) -> None:
        had_quorum = self.cluster_size - len(self.nodes_down) > self.cluster_size // 2
        self.nodes_down.discard(index)
        if not had_quorum and self.cluster_size - len(self.nodes_down) > self.cluster_size // 2:
            self.quorum_back_s = self.clock()

    @property
    def recovered_s(self) -> float | None:
        """When the last fault ended (None when no fault ended)."""
        ends = [fault.end_s for fault in self.faults if fault.end_s is not None]
        return max(ends) if ends else None

    def explains(self, done_ns: int) -> bool:
        """Whether a handler finishing at ``done_ns`` may have had its outcome lost to one of the faults."""
        for fault in self.faults:
            end_ns = fault.end_ns if fault.end_ns is not None else time.time_ns()
            if fault.start_ns - FAULT_LEAD_S * NS <= done_ns <= end_ns + FAULT_SETTLE_S * NS:
                return True
        return False


@dataclass(kw_only=True)
class Outcome:
    """The figures of one scenario run (see the module docstring for the definitions)."""

    scenario: str
    description: str
    planned: int = 0
    offered: int = 0
    completed: int = 0
    lost: int = 0
    stuck: int = 0
    missing: int = 0
    leftover_states: dict[str, int] = field(default_factory=dict)
    other_final: dict[str, int] = field(default_factory=dict)
    duplicate_completions: int = 0
    duplicate_starts: int = 0
    unexplained_duplicates: list[str] = field(default_factory=list)
    in_flight_at_kill: int | None = None
    """Tasks the killed worker had started and not finished (SIGKILL scenario)."""
    unrecorded_at_kill: int | None = None
    """Tasks the killed worker finished whose completion was stored only after the kill, by another worker."""
    enqueue_errors: int = 0
    enqueue_error_kinds: dict[str, int] = field(default_factory=dict)
    enqueue_error_samples: dict[str, str] = field(default_factory=dict)
    producer_gave_up: dict[str, str] = field(default_factory=dict)
    items_left: int | None = None
    pending_left: int | None = None
    in_flight_left: int | None = None
    recovered_at_s: float | None = None
    recovery_s: float | None = None
    backlog_s: float | None = None
    quorum_lost: bool = False
    quorum_at_s: float | None = None
    complete_after_quorum: int | None = None
    """Tasks complete ``QUORUM_GRACE_S`` after quorum returned (cluster scenarios)."""
    load_end_s: float | None = None
    wall_s: float = 0.0
    read_errors: int = 0
    faults: list[FaultRecord] = field(default_factory=list)
    leftovers: list[Leftover] = field(default_factory=list)
    worker_warnings: dict[str, int] = field(default_factory=dict)
    """The most frequent warnings the worker processes logged (task ids and numbers masked), with counts."""
    notes: list[str] = field(default_factory=list)
    """Anything unusual about the run itself (a fault triggered late, a worker that failed to start)."""
    error: str = ""
    """Why the scenario could not be run to its end; empty when it was."""

    @property
    def healthy(self) -> bool:
        """Nothing lost, stuck, left in the queue or run twice without cause, and the run itself worked."""
        return (
            not self.error
            and self.lost == 0
            and self.completed == self.offered == self.planned
            and self.items_left == 0
            and not self.unexplained_duplicates
        )


def summarize(
    outcome: Outcome,
    *,
    timeline: Timeline,
    producer: ProducerStats,
    tracker: Tracker,
    leftovers: list[Leftover],
    ledger: Ledger,
    queue_info: asyncjobs.QueueInfo | None,
    victim: ProcessLog | None,
    killed_at_ns: int | None,
) -> None:
    """Fill in ``outcome`` from what the run recorded."""
    final_states = Counter(task.state.value for task in tracker.final.values())
    outcome.planned, outcome.offered = producer.planned, producer.offered
    outcome.completed = final_states.pop(asyncjobs.TaskState.COMPLETED.value, 0)
    outcome.other_final = dict(final_states)
    outcome.lost = len(leftovers)
    outcome.missing = sum(1 for left in leftovers if left.state == "missing")
    outcome.stuck = outcome.lost - outcome.missing
    outcome.leftover_states = dict(Counter(left.state for left in leftovers))
    outcome.leftovers = leftovers[:LEFTOVERS_SHOWN]
    outcome.enqueue_errors = sum(producer.errors.values())
    outcome.enqueue_error_kinds = dict(producer.errors)
    outcome.enqueue_error_samples = dict(producer.first_error)
    outcome.producer_gave_up = dict(producer.gave_up)
    outcome.load_end_s = producer.finished_at
    outcome.read_errors = tracker.read_errors
    if queue_info is not None:
        outcome.items_left = queue_info.items
        outcome.pending_left = queue_info.pending
        outcome.in_flight_left = queue_info.in_flight
    _duplicates(outcome, tracker, ledger, timeline, victim, killed_at_ns)
    _recovery(outcome, timeline, producer, tracker)
    outcome.faults = list(timeline.faults)


def _duplicates(
    outcome: Outcome,
    tracker: Tracker,
    ledger: Ledger,
    timeline: Timeline,
    victim: ProcessLog | None,
    killed_at_ns: int | None,
) -> None:
    duplicates = ledger.duplicate_completions()
    outcome.duplicate_completions = len(duplicates)
    outcome.duplicate_starts = len(ledger.duplicate_starts())
    if victim is not None and killed_at_ns is not None:
        in_flight = victim.in_flight()
        unrecorded = {
            task_id
            for task_id in victim.dones
            if task_id not in in_flight and _completed_ns(tracker.final.get(task_id), default=0) > killed_at_ns
        }
        outcome.in_flight_at_kill, outcome.unrecorded_at_kill = len(in_flight), len(unrecorded)
        unexplained = duplicates - in_flight - unrecorded
    else:
        unexplained = {task_id for task_id in duplicates if not timeline.explains(ledger.first_done_ns(task_id) or 0)}
    outcome.unexplained_duplicates = sorted(unexplained)


def _completed_ns(task: asyncjobs.Task | None, *, default: int) -> int:
    if task is None or task.result is None:
        return default
    return int(task.result.completed.timestamp() * NS)


def _recovery(outcome: Outcome, timeline: Timeline, producer: ProducerStats, tracker: Tracker) -> None:
    recovered = timeline.recovered_s
    outcome.recovered_at_s = recovered
    if recovered is None:
        return
    if not tracker.unfinished and tracker.final_at:
        outcome.recovery_s = max(0.0, max(tracker.final_at.values()) - recovered)
    backlog = [task_id for task_id, at in producer.offered_at.items() if at <= recovered]
    if not tracker.unfinished.intersection(backlog):
        outcome.backlog_s = max([0.0, *(tracker.final_at[task_id] - recovered for task_id in backlog)])
    if timeline.cluster_size:
        outcome.quorum_lost = timeline.quorum_lost
        quorum = timeline.quorum_back_s if timeline.quorum_back_s is not None else recovered
        outcome.quorum_at_s = quorum
        outcome.complete_after_quorum = sum(
            1
            for task_id, at in tracker.final_at.items()
            if at <= quorum + QUORUM_GRACE_S and tracker.final[task_id].state == asyncjobs.TaskState.COMPLETED
        )


# ---- the report -------------------------------------------------------------------------------------------------

COLUMNS: Final = (
    "Scenario",
    "Offered",
    "Completed",
    "Lost",
    "Stuck",
    "Dup. completions",
    "Dup. starts",
    "Other final",
    "Enqueue errors",
    "Items left",
    "Recovery s",
    "Backlog cleared s",
    f"Complete {QUORUM_GRACE_S:g} s after quorum",
    "Wall s",
)


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _never(value: float | None, outcome: Outcome) -> str:
    return "never" if value is None and outcome.recovered_at_s is not None else _num(value)


def _states(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) if counts else "0"


def row(outcome: Outcome) -> str:
    """One table row."""
    if outcome.error:
        cells = [outcome.scenario, f"error: {outcome.error}", *[""] * (len(COLUMNS) - 3), _num(outcome.wall_s, 0)]
        return "| " + " | ".join(cells) + " |"
    stuck = f"{outcome.stuck} ({_states(outcome.leftover_states)})" if outcome.lost else "0"
    dup = str(outcome.duplicate_completions)
    if outcome.unexplained_duplicates:
        dup += f" ({len(outcome.unexplained_duplicates)} unexplained)"
    items = "—" if outcome.items_left is None else str(outcome.items_left)
    if outcome.items_left:
        items += f" ({outcome.pending_left} pending, {outcome.in_flight_left} in flight)"
    cells = [
        outcome.scenario,
        f"{outcome.offered}" + (f" of {outcome.planned}" if outcome.offered != outcome.planned else ""),
        str(outcome.completed),
        str(outcome.lost),
        stuck,
        dup,
        str(outcome.duplicate_starts),
        _states(outcome.other_final),
        str(outcome.enqueue_errors),
        items,
        _never(outcome.recovery_s, outcome),
        _never(outcome.backlog_s, outcome),
        "—" if outcome.complete_after_quorum is None else f"{outcome.complete_after_quorum} of {outcome.offered}",
        _num(outcome.wall_s, 0),
    ]
    return "| " + " | ".join(cells) + " |"


def table(outcomes: Sequence[Outcome]) -> list[str]:
    return ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1), *map(row, outcomes)]


def details(outcome: Outcome) -> list[str]:
    """The facts behind one row: faults, kill figures, producer errors and the tasks left unfinished."""
    lines = [f"### {outcome.scenario}", "", outcome.description, ""]
    if outcome.error:
        return [*lines, f"- Failed to run: {outcome.error}", ""]
    for fault in outcome.faults:
        lines.append(f"- Fault: {fault.what}, from {fault.start_s:.1f} s to {_num(fault.end_s)} s")
    lines.append(
        f"- Load ended at {_num(outcome.load_end_s)} s; recovered (last fault over) at {_num(outcome.recovered_at_s)} s"
    )
    if outcome.items_left is not None:
        lines.append(
            f"- Queue at the end: {outcome.items_left} items ({outcome.pending_left} pending, "
            f"{outcome.in_flight_left} in flight); the scenario took {outcome.wall_s:.0f} s"
        )
    if outcome.quorum_at_s is not None:
        lost = "quorum was lost, back" if outcome.quorum_lost else "quorum never lost; counted from the last fault end"
        lines.append(f"- Cluster: {lost} at {outcome.quorum_at_s:.1f} s")
    if outcome.in_flight_at_kill is not None:
        lines.append(
            f"- Killed worker: {outcome.in_flight_at_kill} tasks in flight (started, not finished), "
            f"{outcome.unrecorded_at_kill} finished but stored complete only after the kill"
        )
    if outcome.unexplained_duplicates:
        lines.append(f"- Unexplained duplicate completions: {', '.join(outcome.unexplained_duplicates[:10])}")
    if outcome.enqueue_errors:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(outcome.enqueue_error_kinds.items()))
        lines.append(f"- Enqueue errors seen by the producer: {kinds}")
        lines.extend(f"  - first {kind}: `{text}`" for kind, text in sorted(outcome.enqueue_error_samples.items()))
    if outcome.producer_gave_up:
        lines.append(f"- The producer gave up on {len(outcome.producer_gave_up)} tasks:")
        lines.extend(f"  - {task_id}: `{why}`" for task_id, why in list(outcome.producer_gave_up.items())[:10])
    if outcome.leftovers:
        lines.append(f"- Not final at the end ({outcome.lost}, first {len(outcome.leftovers)} shown):")
        lines.extend(
            f"  - {left.id}: {left.state}, tries {left.tries}, last_err `{left.last_err}`" for left in outcome.leftovers
        )
    if outcome.read_errors:
        lines.append(f"- Task loads that failed while polling (retried): {outcome.read_errors}")
    if outcome.worker_warnings:
        lines.append("- Worker processes logged:")
        lines.extend(f"  - {n}x `{message}`" for message, n in outcome.worker_warnings.items())
    lines.extend(f"- Note: {note}" for note in outcome.notes)
    return [*lines, ""]


def markdown(outcomes: Sequence[Outcome], header: Sequence[str], when: datetime) -> str:
    """The whole report: how it was run, the table, the definitions and the details of each scenario."""
    lines = [
        "# Fault injection",
        "",
        f"- Date: {when.strftime('%Y-%m-%d %H:%M UTC')}",
        *header,
        "",
        *table(outcomes),
        "",
        *DEFINITIONS,
        "",
    ]
    for outcome in outcomes:
        lines.extend(details(outcome))
    return "\n".join(lines)


def to_json(outcomes: Sequence[Outcome], settings: dict[str, Any], when: datetime) -> str:
    document = {"date": when.isoformat(), "settings": settings, "scenarios": [dataclasses.asdict(o) for o in outcomes]}
    return json.dumps(document, indent=2, default=str)
