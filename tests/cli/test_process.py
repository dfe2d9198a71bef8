"""``ajc tasks process``: shell commands, remote handlers and routers processing a queue, clean stops, errors.

Tasks go in and are read back through the Python API; the command runs as a subprocess, either to its end
(``--count``/``--until-idle``) or in the background until the test stops it with a signal.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import pytest

import asyncjobs
from asyncjobs.errors import TaskNotFound
from asyncjobs.testing import eventually
from tests.cli.conftest import AJC, Result, RunAjc

APPS: Final = Path(__file__).parent / "apps"
STOP_TIMEOUT_S: Final = 30.0
TYPE_SCRIPT: Final = '#!/bin/sh\ngrep -o \'"type":"[^"]*"\' "$CHORIA_AJ_TASK"\n'
"""Prints the task's type from the task JSON in $CHORIA_AJ_TASK (``"type":"t:ok"``)."""


def script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(body)
    path.chmod(0o755)
    return path


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[asyncjobs.Client]:
    """A client bound to DEFAULT (created), as a producer would be."""
    async with await asyncjobs.connect(nats_url, queue="DEFAULT") as c:
        yield c


class Background:
    """Our (or upstream's) ``ajc`` running in the background; its stderr is collected as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.err = ""
        self._out = asyncio.create_task(self._read(proc.stdout))
        self._err = asyncio.create_task(self._read(proc.stderr, keep=True))

    async def _read(self, stream: asyncio.StreamReader | None, *, keep: bool = False) -> str:
        assert stream is not None
        text = ""
        while line := await stream.readline():
            text += line.decode()
            if keep:
                self.err = text
        return text

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    async def wait(self) -> Result:
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"ajc did not stop: {self.err[-3000:]}") from None
        out, err = await self._out, await self._err
        assert self.proc.returncode is not None
        return Result(self.proc.returncode, out, err)


@pytest.fixture
def ajc_env(config_home: Path) -> dict[str, str]:
    """The environment ``run_ajc`` gives ``ajc``: the test's server as the ``AJC`` context."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "AJC_")) and k != "CONTEXT"}
    env.update({"XDG_CONFIG_HOME": str(config_home), "COLUMNS": "250", "TERM": "dumb"})
    return env


