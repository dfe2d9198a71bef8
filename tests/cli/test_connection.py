"""How ``ajc`` connects: users, tokens, contexts and TLS from flags, environment or a NATS context, and the one-line
errors when it cannot (wrong credentials, missing permissions)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import pytest_asyncio

import asyncjobs
from asyncjobs.server import NatsServer
from tests.cli.conftest import RunAjc
from tests.core.test_docs_security import _issue

CONFIG = """
jetstream {{ store_dir: "{store}" }}
authorization {{
  users = [
    {{user: admin, password: s3cret}}
    {{user: viewer, password: s3cret, permissions: {{publish: ["nothing.>"], subscribe: ["_INBOX.>"]}}}}
  ]
}}
"""


@pytest_asyncio.fixture
async def secured(tmp_path: Path) -> AsyncIterator[NatsServer]:
    conf = tmp_path / "server.conf"
    conf.write_text(CONFIG.format(store=tmp_path / "js"))
    async with NatsServer(jetstream=False, extra_args=["-c", str(conf)]) as server:
        yield server


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ajc: error: ")
    return lines[0]


async def test_user_and_password_from_flags_environment_or_context(
    secured: NatsServer, run_ajc: RunAjc, config_home: Path
) -> None:
    flags = await run_ajc("queues", "new", "EMAIL", "-s", secured.url, "--user", "admin", "--password", "s3cret")
    assert flags.code == 0, flags.err
    env = {"NATS_URL": secured.url, "NATS_USER": "admin", "NATS_PASSWORD": "s3cret"}
    from_env = await run_ajc("queues", "ls", env=env)
    assert from_env.code == 0, from_env.err
    assert "EMAIL" in from_env.out
    context = {"url": secured.url, "user": "admin", "password": "s3cret"}
    (config_home / "nats" / "context" / "ops.json").write_bytes(orjson.dumps(context))
    from_context = await run_ajc("--context", "ops", "queues", "info", "EMAIL")
    assert from_context.code == 0, from_context.err
    from_context_env = await run_ajc("queues", "info", "EMAIL", env={"CONTEXT": "ops"})
    assert from_context_env.code == 0, from_context_env.err


async def test_wrong_password_is_one_line(secured: NatsServer, run_ajc: RunAjc) -> None:
    done = await run_ajc("info", "-s", secured.url, "--user", "admin", "--password", "wrong")
    assert done.code == 1
    assert "authorization violation: check the user and password" in _one_line(done.err)


async def test_no_credentials_says_the_server_wants_some(secured: NatsServer, run_ajc: RunAjc) -> None:
    done = await run_ajc("queues", "ls", "-s", secured.url)
    assert done.code == 1
    assert "the server requires authentication" in _one_line(done.err)


async def test_missing_permissions_are_one_line_naming_the_subject(secured: NatsServer, run_ajc: RunAjc) -> None:
    done = await run_ajc("queues", "ls", "-s", secured.url, "--user", "viewer", "--password", "s3cret")
    assert done.code == 1
    line = _one_line(done.err)
    assert "permission denied: this NATS user may not publish to $JS.API.STREAM.NAMES" in line
    assert "Traceback" not in done.err


async def test_tls_files_from_flags(tmp_path: Path, run_ajc: RunAjc) -> None:
    pytest.importorskip("cryptography")
    certs = tmp_path / "certs"
    certs.mkdir()
    _issue(certs)
    conf = tmp_path / "tls.conf"
    conf.write_text(
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        f'tls {{ cert_file: "{certs / "server-cert.pem"}", key_file: "{certs / "server-key.pem"}" }}\n'
    )
    async with NatsServer(jetstream=False, extra_args=["-c", str(conf)]) as server:
        url = server.url.replace("nats://", "tls://")
        unverified = await run_ajc("queues", "ls", "-s", url)
        assert unverified.code == 1
        assert "TLS certificate verification failed" in _one_line(unverified.err)
        done = await run_ajc("queues", "new", "EMAIL", "-s", url, "--tlsca", str(certs / "ca.pem"))
        assert done.code == 0, done.err
        async with await asyncjobs.connect(url, tls_ca_file=str(certs / "ca.pem"), no_storage_init=True) as client:
            assert await client.admin.queue_names() == ["EMAIL"]
