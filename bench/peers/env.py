"""The peer benchmark's environment: one virtualenv per system, a Redis server, and the adapter processes.

Nothing here imports a peer library: the adapters run in their own virtualenvs (``.bench/venvs/<name>``) and talk to
the orchestrator through one JSON line on stdout. Redis is reached with the few RESP commands the orchestrator
needs (:class:`Resp`), so the project's own environment needs no Redis client.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final, NamedTuple, Self

ROOT: Final = Path(__file__).resolve().parents[2]
ADAPTERS: Final = Path(__file__).resolve().parent / "adapters"
VENVS: Final = ROOT / ".bench" / "venvs"
PROJECT_PLACEHOLDER: Final = "<project>"
"""Stands in an adapter's ``REQUIREMENTS`` for the repository root (installed editable)."""
PIP_TIMEOUT_S: Final = 900.0
APT_TIMEOUT_S: Final = 600.0
READY_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 15.0
TAIL_LINES: Final = 20
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


class EnvError(Exception):
    """A virtualenv, a server or an adapter process could not do its part; the message says which and why."""


# ---- virtualenvs -------------------------------------------------------------------------------------------------


def adapter_path(name: str) -> Path:
    """The adapter script of system ``name``."""
    return ADAPTERS / f"peer_{name}.py"


