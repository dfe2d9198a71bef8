"""Command groups whose commands have aliases (``tasks ls`` for ``tasks list``), as upstream's ``ajc`` has."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from asyncjobs.cli.ajc.session import connection_options


class AliasCommand(click.Command):
    """A command that also answers to ``aliases``."""

    def __init__(self, *args: Any, aliases: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases = tuple(aliases)


class AliasGroup(click.Group):
    """A group whose commands answer to their aliases too; ``--help`` lists the aliases beside each name."""

    def __init__(self, *args: Any, aliases: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases = tuple(aliases)
        self._alias_of: dict[str, str] = {}

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(cmd, name)
        for alias in getattr(cmd, "aliases", ()):
            self._alias_of[alias] = name or cmd.name or ""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self._alias_of.get(cmd_name, cmd_name))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        _, cmd, rest = super().resolve_command(ctx, args)
        return (cmd.name if cmd else None), cmd, rest  # the real name, so help and errors show it

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            aliases = getattr(cmd, "aliases", ())
            label = f"{name} ({', '.join(aliases)})" if aliases else name
            rows.append((label, cmd.get_short_help_str(limit=formatter.width - 6 - len(label))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], click.Command]:  # type: ignore[override]
        """A leaf command (``aliases=(...)`` allowed) with the connection flags and ``--debug``."""
        make = super().command
        kwargs.setdefault("cls", AliasCommand)

        def decorate(function: Callable[..., Any]) -> click.Command:
            cmd: click.Command = make(*args, **kwargs)(connection_options()(function))
            return cmd

        return decorate

    def group(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], click.Group]:  # type: ignore[override]
        """A sub-group (``aliases=(...)`` allowed) whose commands have aliases too."""
        make = super().group
        kwargs.setdefault("cls", AliasGroup)

        def decorate(function: Callable[..., Any]) -> click.Group:
            grp: click.Group = make(*args, **kwargs)(connection_options()(function))
            return grp

        return decorate
