"""Shared by the command-line suite: ``ajc`` run through its installed entry point against a real nats-server.

``run_ajc`` runs our ``ajc`` console script (next to the test interpreter) in a subprocess, with a NATS CLI context
named ``AJC`` for the test's server under a temporary ``XDG_CONFIG_HOME``, as an operator's machine would have;
``run_go_ajc`` runs upstream's ``ajc`` the same way, and skips the test when the Go binaries are absent.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import orjson
import pytest

from tests.scheduler.conftest import go_peer

__all__ = ["AJC", "Result", "RunAjc", "go_peer", "run_ajc", "run_go_ajc"]

AJC: Final = Path(sys.executable).parent / "ajc"
"""Our console script, installed beside the interpreter running the tests."""
COMMAND_TIMEOUT_S: Final = 60.0


@dataclass(frozen=True)
class Result:
    """A finished command: exit status, stdout and stderr as text."""

    code: int
    out: str
    err: str

    def json(self) -> object:
        """stdout parsed as one JSON document."""
        return orjson.loads(self.out)

    def json_lines(self) -> list[object]:
        """stdout parsed as JSON lines."""
        return [orjson.loads(line) for line in self.out.splitlines() if line.strip()]


class RunAjc(Protocol):
    def __call__(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = ...
    ) -> Awaitable[Result]: ...


async def run_command(
    argv: list[str], *, env: dict[str, str], input: str | None = None, timeout: float = COMMAND_TIMEOUT_S
) -> Result:
    """Run a command to the end (killed after ``timeout`` seconds) and return what it did."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(input.encode() if input is not None else None), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"{argv} did not end in {timeout} s: {out.decode()[-2000:]} {err.decode()[-2000:]}"
        ) from None
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


@pytest.fixture
def config_home(tmp_path: Path, nats_url: str) -> Path:
    """An ``XDG_CONFIG_HOME`` holding the NATS CLI context ``AJC`` for the test's server."""
    home = tmp_path / "config"
    contexts = home / "nats" / "context"
    contexts.mkdir(parents=True)
    (contexts / "AJC.json").write_bytes(orjson.dumps({"url": nats_url}))
    return home


def _env(config_home: Path, extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "AJC_")) and k != "CONTEXT"}
    env.update({"XDG_CONFIG_HOME": str(config_home), "COLUMNS": "250", "TERM": "dumb"})
    env.update(extra or {})
    return env


@pytest.fixture
def run_ajc(config_home: Path) -> RunAjc:
    """Run our ``ajc ARGS...`` against the test's server (through the ``AJC`` context)."""

    async def run(
        *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT_S
    ) -> Result:
        return await run_command([str(AJC), *args], env=_env(config_home, env), input=input, timeout=timeout)

    return run


@pytest.fixture
def run_go_ajc(config_home: Path, go_peer: Path) -> RunAjc:
    """Run upstream's ``ajc ARGS...`` against the test's server (skips without the Go binaries)."""

    async def run(
        *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT_S
    ) -> Result:
        return await run_command(
            [str(go_peer / "ajc"), *args], env=_env(config_home, env), input=input, timeout=timeout
        )

    return run
