"""How ``ajc workflows`` finds and shows runs: the run's block, its steps as a tree, its JSON, ``watch``'s lines.

The tree puts the roots at the top and each step's children under it. A step with several parents is drawn in
full under the first of them the walk meets and named again, marked ``(shown above)``, under the others, so the
tree grows with the number of dependencies, not the number of paths. Branches deeper than :data:`MAX_DEPTH` go on
as new top-level branches marked ``(continued)``, so long chains stay readable at 80 columns.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final, NoReturn

from rich.console import Group, RenderableType
from rich.text import Text
from rich.tree import Tree

from asyncjobs.cli.ajc.output import KEY_WIDTH, Output, since, when, when_since
from asyncjobs.cli.ajc.session import fail
from asyncjobs_workflows.constants import RUNS_BUCKET
from asyncjobs_workflows.definition import Trigger
from asyncjobs_workflows.errors import WorkflowNotFound
from asyncjobs_workflows.record import step_task_id
from asyncjobs_workflows.status import StepStatus, WorkflowRun
from asyncjobs_workflows.workflows import Workflows

__all__ = [
    "ENDED_LABELS",
    "MAX_DEPTH",
    "failed_steps",
    "get_run",
    "known_run",
    "not_found",
    "render_run",
    "run_json",
    "run_line",
    "run_view",
    "runs_stored",
    "step_keys",
    "step_line",
    "step_state",
    "step_tree",
    "steps_done",
]

MAX_DEPTH: Final = 10
"""Levels of the tree drawn under one top-level branch (4 columns each) before it continues as a new one."""
MAX_PARENTS_SHOWN: Final = 2
"""Parents named beside a fan-in step; the rest are counted."""
ERASED: Final = "erased"
"""The state shown for a step whose task is no longer stored (task retention, or a delete cut short)."""
ENDED_LABELS: Final = frozenset({"complete", "failed", "unreachable", "skipped", "cancelled"})
"""Step labels that are final: the step will not change until the run is retried."""
LABEL_ORDER: Final = ("complete", "skipped", "active", "pending", "failed", "unreachable", "cancelled")


def step_state(step: StepStatus | None) -> str:
    """The state shown for a step: its task's state, ``skipped``, or ``cancelled`` when a cancel stopped it."""
    if step is None:
        return ERASED
    if step.cancelled:
        return "cancelled"
    return str(step.state)


def steps_done(run: WorkflowRun) -> int:
    """How many of the run's steps have ended (completed, skipped, failed, unreachable or cancelled)."""
    return sum(1 for step in run.steps.values() if step.label in ENDED_LABELS)


def failed_steps(run: WorkflowRun) -> list[StepStatus]:
    """The steps that failed (expired, terminated, queue error), in definition order."""
    return [step for step in run.steps.values() if step.label == "failed"]


# ---- JSON -----------------------------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    # A handler may return bytes, which JSON cannot hold: they go out as standard base64, as the wire format has them.
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    return value


def run_json(run: WorkflowRun) -> dict[str, Any]:
    """The run as a JSON object: its fields, then each step with its definition's links and its task's status."""
    steps = []
    for name, definition in run.workflow.steps.items():
        status = run.steps.get(name)
        steps.append(
            {
                "name": name,
                "task_id": step_task_id(run.id, name),
                "task_type": definition.task_type,
                "after": list(definition.after),
                "trigger": definition.trigger.value,
                "state": step_state(status),
                "label": status.label if status else ERASED,
                "tries": status.tries if status else 0,
                "started": _iso(status.started) if status else None,
                "finished": _iso(status.finished) if status else None,
                "error": status.last_error if status else "",
                "result": _jsonable(status.result) if status else None,
            }
        )
    return {
        "id": run.id,
        "workflow": run.name,
        "state": run.state.value,
        "queue": run.queue,
        "created": _iso(run.created),
        "finished": _iso(run.finished),
        "generation": run.generation,
        "steps_done": steps_done(run),
        "steps_total": len(run.workflow.steps),
        "steps": steps,
    }


# ---- the block and the tree -----------------------------------------------------------------------------------------


