"""Upstream's binaries driven from tests: one-shot ``ajgo``/``ajc`` commands and a long-running ``ajgo scheduler``.

The binaries' directory comes from the ``go_peer`` fixture (tests/scheduler/conftest.py). ``ajgo`` prints JSON lines
on stdout; with ``--verbose`` it also logs upstream's messages on stderr, which is where Go's scheduler says when it
leads ("Became leader", "Leadership lost") and which tasks it creates.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from pathlib import Path
from typing import Any, Final

import orjson

from asyncjobs.testing import eventually

__all__ = ["GO_BECAME_LEADER", "GO_LOST_LEADERSHIP", "GoScheduler", "ajc", "ajgo"]

COMMAND_TIMEOUT_S: Final = 30.0
GO_BECAME_LEADER: Final = "Became leader"
GO_LOST_LEADERSHIP: Final = "Leadership lost"
_CREATED = re.compile(r"Creating new task (?P<schedule>\S+) for scheduled task (?P<id>\S+) on schedule")
_CONTEXT: Final = "asyncjobs-test"


async def _run(args: list[str], env: dict[str, str] | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT_S)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited with {proc.returncode}: {err.decode()[-2000:]}")
    return out.decode()


async def ajgo(go_peer: Path, url: str, command: str, *args: str) -> list[dict[str, Any]]:
    """Run ``ajgo COMMAND --url URL ARGS...`` to the end; returns its JSON lines."""
    out = await _run([str(go_peer / "ajgo"), command, "--url", url, *args])
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


async def ajc(go_peer: Path, url: str, config_home: Path, *args: str) -> str:
    """Run upstream's ``ajc`` with a NATS CLI context for ``url`` kept under ``config_home``; returns its stdout."""
    contexts = config_home / "nats" / "context"
    contexts.mkdir(parents=True, exist_ok=True)
    (contexts / f"{_CONTEXT}.json").write_bytes(orjson.dumps({"url": url}))
    env = {**os.environ, "XDG_CONFIG_HOME": str(config_home)}
    return await _run([str(go_peer / "ajc"), "--context", _CONTEXT, *args], env=env)


class GoScheduler:
    """``ajgo scheduler --verbose`` in a subprocess, every line kept with the wall time (seconds) it arrived."""

    def __init__(self, go_peer: Path, url: str, *, queue: str, name: str, run_for_s: float) -> None:
        self.name = name
        self.args = [str(go_peer / "ajgo"), "scheduler", "--url", url, "--queue", queue, "--bind", "--name", name]
        self.args += ["--for", f"{run_for_s:g}s", "--verbose"]
        self.events: list[dict[str, Any]] = []
        """stdout: ``{"event": "ready"}`` at the start, ``{"event": "done"}`` at the end."""
        self.log: list[tuple[float, str]] = []
        """stderr: upstream's log lines."""
        self.stopped_at: float | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [asyncio.create_task(self._read_events(self.proc.stdout)),
                         asyncio.create_task(self._read_log(self.proc.stderr))]  # fmt: skip
        await eventually(lambda: any(e.get("event") == "ready" for e in self.events), message="ajgo scheduler ready")

    async def _read_events(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            if line.strip():
                self.events.append(orjson.loads(line))

    async def _read_log(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.log.append((time.time(), line.decode(errors="replace").rstrip()))

    def logged(self, text: str) -> list[float]:
        """When each log line containing ``text`` arrived."""
        return [at for at, line in self.log if text in line]

    def lines(self, text: str) -> list[str]:
        return [line for _, line in self.log if text in line]

    @property
    def created(self) -> dict[str, float]:
        """The ids of the tasks Go logged creating, with when it logged each."""
        found = {}
        for at, line in self.log:
            match = _CREATED.search(line)
            if match:
                found[match["id"]] = at
        return found

    def leading(self, end: float) -> list[tuple[float, float]]:
        """Go's announced leadership terms: from each "Became leader" to the next loss or exit (or ``end``)."""
        terms, start = [], None
        for at, line in self.log:
            if GO_BECAME_LEADER in line:
                start = at
            elif GO_LOST_LEADERSHIP in line and start is not None:
                terms.append((start, at))
                start = None
        if start is not None:
            terms.append((start, self.stopped_at or end))
        return terms

    async def stop(self, sig: int = signal.SIGTERM) -> float:
        """Signal it (SIGTERM: upstream's graceful stop, which leaves the election key to expire); returns when."""
        stopped = time.time()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), COMMAND_TIMEOUT_S)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for reader in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if self.stopped_at is None:
            self.stopped_at = stopped
        return stopped

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)
