"""The ``ajc`` command tree: upstream's commands, names, aliases and flags, plus workflows and a development server.

The core's groups live in modules beside this one; the scheduler's (``tasks cron``) and the workflows' commands are
attached through the ``asyncjobs.ajc`` entry points. :func:`main` runs the tree.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, version
from typing import Final

import click

from asyncjobs.cli.ajc.groups import AliasGroup
from asyncjobs.cli.ajc.session import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, Session, connection_options, fail

PLUGIN_GROUP: Final = "asyncjobs.ajc"
"""Entry points that add commands: the name is where (``tasks.cron``), the value a click command or group. The
scheduler and the workflows packages attach theirs this way, so the core never imports an extension."""


def _version() -> str:
    try:
        return version("asyncjobs")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout that is not installed
        return "unknown"


@click.group(
    cls=AliasGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    help="Choria Asynchronous Jobs: inspect and manage queues, tasks, schedules and workflows on NATS JetStream.",
    epilog="Connection flags and --debug may also follow the command. Run `ajc COMMAND --help` for a command's flags.",
)
@click.version_option(_version(), "--version", prog_name="ajc", message="%(version)s")
@connection_options(root=True)
@click.pass_context
def ajc(ctx: click.Context) -> None:
    ctx.ensure_object(Session)


CORE_COMMANDS: Final = (
    # name, where it is, aliases (a test checks these are the commands' own)
    ("info", "asyncjobs.cli.ajc.info:info", ()),
    ("tasks", "asyncjobs.cli.ajc.tasks:tasks", ("t", "task")),
    ("queues", "asyncjobs.cli.ajc.queues:queues", ("q", "queue")),
    ("dev-server", "asyncjobs.cli.ajc.devserver:dev_server", ()),
    ("worker", "asyncjobs.cli.ajc.lean:worker", ()),
    ("keygen", "asyncjobs.cli.ajc.lean:keygen", ()),
)
TASK_COMMANDS: Final = (("process", "asyncjobs.cli.ajc.process:process", ()),)


def _attach() -> None:
    for name, target, aliases in CORE_COMMANDS:
        ajc.add_lazy(name, target, aliases, on_load=_group_loaded(name))
    ajc.add_loader(_plugins_under(ajc, ""))


def _group_loaded(path: str) -> Callable[[click.Command], None]:
    """Attach, once a core group is imported, the commands that live under it (``tasks process``, plugins)."""

    def attach(command: click.Command) -> None:
        if not isinstance(command, AliasGroup):
            return
        for name, target, aliases in TASK_COMMANDS if path == "tasks" else ():
            command.add_lazy(name, target, aliases)
        command.add_loader(_plugins_under(command, path))

    return attach


def _plugins_under(group: click.Group, path: str) -> Callable[[], None]:
    """A loader that attaches the plugins whose entry point names ``path`` as their parent."""

    def load() -> None:
        for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
            parent, _, name = entry.name.rpartition(".")
            if parent == path:
                _mount(group, name, entry)

    return load


def _mount(group: click.Group, name: str, entry: EntryPoint) -> None:
    """Attach an extension's command (``tasks.cron`` is ``ajc tasks cron``), or a stand-in naming its extra."""
    try:
        command = entry.load()
    except ImportError as exc:  # the extension's own dependencies are not installed
        command = _missing(name, entry.value.split(".", 1)[0].split(":", 1)[0], exc)
    if isinstance(command, click.Command):
        group.add_command(command, name)


def _missing(name: str, package: str, exc: ImportError) -> click.Command:
    extra = package.removeprefix("asyncjobs_")

    @click.command(name, help=f"(needs the {extra} extra: pip install 'asyncjobs[{extra}]')",
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})  # fmt: skip
    def unavailable() -> None:
        fail(f"`{name}` needs {exc.name or package}, from the {extra} extra: pip install 'asyncjobs[{extra}]'",
             status=EXIT_USAGE)  # fmt: skip

    return unavailable


_attach()


def main(argv: list[str] | None = None) -> int:
    """Run ``ajc``; returns the exit status."""
    try:
        # Without standalone mode click returns an Exit's status instead of calling sys.exit, and raises the rest.
        status = ajc.main(args=argv, prog_name="ajc", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # `ajc`, `ajc tasks`: the help, and a usage status
        click.echo(exc.format_message(), err=True)
        return exc.exit_code
    except click.UsageError as exc:  # one line, as every other error (click would print the usage first)
        where = exc.ctx.command_path if exc.ctx is not None else "ajc"
        click.echo(f"ajc: error: {exc.format_message()} (see `{where} --help`)", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"ajc: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("ajc: interrupted", err=True)
        return EXIT_INTERRUPTED
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_FAILED)
    return status if isinstance(status, int) else 0
