"""``ajc workflows``: submit, list, status, watch, cancel, retry and delete runs, driving ``ajc`` in subprocesses.

Runs only move on while a releaser and workers run: the ``engine`` fixture runs both in the test's process through
the Python API, with handlers for ``t:ok`` (returns the step name), ``t:fail`` (terminates the task) and
``t:gate`` (waits until the test opens the gate, so a run stays running as long as a test needs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

import asyncjobs
from asyncjobs import TaskState
from asyncjobs.cli.ajc.output import Output
from asyncjobs.testing import eventually
from asyncjobs.wiretime import WireTime
from asyncjobs_workflows import RunState, StepStatus, Workflow, WorkflowNotFound, WorkflowRun, Workflows
from asyncjobs_workflows.ajc_views import run_view
from asyncjobs_workflows.constants import RUNS_BUCKET
from asyncjobs_workflows.record import RunRecord
from tests.cli.conftest import AJC, RunAjc
from tests.core.conftest import FAST_RETRY

WAIT_S = 20.0
"""Seconds a run is given to end; they take well under a second."""
STEP_LINE = re.compile(
    r"^\[\d\d:\d\d:\d\d\] wf:(?P<run>[\w-]+):(?P<step>[\w-]+): type: \S+ tries: \d+ state: (?P<state>\w+)"
)

DIAMOND_JSON = {
    "name": "diamond",
    "steps": [
        {"name": "extract", "task_type": "t:ok"},
        {"name": "left", "task_type": "t:ok", "after": ["extract"]},
        {"name": "right", "task_type": "t:ok", "after": ["extract"]},
        {"name": "report", "task_type": "t:ok", "after": ["left", "right"]},
    ],
}
FAILING_YAML = """\
name: failing
steps:
  - {name: extract, task_type: "t:ok"}
  - {name: transform, task_type: "t:fail", after: [extract]}
  - {name: load, task_type: "t:ok", after: [transform]}
  - {name: cleanup, task_type: "t:ok", after: [transform], trigger: all_done}
"""
GATED_JSON = {
    "name": "gated",
    "steps": [
        {"name": "wait", "task_type": "t:gate"},
        {"name": "after", "task_type": "t:ok", "after": ["wait"]},
    ],
}


class Engine:
    """A worker and a releaser in the test's process; ``gate`` holds ``t:gate`` steps until it is set."""

    def __init__(self, client: asyncjobs.Client) -> None:
        self.client = client
        self.flows = Workflows(client, sweep_interval=1)
        self.gate = asyncio.Event()
        self.router = asyncjobs.Router()

        @self.router.handler("t:ok")
        async def ok(task: asyncjobs.Task) -> str:
            return task.id.split(":", 2)[2]

        @self.router.handler("t:fail")
        async def fail(task: asyncjobs.Task) -> None:
            raise asyncjobs.TerminateTask("staging bucket unreachable")

        @self.router.handler("t:gate")
        async def gate(task: asyncjobs.Task) -> str:
            await self.gate.wait()
            return "opened"


@pytest_asyncio.fixture
async def engine(nats_url: str) -> AsyncIterator[Engine]:
    async with await asyncjobs.connect(nats_url, retry_policy=FAST_RETRY, shutdown_grace=0.5) as client:
        running = Engine(client)
        jobs = [asyncio.create_task(client.run(running.router)), asyncio.create_task(running.flows.run())]
        try:
            yield running
        finally:
            running.gate.set()
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)


def write(tmp_path: Path, name: str, content: str | dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else orjson.dumps(content).decode())
    return str(path)


def final_states(out: str) -> dict[str, str]:
    """Each step's last state in ``watch`` lines."""
    states = {}
    for line in out.splitlines():
        match = STEP_LINE.match(line)
        if match:
            states[match["step"]] = match["state"]
    return states


