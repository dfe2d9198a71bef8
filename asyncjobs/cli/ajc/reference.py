"""The ``ajc`` command reference in Markdown, generated from the commands themselves (``docs/cli.md``).

Every group and command of the click tree is walked, including those the scheduler and workflows packages attach
through entry points; the two argparse commands (``worker``, ``keygen``) are described from their own parser. For
each: the usage line, aliases, help, arguments, and options with their defaults and environment variables. Run it
as a program::

    python -m asyncjobs.cli.ajc.reference                      # print the reference
    python -m asyncjobs.cli.ajc.reference --write docs/cli.md  # (re)write the file
    python -m asyncjobs.cli.ajc.reference --check docs/cli.md  # exit 1 when the file is out of date

The output depends only on the commands' definitions, never on the terminal or the environment, so the committed
file can be compared with :func:`render` in a test.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import click
from click.formatting import join_options

PROGRAM: Final = "ajc"
REGENERATE: Final = "python -m asyncjobs.cli.ajc.reference --write docs/cli.md"
LEAN_COMMANDS: Final = ("worker", "keygen")
"""Commands outside the click tree, parsed with argparse (see :mod:`asyncjobs.cli`)."""
_UNSET: Final = getattr(click.core, "UNSET", None)
"""Click 8.3's marker for "no default given" (None before)."""


@dataclass(frozen=True)
class Entry:
    """One command of the click tree, with the context that gives its usage line."""

    path: tuple[str, ...]
    command: click.Command
    context: click.Context

    @property
    def name(self) -> str:
        """The full command line prefix, like ``ajc tasks cron add``."""
        return " ".join(self.path)


def walk(root: click.Command | None = None) -> Iterator[Entry]:
    """Every command of the tree, depth first in the order ``--help`` lists them; hidden ones are skipped."""
    if root is None:
        from asyncjobs.cli.ajc.app import ajc

        root = ajc
    yield from _walk(root, click.Context(root, info_name=PROGRAM), (PROGRAM,))


def _walk(command: click.Command, context: click.Context, path: tuple[str, ...]) -> Iterator[Entry]:
    yield Entry(path, command, context)
    if isinstance(command, click.Group):
        for name in command.list_commands(context):
            child = command.get_command(context, name)
            if child is None or child.hidden:
                continue
            yield from _walk(child, click.Context(child, info_name=name, parent=context), (*path, name))


def render() -> str:
    """The whole reference as Markdown."""
    entries = list(walk())
    lines = [
        f"# `{PROGRAM}` command reference",
        "",
        f"Generated from the commands themselves by `{REGENERATE}`: do not edit it by hand, regenerate it.",
        "",
        "Every command takes `-h`/`--help`. The connection flags of `ajc` (`--context`, `--server`, credentials, "
        "TLS) and `--debug` may be given before the command or after it: `ajc tasks ls --server nats://host:4222` "
        "works as well as `ajc --server nats://host:4222 tasks ls`.",
        "",
        "## Commands",
        "",
    ]
    for entry in entries:
        indent = "  " * (len(entry.path) - 1)
        summary = _short_help(entry.command)
        lines.append(f"{indent}- [{entry.name}](#{_anchor(entry.name)})" + (f": {summary}" if summary else ""))
    lean = _lean_parsers()
    # The argparse commands are listed in the click tree by stand-ins that forward to them: their flags come
    # from the argparse parser. Any the tree does not list are added at the end.
    in_tree = {entry.path[1] for entry in entries if len(entry.path) == 2}
    missing = [name for name in lean if name not in in_tree]
    for name in missing:
        summary = (lean[name].description or "").split(". ")[0].rstrip(".")
        lines.append(f"- [{PROGRAM} {name}](#{_anchor(f'{PROGRAM} {name}')}): {_escape(summary)}")
    lines.append("")
    for entry in entries:
        if len(entry.path) == 2 and entry.path[1] in lean:
            lines += _lean_section(entry.path[1], lean[entry.path[1]])
        else:
            lines += _command_section(entry)
    for name in missing:
        lines += _lean_section(name, lean[name])
    return "\n".join(lines).rstrip("\n") + "\n"


def _anchor(title: str) -> str:
    # GitHub's heading anchors: lower case, spaces to dashes, other punctuation dropped.
    return "".join(c if c.isalnum() or c in "-_" else "-" if c == " " else "" for c in title.lower())


