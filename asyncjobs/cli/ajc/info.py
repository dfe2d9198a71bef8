"""``ajc info``: the task store, the configuration and election buckets, and every queue."""

from __future__ import annotations

import click

from asyncjobs.cli.ajc.session import connection_options


@click.command(help="Shows general Task and Queue information")
@connection_options()
def info() -> None:
    raise NotImplementedError
