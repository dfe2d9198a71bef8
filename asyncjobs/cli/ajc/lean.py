"""``ajc worker`` and ``ajc keygen``: the standard-library commands, listed in the tree and run by their own parser.

``ajc worker ...`` and ``ajc keygen ...`` normally never reach click (see :func:`asyncjobs.cli.main`); these entries
list them in ``ajc --help`` and the reference, and forward to them when flags come first (``ajc --debug worker``).
"""

from __future__ import annotations

import click

SETTINGS = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


def _forward(name: str, args: list[str]) -> None:
    from asyncjobs.cli.main import main

    raise click.exceptions.Exit(main([name, *args]))


@click.command(
    "worker",
    context_settings=SETTINGS,
    add_help_option=False,
    short_help="Run a router's handlers on a queue",
    help="Run a router's handlers (MODULE:ATTR) on a queue as a service, in one process or several "
    "(`ajc worker --help` lists its flags)",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def worker(args: tuple[str, ...]) -> None:
    _forward("worker", list(args))


@click.command(
    "keygen",
    context_settings=SETTINGS,
    add_help_option=False,
    short_help="Make a key pair for task signatures",
    help="Make an ed25519 key pair for task signatures (`ajc keygen --help` lists its flags)",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def keygen(args: tuple[str, ...]) -> None:
    _forward("keygen", list(args))
