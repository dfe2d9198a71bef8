"""docs/scheduler.md stays true: its doctest blocks run, its flag table matches the command, its permissions suffice.

Blocks marked ``<!-- doctest -->`` (pure: schedules, due times, DST, task ids) run in order with one namespace, so
every output quoted there is what the code prints. The permission set is given to a real scheduler user on a
nats-server, which must fire a schedule without the server logging a permissions violation.
"""

from __future__ import annotations

import asyncio
import doctest
import re
import shlex
from pathlib import Path
from typing import Final

import pytest

import asyncjobs
from asyncjobs.server import NatsServer
from asyncjobs.testing import eventually
from asyncjobs_scheduler import Schedule, Scheduler, Schedules
from asyncjobs_scheduler.cli import build_parser

PAGE: Final = Path(__file__).resolve().parents[2] / "docs" / "scheduler.md"
TEXT: Final = PAGE.read_text()
DOCTEST_MARKER: Final = "<!-- doctest -->"
BLOCK_RE: Final = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _doctest_blocks() -> list[str]:
    blocks = []
    for match in BLOCK_RE.finditer(TEXT):
        preceding = TEXT[: match.start()].rstrip().splitlines()[-1]
        if preceding == DOCTEST_MARKER:
            blocks.append(match.group(2))
    return blocks


def _conf_block(first_line: str) -> str:
    [block] = [
        m.group(2) for m in BLOCK_RE.finditer(TEXT) if m.group(1) == "conf" and m.group(2).startswith(first_line)
    ]
    return block


def test_page_has_doctest_blocks() -> None:
    assert len(_doctest_blocks()) >= 6


def test_doctest_blocks_print_what_the_page_says() -> None:
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    namespace: dict[str, object] = {}
    for number, block in enumerate(_doctest_blocks(), start=1):
        test = parser.get_doctest(block, namespace, f"scheduler.md block {number}", str(PAGE), 0)
        runner.run(test, clear_globs=False)
        namespace = test.globs  # a DocTest runs in a copy: carry its names on to the next block
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in docs/scheduler.md failed (above)"


def test_flag_table_lists_every_flag() -> None:
    flags = {option for action in build_parser()._actions for option in action.option_strings} - {"-h", "--help"}
    table = TEXT[TEXT.index("| Flag | Environment |") :].split("\n\n", 1)[0]
    assert {flag for flag in flags if f"`{flag}`" not in table} == set()


SCHEDULER_SET_HEAD: Final = "# Run schedulers whose schedules enqueue on REPORTS"


@pytest.mark.timeout(60)
async def test_scheduler_permission_set_suffices(tmp_path: Path) -> None:
    permissions = _conf_block(SCHEDULER_SET_HEAD)
    config = tmp_path / "server.conf"
    config.write_text(
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        f"{permissions}\n"
        'ADMIN = { publish: ">", subscribe: ">" }\n'
        "accounts { APP { jetstream: enabled, users: [\n"
        '  { user: "admin", password: "a", permissions: $ADMIN }\n'
        '  { user: "scheduler", password: "s", permissions: $REPORTS_SCHEDULER }\n'
        "] } }\n"
    )
    async with NatsServer(jetstream=False, extra_args=["-c", str(config)]) as server:
        async with await asyncjobs.connect(server.url, user="admin", password="a", queue="REPORTS") as admin:
            schedules = Schedules(admin)
            await schedules.add(Schedule("tick", "@every 1s", "report:tick", overlap="skip"))
            clients = [
                await asyncjobs.connect(
                    server.url, user="scheduler", password="s", queue=asyncjobs.Queue("REPORTS", no_create=True)
                )
                for _ in range(2)
            ]
            schedulers = [Scheduler(client, name=f"sched-{n}") for n, client in enumerate(clients)]
            running = [asyncio.create_task(scheduler.run()) for scheduler in schedulers]
            try:
                leading = await eventually(lambda: [n for n, s in enumerate(schedulers) if s.is_leader], timeout=10)
                leader = schedulers[leading[0]]
                running[leading[0]].cancel()  # hand over: resign, the other campaigns
                await eventually(lambda: any(s.is_leader for s in schedulers if s is not leader), timeout=10)

                async def fired() -> int:
                    return len([task async for task in admin.admin.tasks(queue="REPORTS")])

                assert await eventually(fired, timeout=10)
            finally:
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
                for client in clients:
                    await client.close()
        violations = [line for line in server.log_tail if "Violation" in line]
    assert violations == []


@pytest.mark.parametrize("page", [PAGE, PAGE.parents[1] / "README.md"], ids=["scheduler.md", "README.md"])
def test_scheduler_commands_shown_parse(page: Path) -> None:
    lines = [line for line in page.read_text().splitlines() if line.startswith("python -m asyncjobs_scheduler ")]
    assert lines, f"{page.name} shows no scheduler command"
    for line in lines:
        args = build_parser().parse_args(shlex.split(line, comments=True)[3:])
        assert args.queue == "REPORTS"
