"""Connection failures name their real cause and the fix: authorization, TLS, missing files, no JetStream, no route."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats.errors
import pytest

import asyncjobs
from asyncjobs.natsconn import TLS_EOF_WARNING, _FirstConnect
from asyncjobs.options import ConnectionOptions
from asyncjobs.server import NatsServer
from asyncjobs.testing import eventually
from tests.core.test_security_and_metrics import _self_signed


@pytest.fixture
async def password_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    config = tmp_path / "auth.conf"
    config.write_text('authorization { users = [ { user: "aj", password: "s3cret" } ] }\n')
    async with NatsServer(extra_args=["-c", str(config)]) as server:
        yield server


@pytest.mark.parametrize(
    ("credentials", "fix"),
    [
        ({"user": "aj", "password": "wrong"}, "check the user and password"),
        ({"user": "nobody", "password": "s3cret"}, "check the user and password"),
        ({"token": "not-a-token"}, "check the token"),
        ({}, "the server requires authentication: pass user and password"),
    ],
)
async def test_wrong_credentials_name_the_authorization_violation(
    password_server: NatsServer, credentials: dict[str, str], fix: str
) -> None:
    url = password_server.url
    with pytest.raises(asyncjobs.JetStreamError) as caught:
        await asyncjobs.connect(url, connect_timeout=1, **credentials)
    message = str(caught.value)
    assert message.startswith(f"cannot connect to NATS at {url}: authorization violation: {fix}")
    assert "no servers available" not in message


async def test_wrong_nkey_names_the_authorization_violation(password_server: NatsServer, tmp_path: Path) -> None:
    import nkeys

    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(nkeys.encode_seed(bytes(range(32)), nkeys.PREFIX_BYTE_USER))
    with pytest.raises(asyncjobs.JetStreamError, match="authorization violation: check the nkey seed file"):
        await asyncjobs.connect(password_server.url, connect_timeout=1, nkey_seed_file=str(seed_file))


@pytest.mark.parametrize("option", ["tls_ca_file", "creds_file", "nkey_seed_file"])
async def test_missing_files_are_named_before_connecting(option: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    # Nothing listens on port 1: the file is reported before any connection is tried.
    with pytest.raises(asyncjobs.ConfigurationError, match=f"^{option} '{re.escape(str(missing))}' does not exist: "):
        await asyncjobs.connect("nats://127.0.0.1:1", **{option: str(missing)})


async def test_cert_and_key_must_be_pem(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate")
    with pytest.raises(asyncjobs.ConfigurationError, match=r"TLS CA file .* holds no usable certificate"):
        await asyncjobs.connect("nats://127.0.0.1:1", tls_ca_file=str(not_pem))


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    cert, key = _self_signed(tmp_path)
    async with NatsServer(extra_args=["--tls", "--tlscert", str(cert), "--tlskey", str(key)]) as server:
        yield server


async def test_tls_verification_failure_is_named_at_once(tls_server: NatsServer, tmp_path: Path) -> None:
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other_ca, _ = _self_signed(other_dir)
    for options in ({}, {"tls_ca_file": str(other_ca)}):
        started = time.monotonic()
        with pytest.raises(asyncjobs.JetStreamError) as caught:
            await asyncjobs.connect(tls_server.url, connect_timeout=1, **options)
        message = str(caught.value)
        assert "TLS certificate verification failed (self-signed certificate): pass tls_ca_file" in message
        assert "no connection within" not in message
        # nats-py never returns after a failed certificate check; the client gives up on the first report.
        assert time.monotonic() - started < 3


async def test_tls_options_against_a_server_without_tls_are_refused(nats_url: str, tmp_path: Path) -> None:
    # nats-py only upgrades when the server requires TLS: without this check the client would talk plain text.
    ca, _ = _self_signed(tmp_path)
    with pytest.raises(asyncjobs.ConfigurationError, match="does not require TLS, so nats-py would talk"):
        await asyncjobs.connect(nats_url, connect_timeout=1, tls_ca_file=str(ca))


async def test_connection_refused_is_named() -> None:
    with socket.socket() as sock:  # a free port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(asyncjobs.JetStreamError, match="connection refused: check that nats-server runs"):
        await asyncjobs.connect(f"nats://127.0.0.1:{port}", connect_timeout=1)


JS_NOT_ENABLED = (
    r"JetStream is not enabled on the NATS server at nats://127\.0\.0\.1:\d+ \(or not for this account\): "
    r"start nats-server with -js, or enable JetStream for the account"
)


async def test_server_without_jetstream() -> None:
    async with NatsServer(jetstream=False) as server:
        with pytest.raises(asyncjobs.JetStreamError, match=JS_NOT_ENABLED):
            await asyncjobs.connect(server.url, queue="NOJS")


async def test_account_without_jetstream(tmp_path: Path) -> None:
    config = tmp_path / "accounts.conf"
    config.write_text(
        "accounts {\n"
        '  WITH: { jetstream: enabled, users: [ { user: "js", password: "js" } ] }\n'
        '  WITHOUT: { users: [ { user: "plain", password: "plain" } ] }\n'
        "}\n"
    )
    async with NatsServer(extra_args=["-c", str(config)]) as server:
        with pytest.raises(asyncjobs.JetStreamError, match=JS_NOT_ENABLED) as caught:
            await asyncjobs.connect(server.url, user="plain", password="plain")
        assert caught.value.err_code == 10039
        async with await asyncjobs.connect(server.url, user="js", password="js", queue="ACCT") as client:
            await client.enqueue(asyncjobs.Task("x"))


async def test_unknown_host_names_the_dns_failure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="asyncjobs")
    # The .invalid top-level domain never resolves (RFC 2606): no network is needed to fail.
    with pytest.raises(asyncjobs.JetStreamError) as caught:
        await asyncjobs.connect("nats://aj:s3cret@does-not-exist.invalid:4222", connect_timeout=1)
    message = str(caught.value)
    assert message.startswith(
        "cannot connect to NATS at nats://does-not-exist.invalid:4222: cannot resolve host 'does-not-exist.invalid' ("
    )
    assert message.endswith("): check the host name in the server URL and the DNS settings of this machine")
    assert "s3cret" not in message
    # Never connected, so never disconnected.
    assert "disconnected" not in caplog.text


@contextlib.asynccontextmanager
async def _listener(
    on_connect: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A loopback TCP server that is not nats-server; yields its URL."""
    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield f"nats://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_silent_server_times_out_with_the_fix() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, then says nothing until the client gives up
        writer.close()

    async with _listener(silent) as url:
        with pytest.raises(asyncjobs.JetStreamError) as caught:
            await asyncjobs.connect(url, connect_timeout=0.5)
    assert str(caught.value) == (
        f"cannot connect to NATS at {url}: timed out: no NATS server answered within 0.5s: check the address and "
        "port, that nats-server runs there and that no firewall drops the traffic (or raise connect_timeout)"
    )


