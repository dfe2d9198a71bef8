"""Workflow definitions: building, validation messages, graph queries and the dict/JSON/YAML forms."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from datetime import timedelta
from typing import Any

import orjson
import pytest

from asyncjobs import AsyncJobsError
from asyncjobs_workflows import InvalidWorkflow, Step, Trigger, Workflow, WorkflowError, WorkflowNotFound
from asyncjobs_workflows.conditions import Condition
from asyncjobs_workflows.definition import MAX_PARENTS, MAX_STEPS

HAS_YAML = importlib.util.find_spec("yaml") is not None


def chain(n: int) -> Workflow:
    wf = Workflow("chain")
    for i in range(n):
        wf.step(f"s{i}", "t", after=[f"s{i - 1}"] if i else ())
    return wf


def diamond() -> Workflow:
    return (
        Workflow("etl")
        .step("extract", "etl:extract")
        .step("left", "etl:left", after="extract")
        .step("right", "etl:right", after=["extract"])
        .step("report", "etl:report", after=["right", "left"], trigger="all_done")
    )


def fan_out(n: int) -> Workflow:
    wf = Workflow("fan").step("root", "t")
    for i in range(n):
        wf.step(f"leaf{i:03}", "t", after="root")
    return wf


def fan_in(n: int) -> Workflow:
    wf = Workflow("fanin")
    for i in range(n):
        wf.step(f"src{i:03}", "t")
    return wf.step("sink", "t", after=[f"src{i:03}" for i in range(n)])


# -- errors ---------------------------------------------------------------------------------------------------------


def test_error_tree() -> None:
    assert issubclass(WorkflowError, AsyncJobsError)
    assert issubclass(InvalidWorkflow, WorkflowError) and issubclass(InvalidWorkflow, ValueError)
    assert issubclass(WorkflowNotFound, WorkflowError) and issubclass(WorkflowNotFound, LookupError)


# -- valid shapes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workflow", "roots", "order"),
    [
        (chain(3), ("s0",), ("s0", "s1", "s2")),
        (diamond(), ("extract",), ("extract", "left", "right", "report")),
        (fan_out(100), ("root",), ("root", *(f"leaf{i:03}" for i in range(100)))),
        (fan_in(100), tuple(f"src{i:03}" for i in range(100)), (*(f"src{i:03}" for i in range(100)), "sink")),
        (Workflow("one").step("only", "t"), ("only",), ("only",)),
        # Defined child first: parents may come later; the order is topological, ties by name.
        (Workflow("fwd").step("b", "t", after="a").step("a", "t"), ("a",), ("a", "b")),
    ],
    ids=["chain", "diamond", "fan-out-100", "fan-in-100", "single", "forward-reference"],
)
def test_valid_shapes(workflow: Workflow, roots: tuple[str, ...], order: tuple[str, ...]) -> None:
    workflow.validate()
    assert workflow.roots() == roots
    assert workflow.topological_order() == order


def test_graph_queries() -> None:
    wf = diamond().step("archive", "t", after="report")
    assert wf.parents("report") == ("right", "left")
    assert wf.children("extract") == ("left", "right")
    assert wf.children("archive") == ()
    assert wf.descendants("left") == ("report", "archive")
    assert wf.descendants("extract") == ("left", "right", "report", "archive")
    with pytest.raises(KeyError, match="workflow 'etl' has no step 'nope'"):
        wf.children("nope")


def test_step_fields_and_defaults() -> None:
    wf = (
        Workflow("w")
        .step("a", "t")
        .step("b", "t:b", {"x": 1}, after="a", trigger=Trigger.ALL_DONE, max_tries=3, deadline=timedelta(minutes=1))
        .step("c", "t", b"\x00raw", after=("a", "b"), deadline=2, load_dependencies=True)
    )
    assert wf.steps["a"] == Step("a", "t")
    assert wf.steps["b"] == Step("b", "t:b", b'{"x":1}', ("a",), Trigger.ALL_DONE, 3, 60.0, False)
    assert wf.steps["c"] == Step("c", "t", b"\x00raw", ("a", "b"), Trigger.ALL_SUCCESS, None, 2.0, True)
    assert list(wf.steps) == ["a", "b", "c"]
    assert isinstance(wf.steps["c"].deadline, float)


def test_steps_is_read_only() -> None:
    wf = diamond()
    with pytest.raises(TypeError):
        wf.steps["x"] = Step("x", "t")  # type: ignore[index]


# -- validation errors ----------------------------------------------------------------------------------------------


def _add(wf: Workflow, *args: Any, **kwargs: Any) -> None:
    wf.step(*args, **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("a", "t"), {}, "workflow 'w': step 'a' is defined twice: give each step a unique name"),
        (("b", "t"), {"after": "b"}, "workflow 'w': step 'b' depends on itself: remove 'b' from after="),
        (("b", "t"), {"after": ["a", "a"]}, "step 'b' names 'a' twice in after=: name each step once"),
        (("b c", "t"), {}, r"step 'b c': step name is invalid: 'b c' must match \^\[a-zA-Z0-9_:-\]\+\$"),
        (("", "t"), {}, "step '': step name is invalid"),
        (("x" * 129, "t"), {}, "step name is 129 characters, over the limit of 128"),
        ((7, "t"), {}, "step 7: step name must be a string"),
        (("b", "bad type"), {}, "step 'b': task type is invalid: 'bad type' must match"),
        (("b", "t" * 256), {}, "task type is 256 characters, over the limit of 255"),
        (("b", "t"), {"after": ["no way"]}, "parent step name is invalid: 'no way'"),
        (("b", "t"), {"after": 5}, "after= must be a list of step names, not int"),
        (("b", "t"), {"trigger": "any"}, "step 'b': trigger 'any' is not known: use 'all_success' or 'all_done'"),
        (("b", "t"), {"max_tries": 0}, "max_tries must be a whole number of at least 1, or None .* not 0"),
        (("b", "t"), {"max_tries": 2.5}, "max_tries must be a whole number .* not 2.5"),
        (("b", "t"), {"max_tries": True}, "max_tries must be a whole number .* not True"),
        (("b", "t"), {"deadline": "60"}, "deadline must be seconds as a number or a timedelta, or None, not str"),
        (("b", "t"), {"deadline": 0}, "deadline must be a finite number of seconds above 0, not 0"),
        (("b", "t"), {"deadline": -1.5}, "deadline must be a finite number of seconds above 0, not -1.5"),
        (("b", "t"), {"deadline": float("inf")}, "deadline must be a finite number of seconds above 0, not inf"),
        (("b", "t"), {"deadline": True}, "deadline must be seconds as a number .* not bool"),
        (("b", "t"), {"load_dependencies": 1}, "load_dependencies must be True or False, not 1"),
        (("b", "t", float("nan")), {}, "step 'b': task payload"),
        (("b", "t", object()), {}, "step 'b': task payload"),
    ],
)
def test_step_rejects_at_once(args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    wf = Workflow("w").step("a", "t")
    with pytest.raises(InvalidWorkflow, match=message):
        _add(wf, *args, **kwargs)
    assert list(wf.steps) == ["a"], "a refused step is not added"


def test_too_many_parents() -> None:
    wf = Workflow("w")
    with pytest.raises(InvalidWorkflow, match=f"waits for {MAX_PARENTS + 1} steps, over the limit of {MAX_PARENTS}"):
        wf.step("sink", "t", after=[f"p{i}" for i in range(MAX_PARENTS + 1)])


def test_too_many_steps() -> None:
    wf = Workflow("big")
    for i in range(MAX_STEPS):
        wf.step(f"s{i}", "t")
    with pytest.raises(InvalidWorkflow, match=f"already has {MAX_STEPS} steps, the limit: split it"):
        wf.step("one-more", "t")
    wf.validate()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad name", "workflow name is invalid: 'bad name' must match .*: pick another workflow name"),
        ("w" * 129, "workflow name is 129 characters, over the limit of 128"),
        (None, "workflow name must be a string"),
    ],
)
def test_workflow_name(name: Any, message: str) -> None:
    with pytest.raises(InvalidWorkflow, match=message):
        Workflow(name)


@pytest.mark.parametrize(
    ("workflow", "message"),
    [
        (Workflow("empty"), "workflow 'empty' has no steps: add at least one with step()"),
        (
            Workflow("etl").step("extract", "t").step("report", "t", after=["extract", "fanin"]),
            "workflow 'etl': step 'report' depends on unknown step 'fanin': "
            "add a step named 'fanin' or remove it from after=",
        ),
        (
            Workflow("loop").step("a", "t", after="c").step("b", "t", after="a").step("c", "t", after="b"),
            "workflow 'loop' has a cycle: 'a' -> 'b' -> 'c' -> 'a' (each waits for the one before it): "
            "remove one of these dependencies from after=",
        ),
        (
            Workflow("pair").step("root", "t").step("x", "t", after=["root", "y"]).step("y", "t", after="x"),
            "workflow 'pair' has a cycle: 'x' -> 'y' -> 'x'",
        ),
    ],
    ids=["empty", "unknown-parent", "cycle-3", "cycle-2-with-root"],
)
def test_validate_errors(workflow: Workflow, message: str) -> None:
    with pytest.raises(InvalidWorkflow) as info:
        workflow.validate()
    assert str(info.value).startswith(message)
    with pytest.raises(InvalidWorkflow):
        workflow.topological_order()


def test_adding_a_step_revalidates() -> None:
    wf = Workflow("w").step("a", "t")
    assert wf.topological_order() == ("a",)
    wf.step("b", "t", after="missing")
    with pytest.raises(InvalidWorkflow, match="unknown step 'missing'"):
        wf.validate()


# -- dict, JSON and YAML --------------------------------------------------------------------------------------------


FULL = {
    "name": "etl",
    "steps": [
        {"name": "extract", "task_type": "etl:extract", "payload": {"source": "s3://b"}, "max_tries": 5},
        {"name": "raw", "task_type": "etl:raw", "payload_base64": "AP8=", "after": ["extract"]},
        {
            "name": "report",
            "task_type": "etl:report",
            "after": ["raw", "extract"],
            "trigger": "all_done",
            "deadline": 30.5,
            "load_dependencies": True,
        },
    ],
}


@pytest.mark.parametrize(
    "workflow", [diamond(), fan_out(3), Workflow.from_dict(FULL), Workflow("p").step("a", "t", b'{ "spaced": 1 }')]
)
def test_dict_and_json_round_trip(workflow: Workflow) -> None:
    data = workflow.to_dict()
    assert Workflow.from_dict(data) == workflow
    assert Workflow.from_json(orjson.dumps(data)) == workflow
    assert Workflow.from_json(orjson.dumps(data).decode()).to_dict() == data


def test_full_dict_fields() -> None:
    wf = Workflow.from_dict(FULL)
    assert wf.to_dict() == FULL
    assert wf.steps["extract"].payload == b'{"source":"s3://b"}'
    assert wf.steps["raw"].payload == b"\x00\xff"
    assert wf.steps["report"] == Step(
        "report", "etl:report", None, ("raw", "extract"), Trigger.ALL_DONE, None, 30.5, True
    )


def test_only_name_and_task_type_are_required() -> None:
    wf = Workflow.from_dict({"name": "w", "steps": [{"name": "a", "task_type": "t"}]})
    assert wf.steps["a"] == Step("a", "t")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "a workflow definition must be a mapping, not list"),
        ({"steps": []}, "a workflow definition needs a 'name': add one"),
        ({"name": "w"}, "workflow 'w' has no steps"),
        ({"name": "w", "steps": {}}, "workflow 'w': 'steps' must be a list of steps, not dict"),
        ({"name": "w", "steps": ["a"]}, "workflow 'w': step #1 must be a mapping with a 'name' and a 'task_type'"),
        ({"name": "w", "steps": [{"name": "a"}]}, "workflow 'w': step #1 has no 'task_type': add one"),
        ({"name": "w", "steps": [{"task_type": "t"}]}, "workflow 'w': step #1 has no 'name': add one"),
        (
            {"name": "w", "steps": [{"name": "a", "task_type": "t", "depends_on": ["x"]}]},
            "workflow 'w': step #1 has unknown key\\(s\\) 'depends_on': use only name, task_type, payload,",
        ),
        ({"name": "w", "version": 2, "steps": []}, "workflow 'w' has unknown key\\(s\\) 'version': use only name"),
        (
            {"name": "w", "steps": [{"name": "a", "task_type": "t", "payload": 1, "payload_base64": "AA=="}]},
            "step 'a' has both 'payload' and 'payload_base64': keep one",
        ),
        (
            {"name": "w", "steps": [{"name": "a", "task_type": "t", "payload_base64": "!!"}]},
            "step 'a': 'payload_base64' must be a standard base64 string",
        ),
        (
            {"name": "w", "steps": [{"name": "a", "task_type": "t", "payload_base64": 5}]},
            "step 'a': 'payload_base64' must be a standard base64 string",
        ),
        (
            {"name": "w", "steps": [{"name": "a", "task_type": "t", "after": "a"}]},
            "step 'a' depends on itself",
        ),
        (
            {"name": "w", "steps": [{"name": "a", "task_type": "t", "after": ["ghost"]}]},
            "step 'a' depends on unknown step 'ghost'",
        ),
    ],
)
def test_from_dict_errors(data: Any, message: str) -> None:
    with pytest.raises(InvalidWorkflow, match=message):
        Workflow.from_dict(data)


def test_from_json_errors() -> None:
    with pytest.raises(InvalidWorkflow, match="the workflow definition is not valid JSON"):
        Workflow.from_json("{")
    with pytest.raises(InvalidWorkflow, match="must be a mapping, not list"):
        Workflow.from_json(b"[]")


YAML_TEXT = """
name: etl
steps:
  - name: extract
    task_type: etl:extract
    payload: {source: "s3://b"}
    max_tries: 5
  - name: raw
    task_type: etl:raw
    payload_base64: AP8=
    after: [extract]
  - name: report
    task_type: etl:report
    after: [raw, extract]
    trigger: all_done
    deadline: 30.5
    load_dependencies: true
