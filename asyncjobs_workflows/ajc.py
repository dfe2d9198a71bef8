"""``ajc workflows``: the workflow engine's commands, attached to ``ajc`` through the ``asyncjobs.ajc`` entry point."""

from __future__ import annotations

import click

from asyncjobs.cli.ajc.groups import AliasGroup
from asyncjobs.cli.ajc.session import connection_options


@click.group(cls=AliasGroup, aliases=("wf", "workflow"), help="Submit, inspect and control workflow runs")
@connection_options()
def workflows() -> None:
    pass
