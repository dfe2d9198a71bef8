"""The ``asyncjobs`` command (also ``python -m asyncjobs``): the only place that configures logging and signals."""

from __future__ import annotations

import argparse
import sys

from asyncjobs.cli import keygen, worker


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser, with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="asyncjobs",
        description="asyncjobs: a durable job queue on NATS JetStream.",
        epilog="Run `asyncjobs COMMAND --help` for the options of a command.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    worker.add_parser(commands)
    keygen.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args_list = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(args_list)
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return worker.EXIT_USAGE
    status: int = run(args, args_list)
    return status
