"""The ``asyncjobs`` command line."""

from asyncjobs.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
