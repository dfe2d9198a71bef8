"""The entry points: ``ajc``, ``asyncjobs`` and ``python -m asyncjobs`` run the same command tree."""

from __future__ import annotations

import sys

from tests.cli.conftest import AJC, RunAjc, run_command


async def test_help_lists_upstreams_command_groups(run_ajc: RunAjc) -> None:
    done = await run_ajc("--help")
    assert done.code == 0, done.err
    for name in ("info", "queues", "tasks"):
        assert name in done.out


async def test_python_dash_m_runs_the_same_tree(config_home: object) -> None:
    done = await run_command([sys.executable, "-m", "asyncjobs", "--help"], env={"PATH": str(AJC.parent)})
    assert done.code == 0, done.err
    assert "queues" in done.out