@pytest.fixture
async def start_ajc(ajc_env: dict[str, str]) -> AsyncIterator[Callable[..., Awaitable[Background]]]:
    started: list[Background] = []
    env = ajc_env

    async def start(*args: str, program: Path = AJC) -> Background:
        proc = await asyncio.create_subprocess_exec(
            str(program), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
        started.append(Background(proc))
        return started[-1]

    yield start
    for bg in started:
        if bg.proc.returncode is None:
            bg.proc.kill()
            await bg.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def state_of(client: asyncjobs.Client, task_id: str, state: str) -> asyncjobs.Task:
    async def reached() -> asyncjobs.Task:
        task = await client.get_task(task_id)
        assert task.state == state, (task.state, task.last_err)
        return task

    return await eventually(reached, timeout=15)


# ---- handlers ----------------------------------------------------------------------------------------------------


async def test_command_completes_the_task_with_its_output_as_result(
    run_ajc: RunAjc, client: asyncjobs.Client, tmp_path: Path
) -> None:
    cmd = script(tmp_path, "h.sh", TYPE_SCRIPT)
    task = await client.enqueue(asyncjobs.Task("t:ok", "hello"))
    # Upstream's environment variables stand in for the positional arguments.
    env = {"AJC_TYPE": "t:ok", "AJC_QUEUE": "DEFAULT", "AJC_CONCURRENCY": "2", "AJC_COMMAND": str(cmd)}
    result = await run_ajc("tasks", "process", "--count", "1", env=env)
    assert result.code == 0, result.err
    done = await client.get_task(task.id)
    assert done.state == "complete"
    assert done.result is not None and done.result.payload == '"type":"t:ok"\n'  # a JSON string, as Go stores it
    assert f'Running task {task.id} try 1 using "{cmd}"' in result.err
    assert f'Task {task.id} completed using "{cmd}" after ' in result.err
    assert "and 1 tries with 14 B payload" in result.err
    assert "processed 1 tasks, 0 failed" in result.err
    assert "Traceback" not in result.err


async def test_failing_command_leaves_the_task_in_retry_and_sigterm_stops(
    start_ajc: Callable[..., Awaitable[Background]], client: asyncjobs.Client, tmp_path: Path
) -> None:
    cmd = script(tmp_path, "f.sh", "#!/bin/sh\necho nope\nexit 3\n")
    task = await client.enqueue(asyncjobs.Task("t:fail", "x"))
    ajc = await start_ajc("tasks", "process", "t:fail", "DEFAULT", "1", str(cmd), "--retry-policy", "1m")
    failed = await state_of(client, task.id, "retry")
    assert failed.last_err == "execution failed: exit status 3"  # upstream's text
    ajc.signal(signal.SIGTERM)
    result = await ajc.wait()
    assert result.code == 0, result.err
    assert "received SIGTERM: stopping" in result.err
    assert f'Running "{cmd}" failed: "nope\\n"' in result.err  # the command's output, quoted as upstream logs it
    assert re.search(r"processed (\d+) tasks, \1 failed", result.err), result.err
    delay = re.search(f"task {task.id} \\(t:fail\\) failed on try 1, retrying in ([0-9.]+)s", result.err)
    assert delay is not None and float(delay[1]) <= 60, result.err  # the 1m policy (the default waits 1-10 min)
    assert "Traceback" not in result.err
    assert (await client.get_task(task.id)).state == "retry"


async def test_remote_calls_a_python_request_reply_handler(
    run_ajc: RunAjc, client: asyncjobs.Client, nats_url: str
) -> None:
    async def answer(task: asyncjobs.Task) -> bytes:
        return f"remote saw {task.payload_json()}".encode()

    sub = await asyncjobs.serve_remote_handler(client.nc, "rr:echo", answer)
    try:
        task = await client.enqueue(asyncjobs.Task("rr:echo", "hi"))
        result = await run_ajc("tasks", "process", "rr:echo", "DEFAULT", "1", "--remote", "--count", "1")
    finally:
        await sub.unsubscribe()
    assert result.code == 0, result.err
    done = await client.get_task(task.id)
    assert done.state == "complete"
    assert done.result is not None and done.result.payload == "cmVtb3RlIHNhdyBoaQ=="  # base64 of the raw reply
    assert f"Running task {task.id} try 1 using request-reply subject CHORIA_AJ.H.T.rr:echo" in result.err


@pytest.mark.parametrize(
    ("args", "served"),
    [
        pytest.param(("*", "DEFAULT", "2", "process_app:router"), {"py:upper", "py:length"}, id="positional-all"),
        pytest.param(("py:up", "DEFAULT", "1", "--router", "process_app:make_router"), {"py:upper"}, id="flag-prefix"),
    ],
)
async def test_router_by_import_path(
    run_ajc: RunAjc, client: asyncjobs.Client, args: tuple[str, ...], served: set[str]
) -> None:
    upper = await client.enqueue(asyncjobs.Task("py:upper", "abc"))
    length = await client.enqueue(asyncjobs.Task("py:length", "abcd"))
    result = await run_ajc("tasks", "process", *args, "--app-dir", str(APPS), "--count", str(len(served)))
    assert result.code == 0, result.err
    assert f"task types {', '.join(sorted(served, key=len, reverse=True))}" in result.err
    got = {t.type: t for t in [await client.get_task(upper.id), await client.get_task(length.id)]}
    assert got["py:upper"].state == "complete"
    assert got["py:upper"].result is not None and got["py:upper"].result.payload == "ABC"
    if "py:length" in served:
        assert got["py:length"].result is not None and got["py:length"].result.payload == 4
    else:  # not served here: it fails with no handler and waits for a retry, as upstream's would
        assert got["py:length"].state in ("new", "retry")


@pytest.mark.parametrize("flag", [("--discard-complete",), ("--discard", "complete")], ids=["upstream", "discard"])
async def test_discard_deletes_completed_tasks(
    run_ajc: RunAjc, client: asyncjobs.Client, tmp_path: Path, flag: tuple[str, ...]
) -> None:
    cmd = script(tmp_path, "h.sh", TYPE_SCRIPT)
    task = await client.enqueue(asyncjobs.Task("t:ok", "hello"))
    result = await run_ajc("tasks", "process", "t:ok", "DEFAULT", "1", str(cmd), *flag, "--count", "1")
    assert result.code == 0, result.err
    with pytest.raises(TaskNotFound):
        await client.get_task(task.id)


async def test_until_idle_processes_everything_then_exits(
    run_ajc: RunAjc, client: asyncjobs.Client, tmp_path: Path
) -> None:
    cmd = script(tmp_path, "h.sh", TYPE_SCRIPT)
    ids = [(await client.enqueue(asyncjobs.Task("t:ok", n))).id for n in range(3)]
    result = await run_ajc("tasks", "process", "t:ok", "DEFAULT", "3", str(cmd), "--until-idle")
    assert result.code == 0, result.err
    assert [(await client.get_task(i)).state for i in ids] == ["complete"] * 3
    assert "processed 3 tasks, 0 failed" in result.err


async def test_tasks_verify_refuses_unsigned_and_wrongly_signed_tasks(
    run_ajc: RunAjc, client: asyncjobs.Client, nats_url: str, tmp_path: Path
) -> None:
    from asyncjobs.signing import generate_key_pair

    pair, other = generate_key_pair(), generate_key_pair()
    cmd = script(tmp_path, "h.sh", TYPE_SCRIPT)
    unsigned = await client.enqueue(asyncjobs.Task("t:ok", "plain"))
    async with await asyncjobs.connect(nats_url, queue="DEFAULT", signing_seed=pair.seed_hex) as signer:
        signed = await signer.enqueue(asyncjobs.Task("t:ok", "signed"))
    async with await asyncjobs.connect(nats_url, queue="DEFAULT", signing_seed=other.seed_hex) as stranger:
        forged = await stranger.enqueue(asyncjobs.Task("t:ok", "forged"))
    result = await run_ajc(
        "tasks", "--verify", pair.public_key_hex, "process", "t:ok", "DEFAULT", "1", str(cmd), "--until-idle"
    )
    assert result.code == 0, result.err
    assert (await client.get_task(signed.id)).state == "complete"
    refused = [await client.get_task(task.id) for task in (unsigned, forged)]
    assert [(t.state, t.last_err) for t in refused] == [
        ("terminated", "task is not signed"),
        ("terminated", "invalid task signature"),
    ]


async def test_a_terminal_gets_a_live_status_line(
    ajc_env: dict[str, str], client: asyncjobs.Client, tmp_path: Path
) -> None:
    cmd = script(tmp_path, "h.sh", TYPE_SCRIPT)
    task = await client.enqueue(asyncjobs.Task("t:ok", "hello"))
    master, terminal = os.openpty()  # stdout is a terminal, as an operator's is
    try:
        proc = await asyncio.create_subprocess_exec(
            str(AJC), "tasks", "process", "t:ok", "DEFAULT", "1", str(cmd), "--count", "1",
            stdout=terminal, stderr=asyncio.subprocess.PIPE, env={**ajc_env, "TERM": "xterm-256color"},
        )  # fmt: skip
        os.close(terminal)

        def read_screen() -> str:
            chunks = []
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the terminal's last writer is gone
                    break
                if not data:
                    break
                chunks.append(data)
            return b"".join(chunks).decode("utf-8", "replace")

        try:
            screen, (_, err) = await asyncio.wait_for(
                asyncio.gather(asyncio.to_thread(read_screen), proc.communicate()), STOP_TIMEOUT_S
            )
        except TimeoutError:
            proc.kill()
            raise
    finally:
        os.close(master)
    assert proc.returncode == 0, err
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)  # colours and cursor moves
    assert "processing DEFAULT: 1 processed, 0 failed, 0 running" in screen
    assert f"Running task {task.id} try 1 using" in screen  # the log lines go above the status line
    assert (await client.get_task(task.id)).state == "complete"


