"""``ajc queues``: create, list, inspect, configure, purge and delete work queues."""

from __future__ import annotations

import click

from asyncjobs.cli.ajc.groups import AliasGroup
from asyncjobs.cli.ajc.session import connection_options


@click.group(cls=AliasGroup, aliases=("q", "queue"), help="Manage Work Queues")
@connection_options()
def queues() -> None:
    pass