def read_requirements(path: Path) -> list[str]:
    """The adapter's module-level ``REQUIREMENTS`` list, read without importing it (its imports are not here).

    Raises:
        EnvError: the file has no ``REQUIREMENTS = [...]`` list of strings.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, expr = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, expr = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == "REQUIREMENTS":
            value = ast.literal_eval(expr)
            if isinstance(value, list) and all(isinstance(item, str) for item in value):
                return [_resolve(item) for item in value]
    raise EnvError(f"{path} has no REQUIREMENTS = [...] list of pinned requirements")


def _resolve(requirement: str) -> str:
    # "<project>" is the working tree; "<project>[extra]" the working tree with that extra.
    if requirement.startswith(PROJECT_PLACEHOLDER):
        return str(ROOT) + requirement.removeprefix(PROJECT_PLACEHOLDER)
    return requirement


def _pip_args(requirements: list[str]) -> list[str]:
    # The project itself goes in editable, so the benchmark measures the working tree.
    args: list[str] = []
    for item in requirements:
        args += ["-e", item] if item.startswith(str(ROOT)) else [item]
    return args


def ensure_venv(name: str, requirements: list[str]) -> Path:
    """Create (or reuse) ``.bench/venvs/<name>`` with ``requirements`` installed; returns its Python.

    The install is skipped while the stamp file matches the requirements and this Python's version.

    Raises:
        EnvError: the virtualenv could not be created or pip failed (the message ends with pip's output).
    """
    venv = VENVS / name
    python = venv / "bin" / "python"
    stamp = venv / ".peers-stamp"
    stamped = [sys.version, *requirements]
    if str(ROOT) in requirements:  # the project's own dependencies may change under the same requirement line
        stamped.append((ROOT / "pyproject.toml").read_text())
    want = hashlib.sha256("\n".join(stamped).encode()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return python
    if not python.exists():
        venv.parent.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "venv", "--clear", str(venv)], f"creating the {name} virtualenv", 120.0)
    command = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *_pip_args(requirements)]
    _run(command, f"installing {' '.join(requirements)} into {venv}", PIP_TIMEOUT_S)
    stamp.write_text(want + "\n")
    return python


def _run(command: list[str], what: str, timeout_s: float) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        raise EnvError(f"{what} failed (exit {done.returncode}):\n{_tail(done.stdout + done.stderr)}")


def _tail(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and "is ignored: it is neither" not in line]
    return "\n".join(lines[-TAIL_LINES:]) or "(no output)"


def clean_env(python: Path) -> dict[str, str]:
    """The environment for a process of the virtualenv of ``python``: its ``bin`` first, no other venv leaking in."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    if python.parent.parent.joinpath("pyvenv.cfg").exists():
        env["VIRTUAL_ENV"] = str(python.parent.parent)
    return env


# ---- Redis -------------------------------------------------------------------------------------------------------


def ensure_redis_server(*, install: bool) -> str:
    """The path of ``redis-server``, installed with apt-get when missing and ``install`` is true.

    Raises:
        EnvError: it is missing and could not (or was not to) be installed.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    if not install:
        raise EnvError("redis-server is not installed: apt-get install -y redis-server")
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "redis-server"]):
        _run(command, " ".join(command), APT_TIMEOUT_S)
    found = shutil.which("redis-server")
    if not found:
        raise EnvError("apt-get installed redis-server, yet it is not on PATH")
    return found


def redis_version() -> str:
    """``redis-server --version``, as it prints it."""
    found = shutil.which("redis-server")
    if not found:
        raise EnvError("redis-server is not installed")
    return subprocess.run([found, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout.strip()


def free_port() -> int:
    """A loopback port free right now (redis-server cannot pick its own: port 0 disables TCP)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Resp:
    """The few Redis commands the orchestrator sends, over one connection (RESP2), one command at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> Self:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def command(self, *args: str | int) -> Any:
        """Send one command and return its reply (bytes, int, str, None or a list of them).

        Raises:
            EnvError: Redis answered with an error.
        """
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        async with self._lock:
            self._writer.write(b"".join(out))
            await self._writer.drain()
            return await self._reply()

    async def _reply(self) -> Any:
        line = await self._reader.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise EnvError(f"redis: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else (await self._reader.readexactly(size + 2))[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [await self._reply() for _ in range(size)]
        raise EnvError(f"redis: unexpected reply {line!r}")

    execute_command = command
    """The name redis-py gives it, so a handler can use either client."""

    async def count(self, key: str) -> int:
        """The integer at ``key`` (0 when missing)."""
        value = await self.command("GET", key)
        return int(value) if value is not None else 0

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


class RedisServer:
    """A throw-away redis-server on a loopback port, without persistence."""

    def __init__(self, binary: str) -> None:
        self._binary = binary
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._dir: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def __aenter__(self) -> Self:
        self._dir = tempfile.mkdtemp(prefix="peers-redis-")
        self.port = free_port()
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._proc = await asyncio.create_subprocess_exec(
            self._binary, *args, "--dir", self._dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                client = await Resp.connect(self.port)
                await client.command("PING")
                await client.close()
                return self
            except (OSError, EnvError):
                if self._proc.returncode is not None or time.monotonic() > deadline:
                    await self.__aexit__(None, None, None)
                    raise EnvError(f"redis-server did not start on port {self.port}") from None
                await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self._proc.wait()
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


# ---- adapter processes -------------------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _tree(root: int) -> list[int]:
    """Every descendant of process ``root`` (``root`` itself not included)."""
    tree = _children()
    found, todo = [], list(tree.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += tree.get(pid, [])
    return found


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process ``pid`` used so far, or 0 once it is gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return 0.0


def tree_cpu_seconds(root: int) -> float:
    """The CPU time used so far by every descendant of process ``root`` (``root`` itself not counted)."""
    return sum(cpu_seconds(pid) for pid in _tree(root))


class Memory(NamedTuple):
    """The memory of a group of processes, in bytes."""

    rss: int
    """Resident set sizes added up: a page two processes share counts twice."""
    pss: int
    """Proportional set sizes added up: a page shared by n processes counts 1/n in each, so the sum is what the
    group holds, without double counting."""


def tree_memory(root: int) -> Memory:
    """The memory of every descendant of process ``root`` (``root`` itself not counted)."""
    rss = pss = 0
    for pid in _tree(root):
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
    return Memory(rss, pss)


async def run_json(argv: list[str], *, env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """Run an adapter command to its end and return the JSON object on the last line of its stdout.

    Raises:
        EnvError: it failed, printed no JSON, or ran past ``timeout_s`` (then it is killed).
    """
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ADAPTERS, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        raise EnvError(f"{' '.join(argv[1:3])} did not finish within {timeout_s:.0f}s") from None
    lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise EnvError(f"{' '.join(argv[1:3])} failed (exit {proc.returncode}):\n{_tail(err.decode(errors='replace'))}")
    result = json.loads(lines[-1])
    if not isinstance(result, dict):
        raise EnvError(f"{' '.join(argv[1:3])} printed {lines[-1]!r}, not a JSON object")
    return result


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class WorkerProcess:
    """An adapter's ``worker`` command: started in its own session, stopped with SIGTERM, then SIGKILL."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self._argv = argv
        self._env = env
        self._log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None
        self.ready: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The adapter's exit status; None while it runs."""
        return None if self._proc is None else self._proc.returncode

    def memory(self) -> Memory:
        return tree_memory(self.pid)

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    async def __aenter__(self) -> Self:
        log = self._log_path.open("ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self._argv, cwd=ADAPTERS, env=self._env, stdout=subprocess.PIPE, stderr=log, start_new_session=True
            )
        finally:
            log.close()
        assert self._proc.stdout is not None
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                while not self.ready:
                    line = await self._proc.stdout.readline()
                    if not line:
                        raise EnvError(f"the worker exited before it was ready; see {self._log_path}")
                    if line.startswith(b"{"):
                        self.ready = json.loads(line)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await proc.communicate()
            except TimeoutError:
                pass
        _kill_group(proc.pid)  # whatever the adapter left behind
        if proc.returncode is None:
            await proc.wait()