async def test_submit_json_and_watch_until_complete(run_ajc: RunAjc, engine: Engine, tmp_path: Path) -> None:
    done = await run_ajc("wf", "submit", write(tmp_path, "d.json", DIAMOND_JSON), "--run-id", "d1", "--watch")
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert lines[0] == "Submitted workflow run d1"
    assert all(STEP_LINE.match(line) for line in lines[1:-1]), lines
    assert final_states(done.out) == dict.fromkeys(("extract", "left", "right", "report"), "complete")
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] d1: workflow: diamond state: complete steps: 4/4", lines[-1])
    run = await engine.flows.get("d1")
    assert run.state is RunState.COMPLETE
    assert run.results() == {"extract": "extract", "left": "left", "right": "right", "report": "report"}


async def test_submit_yaml_then_status_tree_json_and_pictures(run_ajc: RunAjc, engine: Engine, tmp_path: Path) -> None:
    done = await run_ajc("workflows", "submit", write(tmp_path, "f.yaml", FAILING_YAML), "--run-id", "f1")
    assert (done.code, done.out) == (0, "Submitted workflow run f1\n"), done.err
    run = await engine.flows.wait("f1", timeout=WAIT_S)
    assert run.state is RunState.FAILED

    view, as_json, mermaid, dot = await asyncio.gather(
        run_ajc("wf", "status", "f1"),
        run_ajc("wf", "view", "f1", "--json"),
        run_ajc("wf", "show", "f1", "--mermaid"),
        run_ajc("wf", "status", "f1", "--dot"),
    )
    assert view.code == 0, view.err
    lines = view.out.splitlines()
    assert lines[:2] == ["Workflow Run f1", ""]
    assert "             Workflow: failing" in lines
    assert "                State: failed" in lines
    assert "                Queue: DEFAULT" in lines
    assert "                Steps: 4 of 4 ended (2 complete, 1 failed, 1 unreachable)" in lines
    assert any(line.startswith("              Created: ") for line in lines)
    assert any(line.startswith("             Finished: ") for line in lines)
    tree = lines[lines.index("failing steps") + 1 :]
    assert tree[:4] == [
        "└── extract  complete",
        "    └── transform  terminated",
        "        ├── cleanup  complete  all_done",
        "        └── load  unreachable",
    ]
    assert tree[-1] == "Failed step transform: terminated after 1 try: staging bucket unreachable: terminate task"

    data = as_json.json()
    assert isinstance(data, dict)
    assert (data["id"], data["workflow"], data["state"], data["queue"]) == ("f1", "failing", "failed", "DEFAULT")
    steps = {step["name"]: step for step in data["steps"]}
    assert [step["name"] for step in data["steps"]] == ["extract", "transform", "load", "cleanup"]
    assert steps["extract"]["task_id"] == "wf:f1:extract"
    assert (steps["extract"]["state"], steps["extract"]["tries"], steps["extract"]["result"]) == (
        "complete",
        1,
        "extract",
    )
    assert steps["transform"]["state"] == "terminated" and steps["transform"]["label"] == "failed"
    assert steps["transform"]["error"] == run.steps["transform"].last_error
    assert steps["load"]["state"] == "unreachable"
    stored = await engine.client.get_task("wf:f1:cleanup")
    assert steps["cleanup"]["tries"] == stored.tries and stored.state is TaskState.COMPLETED

    assert (mermaid.code, mermaid.out) == (0, run.mermaid())
    assert (dot.code, dot.out) == (0, run.dot())


async def test_submit_from_stdin_with_json(run_ajc: RunAjc, engine: Engine) -> None:
    done = await run_ajc("wf", "submit", "-", "--json", input=orjson.dumps(DIAMOND_JSON).decode())
    assert done.code == 0, done.err
    data = done.json()
    assert isinstance(data, dict) and data["state"] == "running" and data["workflow"] == "diamond"
    run = await engine.flows.wait(data["id"], timeout=WAIT_S)
    assert run.state is RunState.COMPLETE