def _summary(run: WorkflowRun) -> str:
    counts: dict[str, int] = {}
    for name in run.workflow.steps:
        status = run.steps.get(name)
        label = status.label if status else ERASED
        counts[label] = counts.get(label, 0) + 1
    order = {label: index for index, label in enumerate(LABEL_ORDER)}
    parts = [f"{n} {label}" for label, n in sorted(counts.items(), key=lambda item: order.get(item[0], len(order)))]
    return f"{steps_done(run)} of {len(run.workflow.steps)} ended ({', '.join(parts)})"


def _block_rows(run: WorkflowRun, out: Output) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("Workflow", run.name),
        ("State", out.state(run.state.value)),
        ("Queue", run.queue),
        ("Created", when_since(run.created)),
    ]
    if run.finished is not None:
        rows.append(("Finished", f"{when(run.finished)} (took {since(run.created, run.finished)})"))
    if run.generation:
        rows.append(("Retries", run.generation))
    rows.append(("Steps", _summary(run)))
    return rows


def _block(run: WorkflowRun, out: Output) -> Group:
    lines: list[RenderableType] = [Text(f"Workflow Run {run.id}"), Text()]
    for key, value in _block_rows(run, out):
        text = Text(f"{key:>{KEY_WIDTH}}: ")
        text.append(value if isinstance(value, Text) else Text(str(value)))
        lines.append(text)
    return Group(*lines)


def _node(run: WorkflowRun, name: str, out: Output, note: str) -> Text:
    definition = run.workflow.steps[name]
    status = run.steps.get(name)
    text = Text()
    text.append(name, style="bold" if out.interactive else "")
    text.append("  ")
    text.append_text(out.state(step_state(status)))
    details = []
    if status is not None and status.tries > 1:
        details.append(f"{status.tries} tries")
    if note:
        details.append(note)
    else:
        if definition.trigger is Trigger.ALL_DONE:
            details.append(Trigger.ALL_DONE.value)
        if definition.when:
            details.append("when")
        if len(definition.after) > 1:
            shown = ", ".join(definition.after[:MAX_PARENTS_SHOWN])
            more = len(definition.after) - MAX_PARENTS_SHOWN
            details.append(f"after {shown}" + (f", +{more}" if more > 0 else ""))
    if details:
        text.append("  " + " · ".join(details), style="dim" if out.interactive else "")
    return text


def step_tree(run: WorkflowRun, out: Output) -> Tree:
    """The run's steps as a tree: roots at the top, each step's children under it, each step's state beside it."""
    workflow = run.workflow
    order = workflow.topological_order()
    children: dict[str, list[str]] = {name: [] for name in order}
    for name in order:  # parents before children, so each list comes out in topological order
        for parent in workflow.steps[name].after:
            children[parent].append(name)
    tree = Tree(Text(f"{run.name} steps", style="bold" if out.interactive else ""), guide_style="dim")
    expanded: set[str] = set()
    pending = list(workflow.roots())
    continued: set[str] = set()

    def add(branch: Tree, name: str, depth: int) -> None:
        if name in expanded:
            branch.add(_node(run, name, out, "(shown above)"))
            return
        if depth >= MAX_DEPTH and children[name]:
            branch.add(_node(run, name, out, "(continued below)"))
            if name not in continued:
                continued.add(name)
                pending.append(name)
            return
        expanded.add(name)
        node = branch.add(_node(run, name, out, ""))
        for child in children[name]:
            add(node, child, depth + 1)

    index = 0
    while index < len(pending):  # roots first, then the branches that went deeper than MAX_DEPTH
        name = pending[index]
        index += 1
        if name in expanded:
            continue
        if name in continued:
            expanded.add(name)
            node = tree.add(_node(run, name, out, "(continued)"))
            for child in children[name]:
                add(node, child, 1)
        else:
            add(tree, name, 0)
    return tree


def _failures(run: WorkflowRun, out: Output) -> Iterator[Text]:
    for step in failed_steps(run):
        text = Text(f"Failed step {step.name}: ")
        text.append_text(out.state(step_state(step)))
        text.append(f" after {step.tries} {'try' if step.tries == 1 else 'tries'}")
        if step.last_error:
            text.append(f": {step.last_error}")
        yield text


