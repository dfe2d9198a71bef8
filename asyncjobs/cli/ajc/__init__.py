"""``ajc``: the operator's command line, with upstream's command tree (click for the commands, rich for output)."""

from asyncjobs.cli.ajc.app import ajc, main

__all__ = ["ajc", "main"]