async def test_list_filters_and_json(run_ajc: RunAjc, engine: Engine, tmp_path: Path) -> None:
    empty = await run_ajc("wf", "ls")
    assert (empty.code, empty.out) == (0, "No Workflow Runs found\n"), empty.err
    await engine.flows.submit(Workflow.from_dict(DIAMOND_JSON), run_id="l1")
    await engine.flows.submit(Workflow.from_yaml(FAILING_YAML), run_id="l2")
    await engine.flows.wait("l1", timeout=WAIT_S)
    await engine.flows.wait("l2", timeout=WAIT_S)

    table, failed, newest, bad, failing = await asyncio.gather(
        run_ajc("wf", "list"),
        run_ajc("wf", "ls", "--state", "failed", "--json"),
        run_ajc("wf", "ls", "--limit", "1"),
        run_ajc("wf", "ls", "--state", "sleeping"),
        run_ajc("wf", "ls", "--workflow", "failing", "-j"),
    )
    assert table.code == 0, table.err
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in table.out.splitlines() if line.startswith("│")]
    assert rows[0] == ["2 Workflow Run(s)"]
    assert rows[1] == ["Run ID", "Workflow", "State", "Steps", "Created", "Finished"]
    assert [row[:4] for row in rows[2:]] == [["l1", "diamond", "complete", "4/4"], ["l2", "failing", "failed", "4/4"]]
    assert all(re.fullmatch(r"\d\d \w{3} \d\d \d\d:\d\d:\d\d UTC", cell) for row in rows[2:] for cell in row[4:])

    listed = failed.json()
    assert isinstance(listed, list) and [run["id"] for run in listed] == ["l2"]
    assert "1 of 2 Workflow Run(s)" in newest.out and "│ l2 " in newest.out and "│ l1 " not in newest.out
    assert bad.code == 2 and "sleeping" in bad.err
    of_workflow = failing.json()
    assert isinstance(of_workflow, list) and [(run["id"], run["steps_done"]) for run in of_workflow] == [("l2", 4)]


async def test_watch_of_a_failing_run_exits_1_with_json_lines(run_ajc: RunAjc, engine: Engine) -> None:
    run = await engine.flows.submit(Workflow.from_yaml(FAILING_YAML), run_id="w1")
    done = await run_ajc("wf", "watch", run.id, "--json")
    assert done.code == 1, done.err
    events = done.json_lines()
    assert all(isinstance(event, dict) for event in events)
    last: dict[str, Any] = {}
    for event in events[:-1]:
        assert isinstance(event, dict) and event["type"] == "step" and event["run_id"] == "w1"
        last[event["step"]] = event
    assert {name: event["state"] for name, event in last.items()} == {
        "extract": "complete",
        "transform": "terminated",
        "load": "unreachable",
        "cleanup": "complete",
    }
    assert last["transform"]["error"] == "staging bucket unreachable: terminate task"
    final = events[-1]
    assert isinstance(final, dict)
    assert (final["type"], final["state"], final["steps_done"], final["steps_total"]) == ("run", "failed", 4, 4)