async def test_a_server_that_is_not_nats_is_named() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with _listener(hang_up) as url:
        with pytest.raises(asyncjobs.JetStreamError, match="closed the connection without a NATS greeting: check"):
            await asyncjobs.connect(url, connect_timeout=1)


@pytest.mark.parametrize(
    ("errors", "reason"),
    [
        ([OSError(errno.EHOSTUNREACH, "No route to host")], "no route to host (No route to host): check the address"),
        ([OSError(errno.ENETUNREACH, "Network is unreachable")], "no route to host (Network is unreachable): check"),
        ([socket.gaierror(-2, "Name or service not known")], "cannot resolve host 'nats.example.net' (Name or"),
        ([TimeoutError()], "timed out: no NATS server answered within 5s"),
        ([ConnectionRefusedError(111, "refused")], "connection refused: check that nats-server runs"),
        # The most telling cause wins over what came before or after it.
        ([TimeoutError(), nats.errors.AuthorizationError()], "authorization violation: the server requires"),
        ([socket.gaierror(-2, "x"), ConnectionRefusedError(111, "refused")], "cannot resolve host"),
        ([RuntimeError("something else")], "something else"),
        ([], None),
    ],
)
def test_first_connect_reasons(errors: list[BaseException], reason: str | None) -> None:
    attempt = _FirstConnect()
    attempt.errors.extend(errors)
    servers = ["nats://nats.example.net:4222", "nats://10.0.0.1:4222"]
    found = attempt.reason(ConnectionOptions(servers=tuple(servers)), None, servers)
    assert found == reason if reason is None else (found or "").startswith(reason)


async def test_tls_disconnects_log_no_asyncio_warning(
    tls_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert = tmp_path / "server.pem"  # the tls_server fixture's self-signed certificate
    caplog.set_level(logging.INFO)
    client = await asyncjobs.connect(tls_server.url, tls_ca_file=str(cert), queue="TLSDROP")
    try:
        # The server drops the client: nats-py's TLS stream sees an end of file, then it reconnects.
        await tls_server.restart()
        await eventually(
            lambda: client.nc.is_connected and client.nc.stats["reconnects"] >= 1, message="the client reconnected"
        )
        await client.enqueue(asyncjobs.Task("x"))
    finally:
        await client.close()
    assert "reconnected to NATS" in caplog.text
    assert TLS_EOF_WARNING not in caplog.text
    logging.getLogger("asyncio").warning("any other asyncio warning")
    assert "any other asyncio warning" in caplog.text
