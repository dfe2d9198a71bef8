"""A request the server refuses for the user's permissions fails at once with PermissionDenied, naming the fix."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

import asyncjobs
from asyncjobs.server import NatsServer

LIMITS = """
jetstream {{ store_dir: "{store}" }}
authorization {{
  users = [
    {{user: admin, password: pw}}
    {{user: nopublish, password: pw, permissions: {{publish: ["nothing.>"], subscribe: ["_INBOX.>"]}}}}
    {{user: noinbox, password: pw, permissions: {{publish: [">"], subscribe: ["nothing.>"]}}}}
  ]
}}
"""


@pytest_asyncio.fixture
async def limited_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    conf = tmp_path / "server.conf"
    conf.write_text(LIMITS.format(store=tmp_path / "js"))
    async with NatsServer(jetstream=False, extra_args=["-c", str(conf)]) as server:
        async with await asyncjobs.connect(server.url, user="admin", password="pw", queue="EMAIL"):
            pass  # the task store and the queue exist: only the users' permissions can fail
        yield server


async def test_a_refused_publish_fails_at_once_naming_the_subject(limited_server: NatsServer) -> None:
    async with await asyncjobs.connect(
        limited_server.url, user="nopublish", password="pw", no_storage_init=True, request_timeout=1
    ) as client:
        started = time.monotonic()
        with pytest.raises(asyncjobs.PermissionDenied, match=r"may not publish to \$JS\.API\.STREAM\.NAMES") as caught:
            await client.admin.queue_names()
    assert time.monotonic() - started < client.options.retry_window  # one timeout, not the whole retry window
    assert caught.value.attempts == 1
    assert isinstance(caught.value, PermissionError)


async def test_a_refused_reply_inbox_fails_naming_the_subscription(limited_server: NatsServer) -> None:
    async with await asyncjobs.connect(
        limited_server.url, user="noinbox", password="pw", no_storage_init=True, request_timeout=1
    ) as client:
        with pytest.raises(asyncjobs.PermissionDenied, match=r"may not subscribe to _inbox\."):
            await client.get_task("2BZrWA2Wx0tKKZ8bRbgxaMkAZe2")


@pytest.mark.parametrize(
    ("reported", "subject", "sent_after", "why"),
    [
        ('nats: permissions violation for publish to "$js.api.stream.names"', "$JS.API.STREAM.NAMES", False, "publish"),
        ('nats: Permissions Violation for Publish to "$JS.API.INFO"', "$JS.API.INFO", False, "publish"),
        ('nats: permissions violation for publish to "$js.api.info"', "$JS.API.STREAM.NAMES", False, None),
        ('nats: permissions violation for subscription to "_inbox.abc.*"', "$JS.API.INFO", False, "subscribe"),
        ('nats: permissions violation for publish to "$js.api.info"', "$JS.API.INFO", True, None),
        ("nats: stale connection", "$JS.API.INFO", False, None),
    ],
)
def test_which_violations_explain_a_timeout(reported: str, subject: str, sent_after: bool, why: str | None) -> None:
    from nats.aio.client import Client as NATS

    from asyncjobs import denials

    nc = NATS()
    before = time.monotonic()
    assert denials.note(nc, Exception(reported)) == ("violation" in reported.lower())
    found = denials.denial(nc, subject, since=time.monotonic() + 1 if sent_after else before)
    if why is None:
        assert found is None
    else:
        assert found is not None and f"may not {why}" in found