async def test_cancel_retry_and_delete(run_ajc: RunAjc, engine: Engine) -> None:
    run = await engine.flows.submit(Workflow.from_dict(GATED_JSON), run_id="c1")
    await eventually(
        lambda: _state_is(engine, "wf:c1:wait", TaskState.ACTIVE), timeout=WAIT_S, message="the gated step to start"
    )

    refused, timed_out, not_yet = await asyncio.gather(
        run_ajc("wf", "cancel", run.id),
        run_ajc("wf", "watch", run.id, "--timeout", "0.3s"),
        run_ajc("wf", "delete", run.id, "-f"),
    )
    assert refused.code == 2 and "pass -f" in refused.err
    assert (await engine.flows.get(run.id)).state is RunState.RUNNING
    assert timed_out.code == 1 and "ajc: error: workflow run c1 had not ended after 300ms" in timed_out.err
    assert (not_yet.code, not_yet.err) == (
        1,
        "ajc: error: workflow run c1 is running: cancel it first, or wait for it to end\n",
    )

    cancelled = await run_ajc("wf", "cancel", run.id, "-f")
    assert (cancelled.code, cancelled.out) == (0, "Cancelled workflow run c1\n"), cancelled.err
    assert (await engine.flows.get(run.id)).state is RunState.CANCELLED
    watched = await run_ajc("wf", "watch", run.id)
    assert watched.code == 1 and "state: cancelled" in watched.out.splitlines()[-1]

    engine.gate.set()  # the running step finishes; retry runs what it left undone
    await eventually(lambda: _state_is(engine, "wf:c1:wait", TaskState.COMPLETED), timeout=WAIT_S)
    retried = await run_ajc("wf", "retry", run.id)
    assert retried.code == 0, retried.err
    assert "              Retries: 1" in retried.out.splitlines()
    finished = await engine.flows.wait(run.id, timeout=WAIT_S)
    assert (finished.state, finished.generation) == (RunState.COMPLETE, 1)
    again, refused = await asyncio.gather(run_ajc("wf", "retry", run.id), run_ajc("wf", "rm", run.id))
    assert again.code == 1
    assert again.err.startswith("ajc: error: workflow run c1 is complete: only failed or cancelled runs can be retried")

    assert refused.code == 2 and "pass -f" in refused.err
    await engine.flows.get(run.id)
    removed = await run_ajc("wf", "delete", run.id, "-f")
    assert (removed.code, removed.out) == (0, "Removed workflow run c1\n"), removed.err
    with pytest.raises(WorkflowNotFound):
        await engine.flows.get(run.id)
    with pytest.raises(asyncjobs.TaskNotFound):
        await engine.client.get_task("wf:c1:wait")
    gone = await run_ajc("wf", "delete", run.id, "-f")
    assert (gone.code, gone.err) == (
        1,
        "ajc: error: workflow run c1 not found: list the runs with 'ajc workflows list'\n",
    )


async def _state_is(engine: Engine, task_id: str, state: TaskState) -> bool:
    with contextlib.suppress(asyncjobs.TaskNotFound):
        return (await engine.client.get_task(task_id)).state is state
    return False


async def test_unknown_run_exits_1(run_ajc: RunAjc, nats_url: str) -> None:
    commands = [("status",), ("watch",), ("cancel", "-f"), ("retry",), ("delete", "-f")]
    results = await asyncio.gather(*(run_ajc("wf", *command, "nope") for command in commands), run_ajc("wf", "ls"))
    for command, done in zip(commands, results, strict=False):
        assert (done.code, done.out) == (1, ""), command
        assert done.err == "ajc: error: workflow run nope not found: list the runs with 'ajc workflows list'\n"
    assert (results[-1].code, results[-1].out) == (0, "No Workflow Runs found\n")
    async with await asyncjobs.connect(nats_url) as client:
        assert await client.admin.bucket_info(RUNS_BUCKET) is None  # reading runs created nothing
        await Workflows(client).submit(Workflow.from_dict(DIAMOND_JSON), run_id="known")
    with_runs = await run_ajc("wf", "status", "nope")  # runs are stored now: the library looks it up
    assert (with_runs.code, with_runs.err) == (1, results[0].err)


