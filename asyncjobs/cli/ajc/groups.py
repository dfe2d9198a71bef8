"""Command groups whose commands have aliases (``tasks ls`` for ``tasks list``), as upstream's ``ajc`` has."""

from __future__ import annotations

import importlib
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
        self._lazy: dict[str, tuple[str, Callable[[click.Command], None] | None]] = {}
        self._loaders: list[Callable[[], None]] = []

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(cmd, name)
        for alias in getattr(cmd, "aliases", ()):
            self._alias_of[alias] = name or cmd.name or ""

    def add_lazy(
        self,
        name: str,
        target: str,
        aliases: Sequence[str] = (),
        *,
        on_load: Callable[[click.Command], None] | None = None,
    ) -> None:
        """Attach the command at ``target`` (``module:attribute``), imported only when it is run or listed.

        An operator's ``ajc queues ls`` then loads neither the scheduler nor the workflows, nor the other groups.
        ``on_load`` is called with the command once it is imported (to attach commands under it).
        """
        self._lazy[name] = (target, on_load)
        self._alias_of.update(dict.fromkeys(aliases, name))

    def add_loader(self, loader: Callable[[], None]) -> None:
        """Run ``loader`` (which attaches commands) before listing, or when a name is not found."""
        self._loaders.append(loader)

    def _run_loaders(self) -> None:
        loaders, self._loaders = self._loaders, []
        for loader in loaders:
            loader()

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._run_loaders()
        return sorted({*self.commands, *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        name = self._alias_of.get(cmd_name, cmd_name)
        if name not in self.commands and name in self._lazy:
            target, on_load = self._lazy.pop(name)
            module, _, attribute = target.partition(":")
            command: click.Command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, name)
            if on_load is not None:
                on_load(command)
        if name not in self.commands and self._loaders:
            self._run_loaders()
            name = self._alias_of.get(cmd_name, cmd_name)
        return super().get_command(ctx, name)

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