"""


@pytest.mark.skipif(not HAS_YAML, reason="PyYAML is not installed (the workflows-yaml extra)")
def test_from_yaml() -> None:
    assert Workflow.from_yaml(YAML_TEXT).to_dict() == FULL
    with pytest.raises(InvalidWorkflow, match="not valid YAML"):
        Workflow.from_yaml("name: [")


def test_from_yaml_without_pyyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` raise ImportError
    with pytest.raises(InvalidWorkflow, match=r"needs PyYAML: pip install 'asyncjobs\[workflows-yaml\]'"):
        Workflow.from_yaml(YAML_TEXT)


# -- conditions (when=) ---------------------------------------------------------------------------------------------

OK = Condition("check", "status", equals="ok")
HAS_ROWS = Condition("load", "rows.0", exists=True)


def gated(**kwargs: Any) -> Workflow:
    return Workflow("w").step("check", "t").step("load", "t").step("b", "t", after=["check", "load"], **kwargs)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (None, ()),
        ([], ()),
        (OK, (OK,)),
        ({"step": "check", "path": "status", "equals": "ok"}, (OK,)),
        ([OK, {"step": "load", "path": "rows.0", "exists": True}], (OK, HAS_ROWS)),
        ((HAS_ROWS, OK), (HAS_ROWS, OK)),
    ],
    ids=["none", "empty", "condition", "mapping", "list", "tuple"],
)
def test_step_when(when: Any, expected: tuple[Condition, ...]) -> None:
    step = gated(when=when).steps["b"]
    assert step.when == expected
    assert step == Step("b", "t", None, ("check", "load"), Trigger.ALL_SUCCESS, None, None, False, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"when": Condition("other", equals=1)},
            "^workflow 'w': step 'b': its condition tests step 'other', which is not in after=: "
            "add it to after= or test a parent$",
        ),
        ({"when": [OK, {"step": "b", "exists": True}]}, "its condition tests step 'b', which is not in after="),
        ({"when": {"step": "check"}}, "^workflow 'w': step 'b': condition needs exactly one operator of equals,"),
        ({"when": [OK, {"step": "check", "in": 1}]}, "step 'b': condition #2: 'in' must be a list of JSON values"),
        ({"when": "check"}, "step 'b': when= must be a Condition, a mapping .* not str"),
    ],
)
def test_step_when_rejects_at_once(kwargs: dict[str, Any], message: str) -> None:
    wf = Workflow("w").step("check", "t").step("load", "t")
    with pytest.raises(InvalidWorkflow, match=message):
        wf.step("b", "t", after=["check", "load"], **kwargs)
    assert list(wf.steps) == ["check", "load"], "a refused step is not added"


def test_condition_on_a_root_step() -> None:
    with pytest.raises(InvalidWorkflow, match="step 'a': its condition tests step 'check', which is not in after="):
        Workflow("w").step("a", "t", when=OK)


WHEN = {
    "name": "gate",
    "steps": [
        {"name": "check", "task_type": "t:check"},
        {"name": "load", "task_type": "t:load"},
        {"name": "one", "task_type": "t", "after": ["check"], "when": {"step": "check", "path": "ok", "equals": True}},
        {
            "name": "all",
            "task_type": "t",
            "after": ["check", "load"],
            "trigger": "all_done",
            "when": [
                {"step": "check", "path": "level", "in": ["warn", "error"]},
                {"step": "load", "path": "rows.0.id", "not_equals": None},
                {"step": "load", "exists": False},
            ],
        },
    ],
}

WHEN_YAML = """
name: gate
steps:
  - {name: check, task_type: "t:check"}
  - {name: load, task_type: "t:load"}
  - name: one
    task_type: t
    after: [check]
    when: {step: check, path: ok, equals: true}
  - name: all
    task_type: t
    after: [check, load]
    trigger: all_done
    when:
      - step: check
        path: level
        in: [warn, error]
      - {step: load, path: rows.0.id, not_equals: null}
      - {step: load, exists: false}
