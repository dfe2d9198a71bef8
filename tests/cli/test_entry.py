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


def test_lazy_registry_names_each_commands_own_aliases() -> None:
    import importlib

    from asyncjobs.cli.ajc.app import CORE_COMMANDS, TASK_COMMANDS

    for name, target, aliases in (*CORE_COMMANDS, *TASK_COMMANDS):
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert tuple(getattr(command, "aliases", ())) == aliases, name
        assert command.name == name


async def test_a_command_loads_only_its_own_group(config_home: object) -> None:
    script = (
        "import sys, contextlib, io\n"
        "from asyncjobs.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['queues', '--help'])\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    done = await run_command([sys.executable, "-c", script], env={"PATH": str(AJC.parent)})
    assert done.code == 0, done.err
    loaded = set(done.out.split())
    assert "asyncjobs.cli.ajc.queues" in loaded
    assert not {m for m in loaded if m.startswith(("asyncjobs_scheduler", "asyncjobs_workflows", "rich.progress"))}
    assert "asyncjobs.cli.ajc.tasks" not in loaded


async def test_aliases_reach_commands_of_every_group(run_ajc: RunAjc) -> None:
    for args in (("t", "c", "--help"), ("wf", "--help"), ("q", "ls", "--help"), ("task", "ls", "--help")):
        done = await run_ajc(*args)
        assert done.code == 0, (args, done.err)
        assert done.out.startswith("Usage: ajc "), args
