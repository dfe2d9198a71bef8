"""docs/workflows.md and examples/workflows_demo.py stay true.

- The page's ``myapp/etl.py`` block is written out as the package ``myapp`` (with a stand-in ``myapp.warehouse``,
  which the page says stands for the reader's code), so its blocks marked ``<!-- doctest -->`` import it as a reader
  would; they run in order with one namespace, so every output quoted there is what the code prints.
- The page's YAML file is the workflow its ``nightly_etl("2026-03-01")`` builds; every Python block compiles; the
  metrics table names the metrics the package exports.
- The page's pipeline runs against a real nats-server with a worker and a releaser: completing, failing for good
  (the cascade and the clean-up the page describes, then a retry), and skipping its report.
- The demo runs as a program on its embedded server within a bounded time and prints what the page says; its
  ``run_demo`` also runs twice on one server.
"""

from __future__ import annotations

import ast
import asyncio
import doctest
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from asyncjobs.metrics import METRICS
from asyncjobs.testing import eventually
from asyncjobs_workflows import Workflow, WorkflowRun, Workflows
from examples.workflows_demo import FLAKY_STEP, run_demo

from .conftest import ClientFactory, releasing, running

ROOT: Final = Path(__file__).resolve().parents[2]
PAGE: Final = ROOT / "docs" / "workflows.md"
TEXT: Final = PAGE.read_text()
DEMO: Final = ROOT / "examples" / "workflows_demo.py"
DOCTEST_MARKER: Final = "<!-- doctest -->"
BLOCK_RE: Final = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
DEMO_TIMEOUT_S: Final = 60.0
RUN_ID: Final = "nightly-etl-2026-03-01"

# What the page's myapp.warehouse stands for: no I/O; partitions in FAILING always fail, those in DELAY_S take longer.
WAREHOUSE: Final = """\
import asyncio

FAILING: set[int] = set()
DELAY_S: dict[int, float] = {}
ROWS_PER_PARTITION: list[int] = [1000, 1250, 1500, 1750]
CALLS: list[str] = []


async def extract(day, partitions):
    CALLS.append("extract")
    return partitions


async def transform(day, partition):
    CALLS.append(f"transform-{partition}")
    await asyncio.sleep(DELAY_S.get(partition, 0))
    if partition in FAILING:
        raise ConnectionError("staging bucket unreachable")
    return ROWS_PER_PARTITION[partition]


async def load(table, partitions):
    CALLS.append("load")
    return sum(partition["rows"] for partition in partitions)


async def send_report(to, rows):
    CALLS.append("report")


async def remove_staging(day):
    CALLS.append("cleanup")
"""


def _blocks(language: str | None = None) -> list[tuple[str, str]]:
    """(language, text) of each fenced block, in page order."""
    return [(m.group(1), m.group(2)) for m in BLOCK_RE.finditer(TEXT) if language is None or m.group(1) == language]


def _doctest_blocks() -> list[str]:
    blocks = []
    for match in BLOCK_RE.finditer(TEXT):
        preceding = TEXT[: match.start()].rstrip().splitlines()[-1]
        if preceding == DOCTEST_MARKER:
            blocks.append(match.group(2))
    return blocks


def _file_block(first_line: str) -> str:
    [block] = [text for _, text in _blocks() if text.startswith(first_line)]
    return block


def _forget_myapp() -> None:
    for name in [name for name in sys.modules if name == "myapp" or name.startswith("myapp.")]:
        del sys.modules[name]


@pytest.fixture
def myapp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[types.ModuleType, types.ModuleType]]:
    """The page's ``myapp.etl`` and the stand-in ``myapp.warehouse``, importable for the test's duration."""
    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "warehouse.py").write_text(WAREHOUSE)
    (package / "etl.py").write_text(_file_block("# myapp/etl.py"))
    _forget_myapp()  # another test's myapp (docs/deploying.md has one) must not stand in for ours
    monkeypatch.syspath_prepend(str(tmp_path))
    import myapp.etl
    import myapp.warehouse

    yield myapp.etl, myapp.warehouse
    _forget_myapp()


# ---- the page, read ------------------------------------------------------------------------------------------


def test_page_has_doctest_blocks() -> None:
    assert len(_doctest_blocks()) >= 6


@pytest.mark.usefixtures("myapp")
def test_doctest_blocks_print_what_the_page_says() -> None:
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    namespace: dict[str, object] = {}
    for number, block in enumerate(_doctest_blocks(), start=1):
        test = parser.get_doctest(block, namespace, f"workflows.md block {number}", str(PAGE), 0)
        runner.run(test, clear_globs=False)
        namespace = test.globs  # a DocTest runs in a copy: carry its names on to the next block
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in docs/workflows.md failed (above)"


def test_yaml_file_is_the_python_workflow(myapp: tuple[types.ModuleType, types.ModuleType]) -> None:
    etl, _ = myapp
    [(_, yaml_text)] = _blocks("yaml")
    assert Workflow.from_yaml(yaml_text) == etl.nightly_etl("2026-03-01")