# ---- stopping ----------------------------------------------------------------------------------------------------

SLOW_SCRIPT: Final = """#!/bin/sh
touch "{started}"
n=0
while [ ! -e "{release}" ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done
echo finished
"""
"""Says it started, then runs until the test releases it (at most 30 s)."""


async def test_sigterm_lets_the_running_command_finish(
    start_ajc: Callable[..., Awaitable[Background]], client: asyncjobs.Client, tmp_path: Path
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    cmd = script(tmp_path, "slow.sh", SLOW_SCRIPT.format(started=started, release=release))
    task = await client.enqueue(asyncjobs.Task("t:slow", "x"))
    port = free_port()
    ajc = await start_ajc("tasks", "process", "t:slow", "DEFAULT", "1", str(cmd), "--monitor", str(port))
    await eventually(started.exists, timeout=15)

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text: str = response.read().decode()
            return text

    assert "asyncjobs" in await asyncio.to_thread(scrape)  # --monitor serves Prometheus metrics
    ajc.signal(signal.SIGTERM)
    await eventually(lambda: "received SIGTERM: stopping" in ajc.err, timeout=10)
    release.touch()
    result = await ajc.wait()
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    done = await client.get_task(task.id)
    assert done.state == "complete"
    assert done.result is not None and done.result.payload == "finished\n"


async def test_second_sigterm_hands_the_task_back_at_once(
    start_ajc: Callable[..., Awaitable[Background]], client: asyncjobs.Client, tmp_path: Path
) -> None:
    started, release = tmp_path / "started", tmp_path / "never"
    cmd = script(tmp_path, "slow.sh", SLOW_SCRIPT.format(started=started, release=release))
    task = await client.enqueue(asyncjobs.Task("t:slow", "x"))
    ajc = await start_ajc("tasks", "process", "t:slow", "DEFAULT", "1", str(cmd))
    await eventually(started.exists, timeout=15)
    ajc.signal(signal.SIGTERM)
    # Signals sent together may arrive as one: the second goes once the first is taken.
    await eventually(lambda: "received SIGTERM: stopping" in ajc.err, timeout=10)
    ajc.signal(signal.SIGTERM)
    result = await ajc.wait()
    assert result.code == 128 + signal.SIGTERM, result.err
    assert "Traceback" not in result.err
    back = await client.get_task(task.id)
    assert back.state == "retry"  # handed back, not lost: another worker takes it at once
    assert back.tries == 0  # a stop does not use up a try


# ---- errors ------------------------------------------------------------------------------------------------------


async def test_missing_queue_says_how_to_create_it(run_ajc: RunAjc, tmp_path: Path) -> None:
    cmd = script(tmp_path, "h.sh", TYPE_SCRIPT)
    result = await run_ajc("tasks", "process", "t:ok", "NOPE", "1", str(cmd))
    assert result.code == 1
    assert result.err.splitlines()[-1] == "ajc: error: queue 'NOPE' not found: create it with ajc queues new NOPE"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("t:ok", "DEFAULT", "0", "{cmd}"), "ajc: error: concurrency must be at least 1, not 0"),
        (("t:ok", "DEFAULT", "1", "{plain}"), "ajc: error: command '{plain}' is not an executable file: chmod +x it"),
        (
            ("t:ok", "DEFAULT", "1", "no-such-command"),
            "ajc: error: command 'no-such-command' not found: give an executable file, or MODULE:ATTR for a Python "
            "router",
        ),
        (
            ("t:ok", "DEFAULT", "1"),
            "ajc: error: either a command, a router (MODULE:ATTR or --router) or --remote is required",
        ),
        (
            ("t:ok", "DEFAULT", "1", "{cmd}", "--remote"),
            "ajc: error: give only one of a command, a router or --remote, not a command and --remote",
        ),
        (
            ("*", "DEFAULT", "1", "nosuchmodule:router"),
            "ajc: error: cannot import 'nosuchmodule' (no module named 'nosuchmodule'): run from the directory that "
            "holds it, or add that directory to PYTHONPATH",
        ),
        (
            ("*", "DEFAULT", "1", "--router", "broken_app:router", "--app-dir", str(APPS)),
            "ajc: error: importing 'broken_app' failed: RuntimeError: broken on purpose",
        ),
        (
            ("nope:", "DEFAULT", "1", "process_app:router", "--app-dir", str(APPS)),
            "ajc: error: the router has no handler for task type 'nope:': it handles 'py:length', 'py:upper' (pass "
            "'*' to serve them all)",
        ),
    ],
    ids=[
        "concurrency",
        "not-executable",
        "not-found",
        "no-handler",
        "command-and-remote",
        "no-module",
        "import-fails",
        "router-type",
    ],
)
async def test_bad_arguments_exit_2_with_one_line(
    run_ajc: RunAjc, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    cmd = script(tmp_path, "h.sh", TYPE_SCRIPT)
    plain = tmp_path / "plain.sh"
    plain.write_text("echo hi\n")
    fill: dict[str, Any] = {"cmd": cmd, "plain": plain}
    result = await run_ajc("tasks", "process", *(a.format(**fill) for a in args))
    assert result.code == 2, result.err
    assert result.err.splitlines()[-1] == message.format(**fill)
    assert "Traceback" not in result.err


# ---- both CLIs ---------------------------------------------------------------------------------------------------


async def test_go_adds_ours_processes_go_views(run_ajc: RunAjc, run_go_ajc: RunAjc, tmp_path: Path) -> None:
    cmd = script(tmp_path, "h.sh", TYPE_SCRIPT)
    assert (await run_go_ajc("queues", "add", "DEFAULT")).code == 0
    added = await run_go_ajc("tasks", "add", "t:ok", "hello")
    assert added.code == 0, added.err
    task_id = added.out.split()[-1]
    result = await run_ajc("tasks", "process", "t:ok", "DEFAULT", "1", str(cmd), "--count", "1")
    assert result.code == 0, result.err
    view = await run_go_ajc("tasks", "view", task_id)
    assert "               Status: complete" in view.out.splitlines()
    stored = await run_go_ajc("tasks", "view", task_id, "-j")
    assert stored.json()["result"]["payload"] == '"type":"t:ok"\n'  # type: ignore[index]


async def test_both_clis_take_the_same_arguments(
    start_ajc: Callable[..., Awaitable[Background]],
    run_ajc: RunAjc,
    client: asyncjobs.Client,
    go_peer: Path,
    tmp_path: Path,
) -> None:
    cmd = script(tmp_path, "h.sh", TYPE_SCRIPT)
    args = ("tasks", "process", "t:ok", "DEFAULT", "2", str(cmd), "--backoff", "1m", "--discard-expired", "--no-remote")
    go_task = await client.enqueue(asyncjobs.Task("t:ok", "go"))
    # Upstream's has no flag to stop: it runs until the task is complete, then it is terminated.
    go = await start_ajc(*args, program=go_peer / "ajc")
    by_go = await state_of(client, go_task.id, "complete")
    go.signal(signal.SIGTERM)
    go_result = await go.wait()
    ours_task = await client.enqueue(asyncjobs.Task("t:ok", "ours"))
    result = await run_ajc(*args, "--count", "1")
    assert result.code == 0, result.err
    by_ours = await client.get_task(ours_task.id)
    assert by_ours.state == "complete"
    assert by_go.result is not None and by_ours.result is not None
    assert by_ours.result.payload == by_go.result.payload == '"type":"t:ok"\n'
    assert by_ours.tries == by_go.tries == 1
    # The same log lines (Go's logfmt escapes the quotes).
    for err, task_id in ((go_result.err.replace('\\"', '"'), go_task.id), (result.err, ours_task.id)):
        assert f'Running task {task_id} try 1 using "{cmd}"' in err, err
        done = (
            f'Task {task_id} completed using "{re.escape(str(cmd))}" after [0-9.]+[µm]?s and 1 tries with 14 B payload'
        )
        assert re.search(done, err), err