async def test_invalid_definitions_exit_2_with_the_librarys_message(run_ajc: RunAjc, tmp_path: Path) -> None:
    cycle = {
        "name": "w",
        "steps": [
            {"name": "a", "task_type": "t", "after": ["b"]},
            {"name": "b", "task_type": "t", "after": ["a"]},
        ],
    }
    unknown = {"name": "w", "steps": [{"name": "load", "task_type": "t", "after": ["transform"]}]}
    cases = [
        (write(tmp_path, "cycle.json", cycle), "workflow 'w' has a cycle: 'a' -> 'b' -> 'a'"),
        (write(tmp_path, "unknown.json", unknown), "step 'load' depends on unknown step 'transform'"),
        (
            write(tmp_path, "bad.yaml", "name: [unclosed\n"),
            "bad.yaml is not valid YAML: expected ',' or ']', but got '<stream end>' at line 2, column 1",
        ),
        (str(tmp_path / "missing.json"), "cannot read the workflow definition"),
        (write(tmp_path, "no-extension", '{"name": "w"'), "the workflow definition is not valid JSON"),
    ]
    results = await asyncio.gather(
        *(run_ajc("wf", "submit", path) for path, _ in cases),
        run_ajc("wf", "submit", write(tmp_path, "ok.json", DIAMOND_JSON), "--run-id", "a:b"),
        run_ajc("wf", "watch", "x", "--timeout", "soon"),
        run_ajc("wf", "submit", write(tmp_path, "ok.json", DIAMOND_JSON), "--timeout", "10s"),
    )
    *submitted, bad_id, bad_timeout, without_watch = results
    for (path, message), done in zip(cases, submitted, strict=True):
        assert done.code == 2 and done.err.startswith("ajc: error: ") and message in done.err, (path, done.err)
        assert len(done.err.splitlines()) == 1 and "Traceback" not in done.err
    assert bad_id.code == 2 and "run id 'a:b' is invalid" in bad_id.err
    assert bad_timeout.code == 2 and "invalid duration 'soon'" in bad_timeout.err
    assert without_watch.code == 2 and "--timeout applies to --watch" in without_watch.err


async def test_yaml_without_pyyaml_names_the_extra(run_ajc: RunAjc, tmp_path: Path) -> None:
    fake = tmp_path / "noyaml"
    fake.mkdir()
    (fake / "yaml.py").write_text("raise ImportError(\"No module named 'yaml'\")\n")
    done = await run_ajc("wf", "submit", write(tmp_path, "f.yaml", FAILING_YAML), env={"PYTHONPATH": str(fake)})
    assert done.code == 2
    assert "pip install 'asyncjobs[workflows-yaml]'" in done.err and "Traceback" not in done.err


async def on_terminal(config_home: Path, *args: str, typed: str = "") -> tuple[int, str]:
    """Run ``ajc ARGS...`` on a pseudo-terminal 80 columns wide, with ``typed`` as keyboard input; returns its
    exit status and what it showed, without escape sequences."""
    primary, secondary = pty.openpty()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("NATS_", "AJC_"))}
    env.update({"XDG_CONFIG_HOME": str(config_home), "COLUMNS": "80", "TERM": "xterm-256color"})
    proc = await asyncio.create_subprocess_exec(
        str(AJC), *args, stdin=secondary, stdout=secondary, stderr=secondary, env=env
    )
    os.close(secondary)
    if typed:
        os.write(primary, typed.encode())  # kept by the terminal until the command reads it
    os.set_blocking(primary, False)
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the command exited and closed the terminal
            chunk = b""
        received.put_nowait(chunk)
        if not chunk:
            loop.remove_reader(primary)

    loop.add_reader(primary, readable)
    output = bytearray()
    try:
        async with asyncio.timeout(WAIT_S):
            while chunk := await received.get():
                output += chunk
            code = await proc.wait()
    finally:
        loop.remove_reader(primary)
        os.close(primary)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return code, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))


async def test_on_a_terminal_watch_draws_the_tree_and_delete_asks(config_home: Path, engine: Engine) -> None:
    run = await engine.flows.submit(Workflow.from_dict(DIAMOND_JSON), run_id="t1")
    code, text = await on_terminal(config_home, "wf", "watch", run.id)
    assert code == 0, text
    assert "Workflow Run t1" in text and "diamond steps" in text
    for step in ("extract", "left", "right", "report"):
        assert re.search(rf"{step}  complete", text), text

    code, text = await on_terminal(config_home, "wf", "delete", run.id, typed="n\n")
    assert code == 1 and "Really delete workflow run t1 and its step tasks [y/N]: " in text, text
    await engine.flows.get(run.id)  # still there
    code, text = await on_terminal(config_home, "wf", "delete", run.id, typed="y\n")
    assert code == 0 and "Removed workflow run t1" in text
    with pytest.raises(WorkflowNotFound):
        await engine.flows.get(run.id)


