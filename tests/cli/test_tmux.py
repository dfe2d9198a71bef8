"""``ajc`` on a real terminal: tables, colours, progress and trees as drawn in an 80-column tmux pane.

Each command runs as the only process of its own detached tmux session (80x50, on a private server socket), so
stdout is a TTY exactly as an operator's is; the test then reads the screen with ``tmux capture-pane``. Sessions
stay on the screen after their command exits (``remain-on-exit``), with a line giving its exit status.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import asyncjobs
from tests.cli.conftest import AJC

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt install tmux)")

WIDTH = 80
HEIGHT = 50
COMMAND_TIMEOUT_S = 30.0
POLL_S = 0.05
ESCAPE = "\x1b["
EXIT_MARK = "[ajc exited with status]"
TABLE_EDGES = {"╭": "╮", "├": "┤", "│": "│", "╰": "╯"}


@dataclass(frozen=True)
class Screen:
    """What a finished command left on its pane."""

    status: int
    text: str
    """The screen as plain text, up to the exit status line."""
    escapes: str
    """The same screen with its colour and style escapes (``capture-pane -e``)."""

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()


class Tmux:
    """A tmux server on a private socket whose sessions run ``ajc`` against the test's nats-server."""

    def __init__(self, env: dict[str, str]) -> None:
        self.socket = f"ajc-test-{uuid.uuid4().hex[:12]}"
        self.env = env
        self._count = 0

    async def tmux(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "tmux", "-L", self.socket, "-f", os.devnull, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.env,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT_S)
        assert proc.returncode == 0, f"tmux {args}: {err.decode()}"
        return out.decode()

    async def start(self) -> None:
        # An idle first session keeps the server up between commands; every command then gets its own session.
        await self.tmux("new-session", "-d", "-s", "idle", "-x", str(WIDTH), "-y", str(HEIGHT), "cat")
        await self.tmux("set-option", "-g", "remain-on-exit", "on")

    async def stop(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            "tmux", "-L", self.socket, "kill-server", stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, env=self.env,
        )  # fmt: skip
        await asyncio.wait_for(proc.wait(), COMMAND_TIMEOUT_S)

    async def launch(self, *args: str) -> str:
        """Start ``ajc ARGS...`` in a new 80x50 session; returns the session's name.

        A shell runs it and prints its exit status after it: tmux does not always reap a pane's process that
        exits on Ctrl-C, so ``#{pane_dead_status}`` cannot be relied on. The shell's trap keeps it alive through
        a Ctrl-C meant for ``ajc`` (a trap, unlike ignoring the signal, is not inherited by the command).
        """
        self._count += 1
        name = f"c{self._count}"
        script = f'trap true INT; {shlex.join([str(AJC), *args])}; echo "{EXIT_MARK} $?"'
        await self.tmux("new-session", "-d", "-s", name, "-x", str(WIDTH), "-y", str(HEIGHT), "sh", "-c", script)
        return name

    async def capture(self, name: str, *, escapes: bool = False) -> str:
        # From the start of the history: when the command exits, tmux scrolls the screen up by a line.
        return await self.tmux("capture-pane", "-p", "-S", "-", "-t", name, *(["-e"] if escapes else []))

    async def wait_for(self, name: str, pattern: str, timeout: float = COMMAND_TIMEOUT_S) -> str:
        """Poll the screen until ``pattern`` (a regex) appears; returns the screen."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = await self.capture(name)
            if re.search(pattern, screen, re.M):
                return screen
            await asyncio.sleep(POLL_S)
        raise AssertionError(f"{pattern!r} did not appear on the screen within {timeout} s:\n{screen}")

    async def finish(self, name: str, timeout: float = COMMAND_TIMEOUT_S) -> Screen:
        """Wait for the session's command to exit; returns its status and final screen."""
        screen = await self.wait_for(name, rf"^{re.escape(EXIT_MARK)} \d+$", timeout)
        lines = screen.splitlines()
        end = max(i for i, line in enumerate(lines) if line.startswith(EXIT_MARK))
        status = int(lines[end].removeprefix(EXIT_MARK))
        escapes = await self.capture(name, escapes=True)
        return Screen(status, "\n".join(lines[:end]).rstrip("\n"), escapes)

    async def run(self, *args: str, timeout: float = COMMAND_TIMEOUT_S) -> Screen:
        """Run ``ajc ARGS...`` to its end in a fresh session."""
        return await self.finish(await self.launch(*args), timeout)


