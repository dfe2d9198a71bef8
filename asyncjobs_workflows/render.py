"""Pictures of a workflow: Mermaid flowcharts and Graphviz DOT.

Both renderers take an optional mapping of step name to state label (``"complete"``, ``"failed"``, ...), so the
same code draws a definition and, later, a run. A label in :data:`STATE_COLOURS` also colours its step; any other
label is shown but not coloured. Output is deterministic: steps in topological order, ties by name, and edges in
the order of their child, then parent. Edges into an ``all_done`` step are dashed: it runs whatever its parents do.
An edge from a parent whose result the child's ``when=`` tests is labelled ``when``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from asyncjobs import ConfigurationError
from asyncjobs_workflows.definition import Trigger, Workflow

__all__ = ["STATE_COLOURS", "WHEN_LABEL", "dot", "mermaid"]

STATE_COLOURS: Final[Mapping[str, str]] = {
    "pending": "#f5f5f5",
    "active": "#bbdefb",
    "complete": "#c8e6c9",
    "failed": "#ffcdd2",
    "unreachable": "#e0e0e0",
    "skipped": "#fff9c4",
    "cancelled": "#d7ccc8",
}
"""The fill colour of each known state label."""
DEFAULT_FILL: Final = "#ffffff"
"""The fill colour of a step without a known state."""
WHEN_LABEL: Final = "when"
"""The label of an edge from a parent whose result the child's conditions test."""

# Mermaid arrows by (dashed, tested by a condition).
_MERMAID_ARROWS: Final = {
    (False, False): "-->",
    (True, False): "-.->",
    (False, True): f"-->|{WHEN_LABEL}|",
    (True, True): f"-. {WHEN_LABEL} .->",
}
_MERMAID_SAFE: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _:-.")


def mermaid(workflow: Workflow, states: Mapping[str, str] | None = None) -> str:
    """Render ``workflow`` as a Mermaid ``flowchart TD``.

    Node ids are ``s0``, ``s1``, ... in topological order, since step names may hold characters Mermaid reads as
    syntax; each label shows the step name and task type, and the state when ``states`` gives one.

    Args:
        workflow: the workflow to draw.
        states: step name to state label; known labels (:data:`STATE_COLOURS`) also set the node's class.

    Returns:
        The Mermaid source, ending in a newline.

    Raises:
        InvalidWorkflow: the workflow is invalid.
        ConfigurationError: ``states`` names a step the workflow does not have.
    """
    order = workflow.topological_order()
    _check_states(workflow, states)
    ids = {name: f"s{index}" for index, name in enumerate(order)}
    lines = ["flowchart TD"]
    if states is not None:
        lines += [f"    classDef {state} fill:{colour}" for state, colour in STATE_COLOURS.items()]
    for name in order:
        step = workflow.steps[name]
        parts = [name, step.task_type]
        state = None if states is None else states.get(name)
        if state is not None:
            parts.append(state)
        label = "<br/>".join(_mermaid_text(part) for part in parts)
        suffix = f":::{state}" if state in STATE_COLOURS else ""
        lines.append(f'    {ids[name]}["{label}"]{suffix}')
    for child, parent, dashed, tested in _edges(workflow, order):
        lines.append(f"    {ids[parent]} {_MERMAID_ARROWS[dashed, tested]} {ids[child]}")
    return "\n".join(lines) + "\n"


def dot(workflow: Workflow, states: Mapping[str, str] | None = None) -> str:
    """Render ``workflow`` as a Graphviz ``digraph``, one box per step, filled by state.

    Args:
        workflow: the workflow to draw.
        states: step name to state label; known labels (:data:`STATE_COLOURS`) also set the fill colour.

    Returns:
        The DOT source, ending in a newline.

    Raises:
        InvalidWorkflow: the workflow is invalid.
        ConfigurationError: ``states`` names a step the workflow does not have.
    """
    order = workflow.topological_order()
    _check_states(workflow, states)
    lines = [
        f"digraph {_dot_quote(workflow.name)} {{",
        f'    node [shape=box, style="rounded,filled", fillcolor="{DEFAULT_FILL}"];',
    ]
    for name in order:
        step = workflow.steps[name]
        parts = [name, step.task_type]
        state = None if states is None else states.get(name)
        attributes = ""
        if state is not None:
            parts.append(state)
            if state in STATE_COLOURS:
                attributes = f', fillcolor="{STATE_COLOURS[state]}"'
        label = _dot_quote("\n".join(parts))
        lines.append(f"    {_dot_quote(name)} [label={label}{attributes}];")
    for child, parent, dashed, tested in _edges(workflow, order):
        edge = (["style=dashed"] if dashed else []) + ([f"label={_dot_quote(WHEN_LABEL)}"] if tested else [])
        style = f" [{', '.join(edge)}]" if edge else ""
        lines.append(f"    {_dot_quote(parent)} -> {_dot_quote(child)}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _edges(workflow: Workflow, order: tuple[str, ...]) -> list[tuple[str, str, bool, bool]]:
    """(child, parent, dashed, tested by a condition) for each dependency, by child then parent in topological order."""
    position = {name: index for index, name in enumerate(order)}
    edges = []
    for child in order:
        step = workflow.steps[child]
        tested = {condition.step for condition in step.when}
        for parent in sorted(step.after, key=position.__getitem__):
            edges.append((child, parent, step.trigger is Trigger.ALL_DONE, parent in tested))
    return edges


def _check_states(workflow: Workflow, states: Mapping[str, str] | None) -> None:
    if states is None:
        return
    unknown = sorted(name for name in states if name not in workflow.steps)
    if unknown:
        raise ConfigurationError(
            f"states names step(s) {', '.join(map(repr, unknown))} that workflow {workflow.name!r} does not have: "
            "pass states only for its steps"
        )


def _mermaid_text(text: str) -> str:
    # Mermaid reads quotes, brackets and angle brackets in labels as syntax; its entity codes are always literal.
    return "".join(char if char in _MERMAID_SAFE else f"#{ord(char)};" for char in text)


def _dot_quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
