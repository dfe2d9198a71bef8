"""Shared by the scheduler suite: clients bound to the per-test server, and the Go peer binaries for interop tests.

The Go peer (upstream's library built into ``ajgo``) is found through ``ASYNCJOBS_GO_PEER`` (a directory holding
``ajgo``), or by running ``/work/shared/go-peer/setup`` where it exists; tests that need it skip otherwise.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Final

import pytest

from tests.core.conftest import ClientFactory, make_client

__all__ = ["GO_PEER_ENV", "ClientFactory", "go_peer", "make_client"]

GO_PEER_ENV: Final = "ASYNCJOBS_GO_PEER"
GO_PEER_SETUP: Final = Path("/work/shared/go-peer/setup")
SETUP_TIMEOUT_S: Final = 120.0


def _find_go_peer() -> tuple[Path | None, str]:
    """The directory holding ``ajgo``, or ``None`` and why it was not found."""
    configured = os.environ.get(GO_PEER_ENV)
    if configured:
        folder = Path(configured)
        if (folder / "ajgo").is_file():
            return folder, ""
        return None, f"{GO_PEER_ENV}={configured} has no ajgo binary"
    if not GO_PEER_SETUP.is_file():
        return None, f"set {GO_PEER_ENV} to a directory holding ajgo ({GO_PEER_SETUP} does not exist)"
    try:
        done = subprocess.run([str(GO_PEER_SETUP)], capture_output=True, text=True, timeout=SETUP_TIMEOUT_S, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{GO_PEER_SETUP} failed: {exc}"
    folder = Path(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else None
    if folder is None or not (folder / "ajgo").is_file():
        return None, f"{GO_PEER_SETUP} printed no directory holding ajgo: {done.stdout!r}"
    return folder, ""


@pytest.fixture(scope="session")
def go_peer() -> Path:
    """The directory holding upstream's ``ajgo`` driver; skips the test when it cannot be found."""
    folder, why = _find_go_peer()
    if folder is None:
        pytest.skip(f"Go peer binaries not found: {why}")
    return folder
