"""``ajc workflows``: the workflow engine's commands, attached to ``ajc`` through the ``asyncjobs.ajc`` entry point.

Upstream's ``ajc`` has no workflows, so these commands follow its feel: ``key: value`` blocks and boxed tables,
``--json`` on every read command, ``-f`` on destructive ones. Runs only move on while a releaser
(``Workflows.run()``) and workers for the step types run somewhere; these commands submit, show and control runs.

``watch`` reads the run again whenever a task event of one of its steps or a run event of it arrives (and every
:data:`POLL_S` seconds, since events are not guaranteed), so a state a step passes through between two reads (a
short ``active``) may not be shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click
from rich.live import Live

from asyncjobs.cli.ajc import session as cli
from asyncjobs.cli.ajc.durations import DURATION
from asyncjobs.cli.ajc.groups import AliasGroup
from asyncjobs.cli.ajc.output import Output, go_duration, when
from asyncjobs.cli.ajc.session import EXIT_FAILED, EXIT_USAGE, connection_options, fail, force_option, json_option
from asyncjobs.codec import TaskStateEvent
from asyncjobs_workflows import ajc_views as views
from asyncjobs_workflows.constants import STEP_TASK_ID_PREFIX, YAML_EXTRA
from asyncjobs_workflows.definition import Workflow
from asyncjobs_workflows.errors import InvalidWorkflow
from asyncjobs_workflows.record import RunState
from asyncjobs_workflows.status import WorkflowRun
from asyncjobs_workflows.workflows import Workflows

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = ["workflows"]

DEFAULT_QUEUE: Final = "DEFAULT"
POLL_S: Final = 1.0
"""Seconds ``watch`` waits for an event before reading the run again anyway (events are not guaranteed)."""
SETTLE_S: Final = 0.05
"""Seconds ``watch`` lets a burst of events settle before reading the run, so one read covers the burst."""


@click.group(cls=AliasGroup, aliases=("wf", "workflow"), help="Submit, inspect and control workflow runs")
@connection_options()
def workflows() -> None:
    pass


# ---- helpers --------------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _flows(queue: str | None = None, *, init: bool = False) -> AsyncIterator[Workflows]:
    async with cli.session().client(queue=queue, init=init) as client:
        yield Workflows(client)


def _run(work: Callable[[], Awaitable[int | None]]) -> None:
    """Run the command's coroutine; a status it returns (``watch``'s verdict) becomes the exit status."""
    status = cli.run(work)
    if status:
        raise click.exceptions.Exit(status)


def read_definition(source: str) -> Workflow:
    """The workflow in a JSON or YAML file (``-`` for stdin): JSON for ``.json`` or text starting with ``{``.

    Raises:
        click.exceptions.Exit: the file cannot be read or holds no valid workflow (status 2, message printed).
    """
    where = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read the workflow definition {where}: {getattr(exc, 'strerror', None) or exc}", status=EXIT_USAGE)
    suffix = Path(source).suffix.lower() if source != "-" else ""
    try:
        return _parse(text, suffix)
    except InvalidWorkflow as exc:
        if isinstance(exc.__cause__, ImportError):
            fail(
                f"{where} is YAML, which needs PyYAML: pip install 'asyncjobs[{YAML_EXTRA}]', or write the workflow "
                "as JSON",
                status=EXIT_USAGE,
            )
        fail(_one_line(exc, where), status=EXIT_USAGE)


def _parse(text: str, suffix: str) -> Workflow:
    if suffix == ".json":
        return Workflow.from_json(text)
    if suffix in (".yaml", ".yml") or not text.lstrip().startswith("{"):
        return Workflow.from_yaml(text)
    try:
        return Workflow.from_json(text)
    except InvalidWorkflow as exc:
        if not isinstance(exc.__cause__, ValueError):
            raise  # JSON, but not a valid workflow
        try:  # not JSON: maybe a YAML flow mapping ({name: x, ...}), which starts with a brace too
            return Workflow.from_yaml(text)
        except InvalidWorkflow:
            raise exc from exc.__cause__  # it looked like JSON: say what is wrong with it as JSON


def _one_line(exc: InvalidWorkflow, where: str) -> str:
    # PyYAML's messages span lines (a snippet and a caret): keep what went wrong and where.
    cause = exc.__cause__
    problem, mark = getattr(cause, "problem", None), getattr(cause, "problem_mark", None)
    if problem and mark is not None:
        return f"{where} is not valid YAML: {problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


# ---- watching -------------------------------------------------------------------------------------------------------


async def _pulse(events: AsyncIterator[Any], changed: asyncio.Event, prefix: str | None) -> None:
    async for event in events:
        if prefix is None or (isinstance(event, TaskStateEvent) and event.task_id.startswith(prefix)):
            changed.set()


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout <= 0:
        fail("--timeout must be more than 0s: give a duration such as 30s, 10m or 1h", status=EXIT_USAGE)


async def follow(flows: Workflows, run_id: str, out: Output, timeout: float | None) -> int:
    """Show a run as it changes until it ends: a live tree on a terminal, else a line per step change.

    Returns:
        0 when the run completed, 1 when it failed or was cancelled.
    """
    try:
        async with asyncio.timeout(timeout) as scope:
            run = await _watch(flows, run_id, out)
    except TimeoutError:
        if not scope.expired():
            raise  # a request timed out, not the watch
        fail(
            f"workflow run {run_id} had not ended after {go_duration(timeout)}: watch it again with a longer --timeout"
        )
    return 0 if run.state is RunState.COMPLETE else EXIT_FAILED


async def _watch(flows: Workflows, run_id: str, out: Output) -> WorkflowRun:
    changed = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        # Subscribed before the first read, so no change between the read and the subscription goes unseen.
        task_events = await stack.enter_async_context(flows.client.events())
        run_events = await stack.enter_async_context(flows.events(run_id))
        prefix = f"{STEP_TASK_ID_PREFIX}{run_id}:"
        readers = [
            asyncio.create_task(_pulse(task_events, changed, prefix)),
            asyncio.create_task(_pulse(run_events, changed, None)),
        ]
        stack.push_async_callback(_stop, readers)
        live = None
        if out.interactive and not out.json:
            live = stack.enter_context(Live(console=out.console, auto_refresh=False, transient=True))
        seen: dict[str, tuple[str, int]] = {}
        check = True
        while True:
            changed.clear()
            run = await views.get_run(flows, run_id, check=check)
            check = False
            if live is not None:
                live.update(views.render_run(run, out), refresh=True)
            else:
                for name, key in views.step_keys(run).items():
                    if seen.get(name) != key:
                        seen[name] = key
                        _emit(out, views.step_line(run, name, json_lines=out.json))
            if run.done:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), POLL_S)
                await asyncio.sleep(SETTLE_S)
    if live is not None:
        views.run_view(run, out)  # the last frame in full: a live view is cut to the terminal's height
    else:
        _emit(out, views.run_line(run, json_lines=out.json))
    return run


def _emit(out: Output, line: str | dict[str, Any]) -> None:
    if isinstance(line, str):
        out.line(line)
    else:
        out.print_json(line, lines=True)


async def _stop(readers: list[asyncio.Task[None]]) -> None:
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)


# ---- commands -------------------------------------------------------------------------------------------------------


@workflows.command(
    "submit",
    aliases=("add", "new"),
    help="Submit a run of a workflow definition file\n\n"
    "FILE is read as JSON when its name ends in .json or its text starts with '{', else as YAML (which needs "
    f"PyYAML: pip install 'asyncjobs[{YAML_EXTRA}]'); - reads stdin. The steps run on --queue, once a releaser "
    "(Workflows.run()) and workers for their task types run.",
)
@click.argument("file", metavar="FILE")
@click.option("--run-id", metavar="ID", help="the run's id (makes the submit idempotent); a new KSUID by default")
@click.option("--queue", "-q", default=DEFAULT_QUEUE, show_default=True, help="the queue the steps run on")
@click.option("--watch", "-w", "watch", is_flag=True, help="then follow the run until it ends, as `watch` does")
@click.option("--timeout", type=DURATION, metavar="DURATION", help="with --watch: give up after this long")
@json_option
def submit(file: str, run_id: str | None, queue: str, watch: bool, timeout: float | None, json_output: bool) -> None:
    if timeout is not None and not watch:
        fail("--timeout applies to --watch: add --watch, or leave --timeout out", status=EXIT_USAGE)
    _check_timeout(timeout)
    out = Output(json=json_output)
    definition = read_definition(file)

    async def work() -> int | None:
        async with _flows(queue, init=True) as flows:
            run = await flows.submit(definition, run_id=run_id)
            if json_output and not watch:
                out.print_json(views.run_json(run))
            elif not json_output:
                out.line(f"Submitted workflow run {run.id}")
            return await follow(flows, run.id, out, timeout) if watch else None

    _run(work)


@workflows.command("list", aliases=("ls",), help="List workflow runs, oldest first")
@click.option("--state", type=click.Choice([s.value for s in RunState]), help="only runs in this state")
@click.option("--workflow", "-W", "workflow_name", metavar="NAME", help="only runs of this workflow")
@click.option("--limit", "-n", type=click.IntRange(min=1), metavar="N", help="only the N most recent runs")
@json_option
def list_runs(state: str | None, workflow_name: str | None, limit: int | None, json_output: bool) -> None:
    out = Output(json=json_output)

    async def work() -> None:
        async with _flows() as flows:
            runs = await flows.list(workflow=workflow_name, state=state) if await views.runs_stored(flows) else []
        shown = runs[-limit:] if limit else runs
        if json_output:
            out.print_json([views.run_json(run) for run in shown])
            return
        if not runs:
            out.line("No Workflow Runs found")
            return
        count = f"{len(shown)} of {len(runs)}" if len(shown) < len(runs) else f"{len(runs)}"
        title = f"{count} Workflow Run(s)"
        headers = ("Run ID", "Workflow", "State", "Steps", "Created", "Finished")
        rows = [
            (
                run.id,
                run.name,
                out.state(run.state.value),
                f"{views.steps_done(run)}/{len(run.workflow.steps)}",
                when(run.created),
                when(run.finished) if run.finished else "",
            )
            for run in shown
        ]
        out.table(title, headers, rows)

    _run(work)


@workflows.command("status", aliases=("view", "show", "info"), help="Show a workflow run and its steps as a tree")
@click.argument("run_id", metavar="RUN_ID")
@click.option("--mermaid", "picture", flag_value="mermaid", help="print the run as a Mermaid flowchart instead")
@click.option("--dot", "picture", flag_value="dot", help="print the run as Graphviz DOT instead")
@json_option
def status(run_id: str, picture: str | None, json_output: bool) -> None:
    out = Output(json=json_output)

    async def work() -> None:
        async with _flows() as flows:
            run = await views.get_run(flows, run_id)
        if json_output:
            out.print_json(views.run_json(run))
        elif picture == "mermaid":
            sys.stdout.write(run.mermaid())
        elif picture == "dot":
            sys.stdout.write(run.dot())
        else:
            views.run_view(run, out)

    _run(work)


@workflows.command(
    "watch",
    help="Follow a workflow run live until it ends\n\n"
    "On a terminal the run's tree updates in place; otherwise each step's state change is a line (JSON lines with "
    "--json). Exits 0 when the run completed, 1 when it failed or was cancelled (or --timeout passed).",
)
@click.argument("run_id", metavar="RUN_ID")
@click.option("--timeout", type=DURATION, metavar="DURATION", help="give up after this long (30s, 10m, 1h30m)")
@json_option
def watch(run_id: str, timeout: float | None, json_output: bool) -> None:
    _check_timeout(timeout)
    out = Output(json=json_output)

    async def work() -> int:
        async with _flows() as flows:
            return await follow(flows, run_id, out, timeout)

    _run(work)


@workflows.command("cancel", help="Cancel a workflow run: its steps that have not started never start")
@click.argument("run_id", metavar="RUN_ID")
@force_option
@json_option
def cancel(run_id: str, force: bool, json_output: bool) -> None:
    out = Output(json=json_output)
    out.confirm(f"Really cancel workflow run {run_id}", force=force)

    async def work() -> None:
        async with _flows() as flows, views.known_run(flows, run_id):
            run = await flows.cancel(run_id)
        if json_output:
            out.print_json(views.run_json(run))
        else:
            out.line(f"Cancelled workflow run {run.id}")

    _run(work)


@workflows.command("retry", help="Run a failed or cancelled workflow run again, from where it stopped")
@click.argument("run_id", metavar="RUN_ID")
@json_option
def retry(run_id: str, json_output: bool) -> None:
    out = Output(json=json_output)

    async def work() -> None:
        async with _flows() as flows, views.known_run(flows, run_id):
            run = await flows.retry(run_id)
        if json_output:
            out.print_json(views.run_json(run))
        else:
            views.run_view(run, out)

    _run(work)


@workflows.command("delete", aliases=("rm", "del"), help="Delete an ended workflow run and its step tasks")
@click.argument("run_id", metavar="RUN_ID")
@force_option
def delete(run_id: str, force: bool) -> None:
    out = Output()
    out.confirm(f"Really delete workflow run {run_id} and its step tasks", force=force)

    async def work() -> None:
        async with _flows() as flows, views.known_run(flows, run_id):
            await flows.delete(run_id)
        out.line(f"Removed workflow run {run_id}")

    _run(work)
