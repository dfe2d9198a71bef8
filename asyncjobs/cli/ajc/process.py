"""``ajc tasks process``: process a queue's tasks of one type with a shell command, a remote handler or a router."""

from __future__ import annotations

import click

from asyncjobs.cli.ajc.session import connection_options


@click.command(help="Process Tasks from a given queue")
@connection_options()
def process() -> None:
    raise NotImplementedError
