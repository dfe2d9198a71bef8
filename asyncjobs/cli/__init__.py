"""The command line: ``ajc`` (also ``asyncjobs`` and ``python -m asyncjobs``).

``worker`` and ``keygen`` are parsed with argparse and the standard library only, so that a worker supervisor stays
a bare interpreter's size; every other command is the ``ajc`` tree (:mod:`asyncjobs.cli.ajc`), built with click and
rich from the ``cli`` extra.
"""

from __future__ import annotations

import sys
from typing import Final

from asyncjobs.cli.main import build_parser

__all__ = ["build_parser", "main"]

LEAN_COMMANDS: Final = frozenset({"worker", "keygen"})
EXIT_USAGE: Final = 2


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in LEAN_COMMANDS:
        from asyncjobs.cli.main import main as lean_main

        return lean_main(args)
    try:
        from asyncjobs.cli.ajc.app import main as ajc_main
    except ModuleNotFoundError as exc:
        if exc.name not in ("click", "rich"):
            raise
        print(
            f"ajc: error: the command line needs {exc.name}, from the cli extra: pip install 'asyncjobs[cli]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return ajc_main(args)
