"""Mermaid and Graphviz DOT pictures of a workflow, with and without states."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from asyncjobs import ConfigurationError
from asyncjobs_workflows import InvalidWorkflow, Workflow
from asyncjobs_workflows.render import dot, mermaid

Renderer = Callable[..., str]


def diamond() -> Workflow:
    # Defined out of topological order on purpose: the output must not depend on the order of step() calls.
    return (
        Workflow("etl")
        .step("report", "etl:report", after=["right", "left"], trigger="all_done")
        .step("right", "etl:right", after="extract")
        .step("left", "etl:left", after="extract")
        .step("extract", "etl:extract")
    )


MERMAID = """\
flowchart TD
    s0["extract<br/>etl:extract"]
    s1["left<br/>etl:left"]
    s2["right<br/>etl:right"]
    s3["report<br/>etl:report"]
    s0 --> s1
    s0 --> s2
    s1 -.-> s3
    s2 -.-> s3
"""

MERMAID_STATES = """\
flowchart TD
    classDef pending fill:#f5f5f5
    classDef active fill:#bbdefb
    classDef complete fill:#c8e6c9
    classDef failed fill:#ffcdd2
    classDef unreachable fill:#e0e0e0
    classDef skipped fill:#fff9c4
    classDef cancelled fill:#d7ccc8
    s0["extract<br/>etl:extract<br/>complete"]:::complete
    s1["left<br/>etl:left<br/>failed"]:::failed
    s2["right<br/>etl:right<br/>#60;odd#62; #34;label#34;"]
    s3["report<br/>etl:report"]
    s0 --> s1
    s0 --> s2
    s1 -.-> s3
    s2 -.-> s3
"""

DOT = """\
digraph "etl" {
    node [shape=box, style="rounded,filled", fillcolor="#ffffff"];
    "extract" [label="extract\\netl:extract"];
    "left" [label="left\\netl:left"];
    "right" [label="right\\netl:right"];
    "report" [label="report\\netl:report"];
    "extract" -> "left";
    "extract" -> "right";
    "left" -> "report" [style=dashed];
    "right" -> "report" [style=dashed];
}
"""

DOT_STATES = """\
digraph "etl" {
    node [shape=box, style="rounded,filled", fillcolor="#ffffff"];
    "extract" [label="extract\\netl:extract\\ncomplete", fillcolor="#c8e6c9"];
    "left" [label="left\\netl:left\\nfailed", fillcolor="#ffcdd2"];
    "right" [label="right\\netl:right\\n<odd> \\"label\\""];
    "report" [label="report\\netl:report"];
    "extract" -> "left";
    "extract" -> "right";
    "left" -> "report" [style=dashed];
    "right" -> "report" [style=dashed];
}
"""

STATES = {"extract": "complete", "left": "failed", "right": '<odd> "label"'}


@pytest.mark.parametrize(
    ("render", "states", "expected"),
    [
        (mermaid, None, MERMAID),
        (mermaid, STATES, MERMAID_STATES),
        (dot, None, DOT),
        (dot, STATES, DOT_STATES),
    ],
    ids=["mermaid", "mermaid-states", "dot", "dot-states"],
)
def test_diamond(render: Renderer, states: Mapping[str, str] | None, expected: str) -> None:
    assert render(diamond(), states) == expected


@pytest.mark.parametrize("render", [mermaid, dot])
def test_every_known_state_is_coloured(render: Renderer) -> None:
    wf = Workflow("w")
    states = {}
    for state in ["pending", "active", "complete", "failed", "unreachable", "skipped"]:
        wf.step(state, "t")
        states[state] = state
    out = render(wf, states)
    for state in states:
        assert (f":::{state}" if render is mermaid else f'\\n{state}", fillcolor=') in out


@pytest.mark.parametrize("render", [mermaid, dot])
def test_unknown_step_in_states(render: Renderer) -> None:
    with pytest.raises(ConfigurationError, match="states names step\\(s\\) 'ghost' that workflow 'etl' does not"):
        render(diamond(), {"ghost": "complete"})


@pytest.mark.parametrize("render", [mermaid, dot])
def test_invalid_workflow_is_not_drawn(render: Renderer) -> None:
    with pytest.raises(InvalidWorkflow, match="has a cycle"):
        render(Workflow("w").step("a", "t", after="b").step("b", "t", after="a"))


GATED = (
    Workflow("gate")
    .step("check", "t")
    .step("load", "t")
    .step("run", "t", after=["check", "load"], when={"step": "check", "path": "ok", "equals": True})
    .step("report", "t", after=["run", "load"], trigger="all_done", when={"step": "load", "exists": True})
)


@pytest.mark.parametrize(
    ("render", "edges"),
    [
        (mermaid, ["    s0 -->|when| s2", "    s1 --> s2", "    s1 -. when .-> s3", "    s2 -.-> s3"]),
        (
            dot,
            [
                '    "check" -> "run" [label="when"];',
                '    "load" -> "run";',
                '    "load" -> "report" [style=dashed, label="when"];',
                '    "run" -> "report" [style=dashed];',
            ],
        ),
    ],
    ids=["mermaid", "dot"],
)
def test_edges_tested_by_a_condition_are_labelled(render: Renderer, edges: list[str]) -> None:
    assert [line for line in render(GATED).splitlines() if "->" in line] == edges