def _short_help(command: click.Command) -> str:
    return _escape(command.get_short_help_str(limit=1000).rstrip("."))


def _escape(text: str) -> str:
    # Markdown would take `<word>` for an HTML tag and hide it, and `*` for emphasis; code spans are left alone.
    parts = text.split("`")
    balanced = len(parts) % 2 == 1  # an even number of backticks: the odd parts are code
    return "`".join(
        part if balanced and i % 2 else part.replace("<", "\\<").replace("*", "\\*") for i, part in enumerate(parts)
    )


def _paragraphs(text: str | None) -> list[str]:
    """Click help text as Markdown: ``\\b`` paragraphs (kept as written) become code blocks, others one line."""
    if not text:
        return []
    text = inspect.cleandoc(text).split("\f", 1)[0]
    out: list[str] = []
    for paragraph in text.split("\n\n"):
        if paragraph.startswith("\b\n"):
            out += ["```text", *paragraph.splitlines()[1:], "```", ""]
        elif paragraph.strip():
            out += [_escape(" ".join(line.strip() for line in paragraph.splitlines())), ""]
    return out


def _command_section(entry: Entry) -> list[str]:
    command, context = entry.command, entry.context
    lines = [f"## {entry.name}", ""]
    aliases = getattr(command, "aliases", ())
    if aliases:
        lines += ["Aliases: " + ", ".join(f"`{alias}`" for alias in aliases), ""]
    usage = " ".join([context.command_path, *command.collect_usage_pieces(context)])
    lines += ["```text", usage, "```", ""]
    lines += _paragraphs(command.help)
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if arguments:
        lines += ["Arguments:", ""]
        for argument in arguments:
            lines.append(f"- `{_metavar(argument, context)}`: " + _argument_text(argument))
        lines.append("")
    options = [p for p in command.get_params(context) if isinstance(p, click.Option) and not p.hidden]
    options = [o for o in options if "--help" not in o.opts]
    if options:
        lines += ["Options:", ""]
        lines += [_option_line(option, context) for option in options]
        lines.append("")
    if isinstance(command, click.Group):
        children = [(n, command.get_command(context, n)) for n in command.list_commands(context)]
        shown = [(n, c) for n, c in children if c is not None and not c.hidden]
        if shown:
            lines += ["Commands:", ""]
            for name, child in shown:
                assert child is not None
                target = f"{entry.name} {name}"
                lines.append(f"- [`{name}`](#{_anchor(target)}): {_short_help(child)}")
            lines.append("")
    lines += _paragraphs(command.epilog)
    return lines


def _metavar(param: click.Parameter, context: click.Context) -> str:
    return param.make_metavar(context)


def _argument_text(argument: click.Argument) -> str:
    facts = ["required" if argument.required else "optional"]
    if argument.nargs == -1:
        facts.append("any number")
    elif argument.nargs > 1:
        facts.append(f"{argument.nargs} values")
    choices = getattr(argument.type, "choices", None)
    if choices:
        facts.append("one of " + ", ".join(f"`{c}`" for c in choices))
    default = _default(argument)
    if default:
        facts.append(f"default `{default}`")
    if argument.envvar:
        facts.append("env " + ", ".join(f"`{e}`" for e in _envvars(argument)))
    return "; ".join(facts)


def _option_line(option: click.Option, context: click.Context) -> str:
    names = join_options(option.opts)[0]
    if option.secondary_opts:
        names += " / " + join_options(option.secondary_opts)[0]
    if not option.is_flag and not option.count:
        names += f" {_metavar_of_option(option, context)}"
    text = (option.help or "").strip()
    text = _escape(" ".join(line.strip() for line in text.splitlines()))
    facts = []
    choices = getattr(option.type, "choices", None)
    if choices:
        facts.append("one of " + ", ".join(f"`{c}`" for c in choices))
    described = _range(option, context)
    if described:
        facts.append(f"`{described}`")
    default = _default(option)
    if default:
        facts.append(f"default `{default}`")
    if option.multiple:
        facts.append("repeatable")
    envvars = _envvars(option)
    if envvars and not all(e in text for e in envvars):  # not when the help names them already
        facts.append("env " + ", ".join(f"`{e}`" for e in envvars))
    if facts:
        text = f"{text} ({'; '.join(facts)})" if text else "; ".join(facts)
    return f"- `{names}`" + (f": {text}" if text else "")