"""


def test_when_from_dict_and_back() -> None:
    wf = Workflow.from_dict(WHEN)
    assert wf.steps["one"].when == (Condition("check", "ok", equals=True),)
    assert wf.steps["all"].when == (
        Condition("check", "level", in_=["warn", "error"]),
        Condition("load", "rows.0.id", not_equals=None),
        Condition("load", exists=False),
    )
    assert wf.to_dict() == WHEN
    assert Workflow.from_dict(wf.to_dict()) == wf
    assert Workflow.from_json(orjson.dumps(wf.to_dict())) == wf


def test_when_in_python_round_trips() -> None:
    wf = gated(when=[OK, HAS_ROWS]).step("c", "t", after="b", when={"step": "b", "equals": 1.5})
    assert wf.to_dict()["steps"][2]["when"] == [OK.to_dict(), HAS_ROWS.to_dict()]
    assert wf.to_dict()["steps"][3]["when"] == {"step": "b", "equals": 1.5}
    assert Workflow.from_dict(wf.to_dict()) == wf
    assert Workflow.from_dict(wf.to_dict()) != gated(when=OK).step(
        "c", "t", after="b", when={"step": "b", "equals": 1.5}
    )


@pytest.mark.skipif(not HAS_YAML, reason="PyYAML is not installed (the workflows-yaml extra)")
def test_when_from_yaml() -> None:
    assert Workflow.from_yaml(WHEN_YAML) == Workflow.from_dict(WHEN)


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ({"step": "check", "equals": 1, "path": "a..b"}, "workflow 'w': step 'b': condition: path must be a string"),
        ([{"step": "check", "equal": 1}], "workflow 'w': step 'b': condition #1 has unknown key\\(s\\) 'equal'"),
        ("check", "workflow 'w': step 'b': when= must be a Condition, a mapping"),
        ({"step": "ghost", "exists": True}, "step 'b': its condition tests step 'ghost', which is not in after="),
    ],
)
def test_when_from_dict_errors(when: Any, message: str) -> None:
    data = {"name": "w", "steps": [{"name": "check", "task_type": "t"}, {"name": "b", "task_type": "t"}]}
    data["steps"][1].update(after=["check"], when=when)  # type: ignore[index]
    with pytest.raises(InvalidWorkflow, match=message):
        Workflow.from_dict(data)


# -- import isolation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "import asyncjobs, sys; assert 'networkx' not in sys.modules and 'asyncjobs_workflows' not in sys.modules",
        "import asyncjobs_workflows, sys; assert 'networkx' not in sys.modules",
    ],
    ids=["core-alone", "workflows-lazy-networkx"],
)
def test_import_isolation(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