def _terminal_env(config_home: Path) -> dict[str, str]:
    drop = ("NATS_", "AJC_", "COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TMUX", "CONTEXT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update({"XDG_CONFIG_HOME": str(config_home), "TERM": "xterm-256color", "LANG": "C.UTF-8"})
    return env


@pytest.fixture
async def term(config_home: Path) -> AsyncIterator[Tmux]:
    # The server's socket goes in a directory of its own, removed afterwards (tmux leaves the socket file behind);
    # a short path, since a socket's path is limited to about 100 bytes.
    sockets = tempfile.mkdtemp(prefix="ajc-tmux-")
    tmux = Tmux({**_terminal_env(config_home), "TMUX_TMPDIR": sockets})
    try:
        await tmux.start()
        yield tmux
    finally:
        await tmux.stop()
        shutil.rmtree(sockets, ignore_errors=True)


def assert_table(screen: Screen, title: str, headers: list[str], *, key: int = 0) -> list[list[str]]:
    """The screen holds a boxed table within 80 columns: its title boxed above the header row, then the rows.

    Every line of the box starts and ends with a border character and all have one width; a header or cell that
    is too wide wraps inside its column instead of breaking the box. Returns the rows' cells, a wrapped cell's
    pieces joined without a space, as a folded word's are (a line whose ``key`` column is empty continues the row
    above).
    """
    lines = screen.lines
    assert all(len(line) <= WIDTH for line in lines), screen.text
    top = next(i for i, line in enumerate(lines) if line.startswith("╭"))
    bottom = next(i for i, line in enumerate(lines) if line.startswith("╰"))
    box = [line.rstrip() for line in lines[top : bottom + 1]]
    for line in box:
        assert line[0] in TABLE_EDGES, f"broken left border: {line!r}"
        assert line[-1] == TABLE_EDGES[line[0]], f"broken right border: {line!r}"
    assert len({len(line) for line in box}) == 1, f"rows of different widths:\n{screen.text}"
    assert box[1].strip("│ ") == title, box[1]
    rules = [i for i, line in enumerate(box) if line.startswith("├")]
    assert len(rules) == 2 and rules[0] == 2, screen.text  # under the title, under the header
    drawn = _cells(box[rules[0] + 1 : rules[1]])
    assert squash([drawn]) == squash([headers]), drawn
    rows: list[list[str]] = []
    for line in box[rules[1] + 1 : -1]:
        cells = [cell.strip() for cell in line[1:-1].split("│")]
        if rows and not cells[key]:
            rows[-1] = [f"{a}{b}" if a and b else a or b for a, b in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    return rows


def squash(rows: list[list[str]]) -> list[list[str]]:
    """Cells without their spaces: a narrow column may break a cell at a space or inside a word."""
    return [[cell.replace(" ", "") for cell in row] for row in rows]


def _cells(lines: list[str]) -> list[str]:
    # A header wrapped over several lines: join each column's words.
    columns = [[cell.strip() for cell in line[1:-1].split("│")] for line in lines]
    return [" ".join(word for word in column if word) for column in zip(*columns, strict=True)]


async def test_queues_list_draws_a_boxed_table_in_80_columns(term: Tmux, nats_url: str) -> None:
    async with await asyncjobs.connect(nats_url, queue="EMAIL") as client:
        await client.enqueue(asyncjobs.Task("email:send", {"to": "ops"}))
    async with await asyncjobs.connect(nats_url, queue=asyncjobs.Queue("A_QUEUE_WITH_A_RATHER_LONG_NAME_INDEED")):
        pass

    screen = await term.run("queues", "list")

    assert screen.status == 0, screen.text
    rows = assert_table(screen, "Work Queues", _queue_headers(), key=1)
    assert squash([row[:3] for row in rows]) == squash(
        [
            ["A_QUEUE_WITH_A_RATHER_LONG_NAME_INDEED", "0", "0 B"],
            ["EMAIL", "1", "179 B"],
        ]
    ), screen.text
    assert ESCAPE in screen.escapes  # a terminal gets styles (the bold title)


def _queue_headers() -> list[str]:
    from asyncjobs.cli.ajc.blocks import QUEUE_HEADERS

    return list(QUEUE_HEADERS)


async def test_cron_list_table_fits_80_columns(term: Tmux, nats_url: str) -> None:
    from asyncjobs_scheduler import Schedule, Schedules

    async with await asyncjobs.connect(nats_url, queue="EMAIL") as client:
        schedules = Schedules(client)
        await schedules.add(Schedule("nightly-report", "0 2 * * *", "report:build", queue="EMAIL"))
        await schedules.add(Schedule("every-five", "*/5 * * * *", "email:digest", queue="EMAIL"))

    screen = await term.run("tasks", "cron", "list")

    assert screen.status == 0, screen.text
    # Upstream's five columns; the extra Next column is left out when 80 columns cannot hold it.
    headers = ["Name", "Schedule", "Queue", "Task Type", "Created"]
    rows = assert_table(screen, "2 Scheduled Task(s)", headers, key=2)
    assert squash(sorted(row[:4] for row in rows)) == squash(
        [
            ["every-five", "*/5 * * * *", "EMAIL", "email:digest"],
            ["nightly-report", "0 2 * * *", "EMAIL", "report:build"],
        ]
    ), screen.text


async def _stored(nats_url: str, count: int, state: asyncjobs.TaskState) -> list[str]:
    """``count`` tasks stored in ``state`` as a worker would leave them (no worker needed), oldest first."""
    async with await asyncjobs.connect(nats_url, queue="EMAIL") as client:
        tasks = await client.enqueue_many(asyncjobs.Task("email:send", {"n": n}) for n in range(count))
        for task in tasks:
            task.state = state
        await asyncio.gather(*(client._storage.save_task(task, notify=False) for task in tasks))
        await client.admin.purge_queue("EMAIL")  # their items are done with, as a worker's would be
    return [task.id for task in tasks]


async def test_tasks_list_table_fits_80_columns_with_coloured_states(term: Tmux, nats_url: str) -> None:
    ids = await _stored(nats_url, 3, asyncjobs.TaskState.TERMINATED)

    screen = await term.run("tasks", "list")

    assert screen.status == 0, screen.text
    # Too wide for 80 columns whole: the ids stay whole and the times go on two lines under a header naming the zone.
    rows = assert_table(screen, "3 Tasks", ["ID", "Type", "Created (UTC)", "State", "Queue", "Tries"], key=3)
    assert all(re.fullmatch(r"\d\d \w{3} \d\d\d\d:\d\d:\d\d", row[2]) for row in rows), screen.text
    assert squash(sorted([row[0], row[1], row[3], row[4]] for row in rows)) == squash(
        [[task_id, "email:send", "terminated", "EMAIL"] for task_id in sorted(ids)]
    ), screen.text
    assert re.search(r"\x1b\[[0-9;]*31m\s*terminated", screen.escapes), "the state is not red on a terminal"


async def test_bulk_retry_draws_a_progress_bar_then_clears_it(term: Tmux, nats_url: str) -> None:
    count = 1000
    await _stored(nats_url, count, asyncjobs.TaskState.TERMINATED)

    name = await term.launch("tasks", "retry", "--failed", "-f")
    # A rich bar: the description, the bar's glyphs and "done/total" (drawn ten times a second while it runs).
    drawn = await term.wait_for(name, rf"^Retrying tasks .*━.* \d+/{count}\b")
    screen = await term.finish(name)

    assert screen.status == 0, screen.text
    assert screen.lines == [f"Retried {count:,} tasks"], screen.text  # the bar was removed, nothing else left
    assert all(len(line) <= WIDTH for line in drawn.splitlines()), drawn
    async with await asyncjobs.connect(nats_url, no_storage_init=True) as client:
        states = {task.state async for task in client.admin.tasks()}
    assert states == {asyncjobs.TaskState.RETRY}


async def test_workflow_status_draws_the_step_tree_and_list_a_table(term: Tmux, nats_url: str) -> None:
    from asyncjobs_workflows import RunState, Workflow, Workflows

    definition = {
        "name": "nightly-report-with-a-long-name",
        "steps": [
            {"name": "extract", "task_type": "t:ok"},
            {"name": "transform", "task_type": "t:fail", "after": ["extract"]},
            {"name": "load", "task_type": "t:ok", "after": ["transform"]},
            {"name": "cleanup", "task_type": "t:ok", "after": ["transform"], "trigger": "all_done"},
        ],
    }
    router = asyncjobs.Router()

    @router.handler("t:ok")
    async def ok(task: asyncjobs.Task) -> str:
        return "done"

    @router.handler("t:fail")
    async def fail(task: asyncjobs.Task) -> None:
        raise asyncjobs.TerminateTask("the staging bucket is unreachable")

    async with await asyncjobs.connect(nats_url, shutdown_grace=0.5) as client:
        flows = Workflows(client, sweep_interval=1)
        jobs = [asyncio.create_task(client.run(router)), asyncio.create_task(flows.run())]
        try:
            await flows.submit(Workflow.from_dict(definition), run_id="night-1")
            run = await flows.wait("night-1", timeout=COMMAND_TIMEOUT_S)
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
    assert run.state is RunState.FAILED

    screen = await term.run("workflows", "status", "night-1")

    assert screen.status == 0, screen.text
    lines = screen.lines
    assert all(len(line) <= WIDTH for line in lines), screen.text
    assert lines[0] == "Workflow Run night-1", screen.text
    tree = lines[lines.index("nightly-report-with-a-long-name steps") + 1 :]
    assert tree[:4] == [
        "└── extract  complete",
        "    └── transform  terminated",
        "        ├── cleanup  complete  all_done",
        "        └── load  unreachable",
    ], screen.text
    assert ESCAPE in screen.escapes  # the states are coloured on a terminal

    listing = await term.run("workflows", "list")
    assert listing.status == 0, listing.text
    headers = ["Run ID", "Workflow", "State", "Steps", "Created (UTC)", "Finished (UTC)"]
    rows = assert_table(listing, "1 Workflow Run(s)", headers)
    assert squash([row[:4] for row in rows]) == [["night-1", "nightly-report-with-a-long-name", "failed", "4/4"]]


async def test_dev_server_stops_on_ctrl_c_in_a_terminal(term: Tmux, tmp_path: Path) -> None:
    # Ctrl-C on a terminal goes to the whole foreground process group: ajc and its nats-server both get SIGINT.
    name = await term.launch("dev-server", "--port", "0", "--store-dir", str(tmp_path / "store"))
    await term.wait_for(name, r"^Press Ctrl-C to stop\.$")
    await term.tmux("send-keys", "-t", name, "C-c")
    screen = await term.finish(name)

    assert screen.status == 0, screen.text
    assert screen.lines[-3:] == ["^C", "stopping the NATS server ...", "stopped"], screen.text
    assert "Traceback" not in screen.text