async def test_go_ajc_sees_the_steps_as_tasks(
    run_ajc: RunAjc, run_go_ajc: RunAjc, engine: Engine, tmp_path: Path
) -> None:
    done = await run_ajc("wf", "submit", write(tmp_path, "d.json", DIAMOND_JSON), "--run-id", "g1", "--watch")
    assert done.code == 0, done.err
    ours = (await run_ajc("wf", "status", "g1", "-j")).json()
    assert isinstance(ours, dict)
    views = await asyncio.gather(*(run_go_ajc("tasks", "view", step["task_id"], "-j") for step in ours["steps"]))
    for step, theirs in zip(ours["steps"], views, strict=True):
        assert theirs.code == 0, theirs.err
        task = theirs.json()
        assert isinstance(task, dict)
        assert (task["id"], task["type"], task["state"], task["tries"]) == (
            step["task_id"],
            step["task_type"],
            step["state"],
            step["tries"],
        )
    # Go's ajc erases a step's task: ours shows the step as erased.
    removed = await run_go_ajc("tasks", "delete", "wf:g1:report", "-f")
    assert removed.code == 0, removed.err
    view = await run_ajc("wf", "status", "g1")
    assert "    │   └── report  erased  after left, right" in view.out.splitlines()
    assert "                Steps: 3 of 4 ended (3 complete, 1 erased)" in view.out.splitlines()


def _snapshot(workflow: Workflow, states: dict[str, StepStatus]) -> WorkflowRun:
    record = RunRecord(id="r", workflow=workflow.name, queue="DEFAULT", state=RunState.RUNNING, created=WireTime.now())
    return WorkflowRun(record, workflow, states)


def test_tree_continues_deep_chains_and_names_shared_steps_once(capsys: pytest.CaptureFixture[str]) -> None:
    wf = Workflow("chain")
    for n in range(1, 16):
        wf.step(f"step-{n:02d}", "t", after=[f"step-{n - 1:02d}"] if n > 1 else ())
    wf.step("side", "t", after=["step-01", "step-12"])
    steps = {name: StepStatus(name, f"wf:r:{name}", TaskState.BLOCKED) for name in wf.steps}
    steps["step-01"] = StepStatus("step-01", "wf:r:step-01", TaskState.ACTIVE, tries=2)
    del steps["step-15"]  # its task was erased
    run_view(_snapshot(wf, steps), Output())
    lines = capsys.readouterr().out.splitlines()
    tree = lines[lines.index("chain steps") + 1 :]
    assert tree[0] == "├── step-01  active  2 tries"
    assert f"{'    ' * 10}└── step-11  blocked  (continued below)" in [line.replace("│", " ") for line in tree]
    assert "│   └── side  blocked  after step-01, step-12" in tree
    continued = tree[tree.index("└── step-11  blocked  (continued)") :]
    assert continued == [
        "└── step-11  blocked  (continued)",
        "    └── step-12  blocked",
        "        ├── side  blocked  (shown above)",
        "        └── step-13  blocked",
        "            └── step-14  blocked",
        "                └── step-15  erased",
    ]
    assert max(len(line) for line in tree) <= 80


def test_tree_shows_skipped_and_cancelled_steps(capsys: pytest.CaptureFixture[str]) -> None:
    wf = Workflow("w").step("a", "t").step("b", "t", after="a").step("c", "t", after="a", trigger="all_done")
    steps = {
        "a": StepStatus("a", "wf:r:a", TaskState.COMPLETED, tries=1),
        "b": StepStatus("b", "wf:r:b", "skipped", last_error="workflow step skipped: no rows"),
        "c": StepStatus("c", "wf:r:c", TaskState.TERMINATED, last_error="workflow run cancelled", cancelled=True),
    }
    run_view(_snapshot(wf, steps), Output())
    out = capsys.readouterr().out
    assert out.endswith("w steps\n└── a  complete\n    ├── b  skipped\n    └── c  cancelled  all_done\n")
    assert "Steps: 3 of 3 ended (1 complete, 1 skipped, 1 cancelled)" in out
