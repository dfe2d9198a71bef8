"""``ajc tasks cron``: the scheduler's commands, attached to ``ajc`` through the ``asyncjobs.ajc`` entry point."""

from __future__ import annotations

import click

from asyncjobs.cli.ajc.groups import AliasGroup
from asyncjobs.cli.ajc.session import connection_options


@click.group(cls=AliasGroup, aliases=("c",), help="Manage Scheduled Tasks")
@connection_options()
def cron() -> None:
    pass