def test_python_blocks_compile() -> None:
    blocks = [text for language, text in _blocks("python")]
    assert len(blocks) >= 6
    for block in blocks:
        compile(block, str(PAGE), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_metrics_table_names_the_exported_metrics() -> None:
    table = TEXT[TEXT.index("| Metric | Type | Labels | Meaning |") :].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `(choria_asyncjobs_workflow_\w+)` \| (\w+) \|", table, re.MULTILINE)
    exported = {family.name: family.type for family in METRICS.describe() if "_workflow_" in family.name}
    shown = {name.removesuffix("_total"): kind for name, kind in rows}
    assert shown == exported


# ---- the page's pipeline, on a server ------------------------------------------------------------------------


async def test_page_pipeline_completes(
    myapp: tuple[types.ModuleType, types.ModuleType], make_client: ClientFactory
) -> None:
    etl, warehouse = myapp
    client = await make_client(queue="ETL")
    flows = Workflows(client)
    async with running(client, etl.router), releasing(flows):
        run = await flows.submit(etl.nightly_etl("2026-03-01"), run_id=RUN_ID)
        assert (run.id, run.state, run.queue) == (RUN_ID, "running", "ETL")
        finished = await flows.wait(run.id, timeout=30)
        again = await flows.submit(etl.nightly_etl("2026-03-01"), run_id=RUN_ID)

    assert finished.state == "complete"
    assert finished.results()["load"] == {"rows": 5500}
    assert finished.results()["report"] == "sent"
    assert (again.id, again.state) == (RUN_ID, "complete")  # the same run, not a second one
    assert sorted(warehouse.CALLS) == sorted(
        ["extract", *(f"transform-{p}" for p in range(4)), "load", "report", "cleanup"]
    )


async def test_page_pipeline_fails_then_retries(
    myapp: tuple[types.ModuleType, types.ModuleType], make_client: ClientFactory
) -> None:
    """transform-2 fails for good while transform-3 still runs: load and report at once, cleanup after transform-3."""
    etl, warehouse = myapp
    warehouse.FAILING.add(2)
    warehouse.DELAY_S[3] = 2.0
    client = await make_client(queue="ETL")
    flows = Workflows(client)
    async with running(client, etl.router), releasing(flows):
        run = await flows.submit(etl.nightly_etl("2026-03-01"), run_id=RUN_ID)

        async def cascaded() -> WorkflowRun | None:
            current = await flows.get(run.id)
            return current if current.steps["report"].label == "unreachable" else None

        during = await eventually(cascaded, timeout=10)
        failed = await flows.wait(run.id, timeout=30)

        warehouse.FAILING.clear()
        await flows.retry(run.id)
        retried = await flows.wait(run.id, timeout=30)

    assert during.state == "running"
    assert during.steps["transform-3"].label == "active"
    assert during.steps["cleanup"].label == "pending"  # it also waits for transform-3
    assert during.steps["load"].last_error == f"task dependencies failed: task wf:{RUN_ID}:transform-2 is expired"
    assert during.steps["report"].last_error == f"task dependencies failed: task wf:{RUN_ID}:load is unreachable"

    assert failed.state == "failed"
    assert failed.labels() == {
        "extract": "complete",
        "transform-0": "complete",
        "transform-1": "complete",
        "transform-2": "failed",
        "transform-3": "complete",
        "load": "unreachable",
        "report": "unreachable",
        "cleanup": "complete",
    }
    assert (failed.steps["transform-2"].state, failed.steps["transform-2"].tries) == ("expired", 3)

    assert (retried.state, retried.generation) == ("complete", 1)
    assert retried.results()["load"] == {"rows": 5500}
    assert warehouse.CALLS.count("cleanup") == 1  # a completed all_done step does not run again
    assert warehouse.CALLS.count("transform-0") == 1


async def test_page_pipeline_skips_the_report_without_rows(
    myapp: tuple[types.ModuleType, types.ModuleType], make_client: ClientFactory
) -> None:
    etl, warehouse = myapp
    warehouse.ROWS_PER_PARTITION[:] = [0, 0, 0, 0]
    client = await make_client(queue="ETL")
    flows = Workflows(client)
    async with running(client, etl.router), releasing(flows):
        run = await flows.submit(etl.nightly_etl("2026-03-01"))
        finished = await flows.wait(run.id, timeout=30)

    assert finished.state == "complete"  # a skipped step does not fail its run
    report = finished.steps["report"]
    assert (report.state, report.label) == ("skipped", "skipped")
    assert report.last_error == "workflow step skipped: result of 'load' at 'rows' is 0, equal to 0"
    assert finished.steps["cleanup"].label == "complete"
    assert "report" not in warehouse.CALLS


# ---- the demo ------------------------------------------------------------------------------------------------


def test_demo_program_runs_on_its_embedded_server() -> None:
    done = subprocess.run(
        [sys.executable, str(DEMO)], cwd=ROOT, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S, check=False
    )

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"submitting run 2026-03-01-\w+ of nightly-etl on queue WF_DEMO \(8 steps\)", out)
    assert f"{FLAKY_STEP}  try 1  failed: its source was not ready (the queue retries it)" in out
    assert f"{FLAKY_STEP}  try 2  complete" in out
    assert "load         try 1  started with the results of 4 transforms" in out
    assert re.search(r"^run 2026-03-01-\w+ of nightly-etl: complete in [\d.]+s$", out, re.MULTILINE)
    assert re.search(rf"^  {FLAKY_STEP}  complete\s+2  ", out, re.MULTILINE)
    assert "flowchart TD" in out
    assert 's3["transform-2<br/>etl:transform<br/>complete"]:::complete' in out
    assert "every step completed: transform-2 on its second try, the others on their first" in out
    assert "simulated failure" not in done.stderr  # the planned failure is not logged as a warning


async def test_run_demo_twice_on_one_server(nats_url: str) -> None:
    """Each demo run has its own run id, so the demo can run against a shared server."""
    for _ in range(2):
        summary = await asyncio.wait_for(run_demo(nats_url, timeout=30), DEMO_TIMEOUT_S)
        assert summary.ok
        assert summary.started.count((FLAKY_STEP, 1)) == 1
        assert summary.started.count((FLAKY_STEP, 2)) == 1
        assert summary.started[0] == ("extract", 1)
        assert summary.started[-1] == ("cleanup", 1)
