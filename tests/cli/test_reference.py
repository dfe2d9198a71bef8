"""docs/cli.md is generated from the command tree and must match it; every command and flag appears in it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from asyncjobs.cli.ajc.app import ajc
from asyncjobs.cli.ajc.reference import REGENERATE, _lean_parsers, main, render

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def _tree(command: click.Command, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    # Walked here through `commands` rather than with the module's own walk, so a bug there cannot hide a command.
    yield path, command
    if isinstance(command, click.Group):
        context = click.Context(command)
        for name in command.list_commands(context):
            child = command.get_command(context, name)
            if child is not None and not child.hidden:
                yield from _tree(child, (*path, name))


@pytest.fixture(scope="module")
def text() -> str:
    return render()


def _section(text: str, name: str) -> str:
    match = re.search(rf"^## {re.escape(name)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section for {name!r}"
    return match[1]


def test_committed_reference_is_current(text: str) -> None:
    assert DOCS.is_file(), f"docs/cli.md is missing: run {REGENERATE}"
    assert DOCS.read_text(encoding="utf-8") == text, f"docs/cli.md is out of date: run {REGENERATE}"


def test_every_command_alias_argument_and_option_appears(text: str) -> None:
    commands = list(_tree(ajc, ("ajc",)))
    # The extensions' commands are attached through entry points: they must be in the walk too.
    names = {" ".join(path) for path, _ in commands}
    assert {"ajc tasks cron", "ajc tasks cron add", "ajc workflows", "ajc dev-server", "ajc queues list"} <= names
    for path, command in commands:
        name = " ".join(path)
        section = _section(text, name)
        assert f"- [{name}](#{name.replace(' ', '-')})" in text  # in the contents, linked to its heading
        for alias in getattr(command, "aliases", ()):
            assert f"`{alias}`" in section.split("\n\n")[0] + section, (name, alias)
        if name in ("ajc worker", "ajc keygen"):
            continue  # stand-ins that forward to the argparse commands: their flags are checked below
        for param in command.params:
            if isinstance(param, click.Argument):
                assert param.human_readable_name in section, (name, param.name)
            elif isinstance(param, click.Option) and not param.hidden:
                assert max(param.opts, key=len) in section, (name, param.opts)
    parsers = _lean_parsers()
    for lean in ("worker", "keygen"):
        section = _section(text, f"ajc {lean}")
        assert "--help" not in section
        for action in parsers[lean]._actions:
            for flag in action.option_strings:
                assert flag in section or flag in ("-h", "--help"), (lean, flag)


def test_sections_show_usage_aliases_defaults_and_env(text: str) -> None:
    queues_new = _section(text, "ajc queues new")
    assert "Aliases: `add`, `n`, `a`" in queues_new
    assert "```text\najc queues new [OPTIONS] QUEUE\n```" in queues_new
    assert "- `--run-time DURATION`: Maximum run-time to allow per task (default `1h`)" in queues_new
    dev = _section(text, "ajc dev-server")
    assert "- `-p, --port PORT`: client port to listen on (0 picks a free one) (`0<=x<=65535`; default `4222`)" in dev
    root = _section(text, "ajc")
    assert "- `--context TEXT`: NATS CLI context to connect with (env CONTEXT) (env `CONTEXT`, `NATS_CONTEXT`)" in root
    assert "- `-s, --server TEXT`: NATS URL(s), comma-separated (env NATS_URL)" in root


def test_write_and_check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "cli.md"
    assert main(["--check", str(target)]) == 1
    assert f"create it with {REGENERATE}" in capsys.readouterr().err
    assert main(["--write", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == text
    assert main(["--check", str(target)]) == 0
    target.write_text(text + "edited\n", encoding="utf-8")
    assert main(["--check", str(target)]) == 1
    assert capsys.readouterr().err == f"{target} is out of date: regenerate it with {REGENERATE}\n"
    assert main([]) == 0
    assert capsys.readouterr().out == text


GUIDE = DOCS.parent / "operator-guide.md"


def _guide_commands() -> list[str]:
    """Every ``ajc ...`` command line of the operator's guide: in inline code, and lines of its code blocks."""
    text = GUIDE.read_text(encoding="utf-8")
    found = [m[1] for m in re.finditer(r"`(ajc [^`]+)`", text)]
    found += [m[1] for m in re.finditer(r"^\s*(?:\$ )?(ajc [^\n#]+)", text, re.M)]
    return [line.split("|")[0].strip() for line in found]


def _check_command_line(line: str) -> None:
    import shlex

    words = shlex.split(line)[1:]
    command: click.Command = ajc
    context = click.Context(ajc, info_name="ajc")
    while isinstance(command, click.Group) and words:
        word = words.pop(0)
        if word.startswith("-"):  # a flag of the group itself (ajc --server URL, ajc tasks --sign SEED)
            flags = {opt: p for p in [*command.params, *ajc.params] if isinstance(p, click.Option) for opt in p.opts}
            option = flags.get(word)
            assert option is not None, f"{line!r}: {command.name} has no flag {word}"
            if not option.is_flag:
                words.pop(0)
            continue
        child = command.get_command(context, word)
        assert child is not None, f"{line!r}: no command {word!r}"
        command = child
    flags = {opt for p in [*command.params, *ajc.params] for opt in (*p.opts, *getattr(p, "secondary_opts", ()))}
    for word in words:
        if word.startswith("-") and word != "-":
            assert word.split("=")[0] in flags, f"{line!r}: {command.name} has no flag {word}"


def test_operator_guide_uses_commands_and_flags_that_exist() -> None:
    lines = _guide_commands()
    assert len(lines) > 40
    for line in lines:
        _check_command_line(line)