def render_run(run: WorkflowRun, out: Output) -> Group:
    """The whole view of a run: its block, its step tree, and the errors of the steps that failed."""
    parts: list[RenderableType] = [_block(run, out), Text(), step_tree(run, out)]
    failures = list(_failures(run, out))
    if failures:
        parts += [Text(), *failures]
    return Group(*parts)


def run_view(run: WorkflowRun, out: Output) -> None:
    """Print :func:`render_run`: wrapped to a terminal's width, whole lines when piped (for grep and awk)."""
    if out.interactive:
        out.console.print(render_run(run, out))
    else:
        out.console.print(render_run(run, out), overflow="ignore", crop=False)


# ---- watch lines ----------------------------------------------------------------------------------------------------


def _clock() -> str:
    return datetime.now().astimezone().strftime("%H:%M:%S")


def step_line(run: WorkflowRun, name: str, *, json_lines: bool) -> str | dict[str, Any]:
    """A step's state as a ``watch`` line, as ``ajc tasks watch`` writes a task's: the step's task id first."""
    status = run.steps.get(name)
    state = step_state(status)
    task_type = run.workflow.steps[name].task_type
    task_id = step_task_id(run.id, name)
    tries = status.tries if status else 0
    error = status.last_error if status else ""
    if json_lines:
        return {
            "time": _iso(datetime.now(UTC)),
            "type": "step",
            "run_id": run.id,
            "step": name,
            "task_id": task_id,
            "task_type": task_type,
            "state": state,
            "label": status.label if status else ERASED,
            "tries": tries,
            "error": error,
        }
    line = f"[{_clock()}] {task_id}: type: {task_type} tries: {tries} state: {state}"
    return f"{line} error: {error}" if error and state != "complete" else line


def run_line(run: WorkflowRun, *, json_lines: bool) -> str | dict[str, Any]:
    """The run's state as a ``watch`` line."""
    if json_lines:
        return {
            "time": _iso(datetime.now(UTC)),
            "type": "run",
            "run_id": run.id,
            "workflow": run.name,
            "state": run.state.value,
            "generation": run.generation,
            "steps_done": steps_done(run),
            "steps_total": len(run.workflow.steps),
        }
    return (
        f"[{_clock()}] {run.id}: workflow: {run.name} state: {run.state.value} "
        f"steps: {steps_done(run)}/{len(run.workflow.steps)}"
    )


def step_keys(run: WorkflowRun) -> Mapping[str, tuple[str, int]]:
    """What a change of a step is, for ``watch``: its shown state and its tries."""
    keys = {}
    for name in run.workflow.steps:
        status = run.steps.get(name)
        keys[name] = (step_state(status), status.tries if status else 0)
    return keys


# ---- reading runs ---------------------------------------------------------------------------------------------------


async def runs_stored(flows: Workflows) -> bool:
    """Whether the runs bucket exists: reading runs must not create it (the library creates it when it is missing)."""
    return await flows.client.admin.bucket_info(RUNS_BUCKET) is not None


def not_found(run_id: str) -> NoReturn:
    """Exit 1 with ``ajc: error: workflow run <id> not found: ...``."""
    fail(f"workflow run {run_id} not found: list the runs with 'ajc workflows list'")


@contextlib.asynccontextmanager
async def known_run(flows: Workflows, run_id: str) -> AsyncIterator[None]:
    """Turn the library's "no such run" into ``ajc``'s, which names the command that lists runs."""
    if not await runs_stored(flows):
        not_found(run_id)
    try:
        yield
    except WorkflowNotFound:
        not_found(run_id)


async def get_run(flows: Workflows, run_id: str, *, check: bool = True) -> WorkflowRun:
    """The run, or exit 1 saying it is not found; ``check=False`` skips looking for the runs bucket first."""
    if check and not await runs_stored(flows):
        not_found(run_id)
    try:
        return await flows.get(run_id)
    except WorkflowNotFound:
        not_found(run_id)
