"""``asyncjobs keygen``: make an ed25519 key pair for task signatures (Go-compatible hex files)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Final

from asyncjobs.errors import ConfigurationError

EXIT_USAGE: Final = 2


def add_parser(commands: Any) -> None:
    """Add the ``keygen`` command to an argparse sub-parser collection."""
    parser = commands.add_parser(
        "keygen",
        help="make a key pair for task signatures",
        description=(
            "Write an ed25519 key pair as hex: DIR/signing.seed (mode 0600: producers sign with it, "
            "signing_seed_file) and DIR/signing.pub (workers verify with it, verification_key_file)."
        ),
    )
    parser.add_argument("--out", "-o", default=".", metavar="DIR", help="directory for the two files (default .)")
    parser.add_argument("--force", action="store_true", help="replace existing key files")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the ``keygen`` command; returns the exit status."""
    from asyncjobs.signing import write_key_pair  # here: a worker supervisor parses the command line too

    try:
        files = write_key_pair(args.out, overwrite=args.force)
    except ConfigurationError as exc:
        print(f"asyncjobs keygen: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"seed (keep secret, for producers): {files.seed_file}")
    print(f"public key (for workers):          {files.public_key_file}")
    print(f"public key hex: {files.public_key_hex}")
    return 0
