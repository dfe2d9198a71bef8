"""``ajc tasks``: add, view, list, retry, delete, purge and watch tasks; initialize and configure the task store."""

from __future__ import annotations

import click

from asyncjobs.cli.ajc.groups import AliasGroup
from asyncjobs.cli.ajc.session import connection_options


@click.group(cls=AliasGroup, aliases=("t", "task"), help="Manage Tasks")
@connection_options()
def tasks() -> None:
    pass
