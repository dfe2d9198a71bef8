"""Shared by the interop suite: the golden fixtures, an independent RFC 3339 reader, and raw JetStream helpers.

The helpers play the Go side with plain nats-py requests and observe ours with core NATS subscriptions (which see
JetStream publishes, API requests and acks with their headers) and raw ``$JS.API`` reads. Wire names are spelled out
literally here on purpose: this suite checks them, so it must not borrow them from ``asyncjobs.constants``.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

import asyncjobs
from asyncjobs.testing import eventually

FIXTURES: Final = Path(__file__).parent / "fixtures"
GOLDEN_ID: Final = "3GqtCeloEv8f4pnECKClET4Svy0"
PAYLOAD: Final = b'{"to":"user@example.net","subject":"hi"}'
PAYLOAD_B64: Final = b"eyJ0byI6InVzZXJAZXhhbXBsZS5uZXQiLCJzdWJqZWN0IjoiaGkifQ=="
GOLDEN_CREATED: Final = "2026-07-22T09:00:00.123456789Z"
CREATED_NS: Final = 1_784_710_800_123_456_789
SIGNATURE_FIXTURE: Final[dict[str, Any]] = orjson.loads((FIXTURES / "signature.json").read_bytes())

GO_TASK_KEYS: Final = (
    "id", "type", "queue", "dependencies", "dependency_results", "load_dependencies", "payload", "deadline",
    "max_tries", "result", "state", "created", "tried", "tries", "last_err", "signature",
)  # fmt: skip
GO_TASK_ALWAYS: Final = ("id", "type", "queue", "payload", "max_tries", "state", "created", "tries")
GO_EVENT_KEYS: Final = (
    "event_id", "type", "timestamp", "task_id", "state", "tries", "queue", "task_type", "last_error", "task_age",
)  # fmt: skip
# Go's RFC3339Nano in UTC: trailing zero fraction digits trimmed.
GO_UTC_TIME: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z")


def golden(name: str) -> bytes:
    """A fixture's exact bytes."""
    return (FIXTURES / name).read_bytes()


def utc_ns(y: int, mo: int, d: int, h: int, mi: int, s: int, ns: int = 0) -> int:
    """Unix nanoseconds of a UTC wall time, computed without the library."""
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1_000_000_000 + ns


def rfc3339_ns(text: str) -> int:
    """Unix nanoseconds of an RFC 3339 string, parsed without the library (as Go's UnixNano reads it)."""
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|([+-])(\d\d):(\d\d))", text)
    assert m is not None, text
    seconds = calendar.timegm((*(int(m[i]) for i in range(1, 7)), 0, 0, 0))
    if m[9]:
        offset = int(m[10]) * 3600 + int(m[11]) * 60
        seconds -= offset if m[9] == "+" else -offset
    return seconds * 1_000_000_000 + int((m[7] or "").ljust(9, "0"))


def assert_go_task_layout(body: bytes) -> dict[str, Any]:
    """The stored task has Go's keys in Go's struct order; returns it parsed."""
    obj: dict[str, Any] = orjson.loads(body)
    assert list(obj) == [key for key in GO_TASK_KEYS if key in obj]
    assert set(GO_TASK_ALWAYS) <= set(obj)
    for key in ("created", "tried"):
        if key in obj:
            assert GO_UTC_TIME.fullmatch(obj[key]), obj[key]
    if "result" in obj:
        assert list(obj["result"]) == ["payload", "completed"]
        assert GO_UTC_TIME.fullmatch(obj["result"]["completed"])
    return obj


def parse_header_block(raw: bytes) -> dict[str, str]:
    """Parse a stored message's ``NATS/1.0`` header block."""
    lines = raw.decode().split("\r\n")
    assert lines[0].startswith("NATS/1.0")
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines[1:] if line)}


async def stored_task(nc: NatsClient, task_id: str) -> tuple[bytes, dict[str, str]]:
    """The task's last stored body and headers, read with ``$JS.API.STREAM.MSG.GET`` as Go does."""
    request = orjson.dumps({"last_by_subj": f"CHORIA_AJ.T.{task_id}"})
    reply = orjson.loads((await nc.request("$JS.API.STREAM.MSG.GET.CHORIA_AJ_TASKS", request, timeout=2)).data)
    assert "message" in reply, reply
    message = reply["message"]
    headers = parse_header_block(base64.b64decode(message["hdrs"])) if message.get("hdrs") else {}
    return base64.b64decode(message["data"]), headers


async def state_is(nc: NatsClient, task_id: str, expected: str) -> bool:
    """Whether the stored task is in ``expected`` state (for :func:`eventually`)."""
    body, _ = await stored_task(nc, task_id)
    return bool(orjson.loads(body)["state"] == expected)


async def js_api(nc: NatsClient, suffix: str) -> dict[str, Any]:
    """Call ``$JS.API.<suffix>`` with an empty body and return the successful reply."""
    reply: dict[str, Any] = orjson.loads((await nc.request(f"$JS.API.{suffix}", b"", timeout=2)).data)
    assert "error" not in reply, reply
    return reply


async def go_publish(nc: NatsClient, subject: str, body: bytes, headers: dict[str, str]) -> None:
    """Publish into a stream as Go does (a request that waits for the PubAck)."""
    ack = orjson.loads((await nc.request(subject, body, timeout=2, headers=headers)).data)
    assert "error" not in ack and ack["seq"] > 0, ack


async def go_enqueue(nc: NatsClient, task_id: str, task_body: bytes, queue: str = "EMAIL") -> None:
    """Enqueue a task the way a Go client does (docs/protocol.md, Enqueue)."""
    await go_publish(nc, f"CHORIA_AJ.T.{task_id}", task_body, {"Nats-Expected-Last-Subject-Sequence": "0"})
    item = golden("item.json").replace(GOLDEN_ID.encode(), task_id.encode())
    await go_publish(nc, f"CHORIA_AJ.Q.{queue}.{task_id}", item, {"Nats-Msg-Id": task_id})


class Capture:
    """Collects every message on a subject, from core NATS."""

    def __init__(self) -> None:
        self.msgs: list[Msg] = []

    @classmethod
    async def start(cls, nc: NatsClient, subject: str) -> Capture:
        capture = cls()
        await nc.subscribe(subject, cb=capture._on_msg)
        await nc.flush()
        return capture

    async def _on_msg(self, msg: Msg) -> None:
        self.msgs.append(msg)

    async def count(self, n: int) -> list[Msg]:
        await eventually(lambda: len(self.msgs) >= n, timeout=10, message=f"{n} messages")
        return self.msgs


@contextlib.asynccontextmanager
async def serving(client: asyncjobs.Client, router: asyncjobs.Router) -> AsyncIterator[None]:
    """Run the client's worker for the duration of the block."""
    runner = asyncio.create_task(client.run(router))
    try:
        yield
    finally:
        await client.close()
        await asyncio.wait_for(runner, timeout=10)


async def connect(url: str, **options: Any) -> asyncjobs.Client:
    """A client that lets handlers finish within a second when it closes."""
    return await asyncjobs.connect(url, shutdown_grace=1.0, **options)