def _metavar_of_option(option: click.Option, context: click.Context) -> str:
    if option.metavar:
        return option.metavar
    metavar = option.make_metavar(context)
    if getattr(option.type, "choices", None):
        return "CHOICE"  # the choices are listed in the text
    return metavar


def _range(option: click.Option, context: click.Context) -> str:
    extra = getattr(option, "get_help_extra", None)  # click 8.2 and later
    if extra is None:
        return ""
    return str(extra(context).get("range", ""))


def _envvars(param: click.Parameter) -> list[str]:
    envvar = param.envvar
    if envvar is None:
        return []
    return [envvar] if isinstance(envvar, str) else list(envvar)


def _default(param: click.Parameter) -> str:
    if isinstance(param, click.Option) and isinstance(param.show_default, str):
        return param.show_default
    default: Any = param.default
    if isinstance(param, click.Option) and param.is_bool_flag and param.secondary_opts:
        return param.opts[0] if default is True else param.secondary_opts[0]  # --x / --no-x: name the default
    if callable(default) or default is None or default is _UNSET or default is False or default == () or default == "":
        return ""
    if isinstance(param, click.Option) and param.is_flag:
        return "on" if default is True else ""
    if isinstance(default, list | tuple):
        return " ".join(str(item) for item in default)
    return str(default)


# ---- the argparse commands --------------------------------------------------------------------------------------


def _lean_parsers() -> dict[str, argparse.ArgumentParser]:
    from asyncjobs.cli.main import build_parser

    parser = build_parser()
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            choices: dict[str, argparse.ArgumentParser] = action.choices
            return {name: choices[name] for name in LEAN_COMMANDS if name in choices}
    return {}


def _lean_section(name: str, parser: argparse.ArgumentParser) -> list[str]:
    positional = [a for a in parser._actions if not a.option_strings and a.help != argparse.SUPPRESS]
    optional = [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]
    optional = [a for a in optional if not isinstance(a, argparse._HelpAction)]
    usage = " ".join([PROGRAM, name, "[OPTIONS]", *(_lean_metavar(a) for a in positional)])
    lines = [f"## {PROGRAM} {name}", "", "```text", usage, "```", ""]
    lines += _paragraphs(parser.description)
    if positional:
        lines += ["Arguments:", ""]
        lines += [f"- `{_lean_metavar(a)}`: {_lean_help(a, parser)}" for a in positional]
        lines.append("")
    if optional:
        lines += ["Options:", ""]
        for action in optional:
            names = ", ".join(action.option_strings)
            if action.nargs != 0:
                names += f" {_lean_metavar(action)}"
            text = _lean_help(action, parser)
            if action.choices:
                text += f" (one of {', '.join(f'`{c}`' for c in action.choices)})"
            lines.append(f"- `{names}`" + (f": {text}" if text else ""))
        lines.append("")
    lines += _paragraphs(parser.epilog)
    return lines


def _lean_metavar(action: argparse.Action) -> str:
    if isinstance(action.metavar, str):
        return action.metavar
    if action.choices and not action.option_strings:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _lean_help(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    text = action.help or ""
    if "%" in text:
        text = text % {**vars(action), "prog": parser.prog}
    return _escape(" ".join(text.split()))


# ---- the program ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Print the reference, write it to a file (``--write``), or check a file is current (``--check``).

    Returns:
        0, or 1 when ``--check`` finds the file out of date.
    """
    parser = argparse.ArgumentParser(
        prog="python -m asyncjobs.cli.ajc.reference", description="The ajc command reference in Markdown."
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--write", metavar="PATH", type=Path, help="write the reference to PATH")
    where.add_argument("--check", metavar="PATH", type=Path, help="exit 1 if PATH differs from the reference")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        args.write.write_text(text, encoding="utf-8")
        return 0
    if args.check:
        try:
            current = args.check.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"{args.check}: {exc.strerror or exc}: create it with {REGENERATE}", file=sys.stderr)
            return 1
        if current != text:
            print(f"{args.check} is out of date: regenerate it with {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
