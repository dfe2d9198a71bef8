"""Lifecycle events, the signature fixture and the fixture files themselves.

Checked against docs/protocol.md, sections Lifecycle events and Task signatures.
"""

from __future__ import annotations

import base64

import orjson
import pytest

from asyncjobs import CorruptDataError
from asyncjobs.codec import (
    LeaderElectedEvent,
    TaskStateEvent,
    decode_event,
    decode_task,
    encode_leader_event,
    encode_task_event,
)
from asyncjobs.errors import InvalidSignature
from asyncjobs.signing import TaskSigner, TaskVerifier, signature_envelope
from asyncjobs.task import TaskState
from asyncjobs.wiretime import WireTime
from tests.interop.conftest import FIXTURES, GOLDEN_ID, golden, utc_ns

CHILD_ID = "3GqtDLPzByP9R7YNj68bmvfWULV"
TRIED_1305 = utc_ns(2026, 7, 22, 9, 0, 1, 305_000_000)


# ---- lifecycle events ----------------------------------------------------------------------------------------


def _with_event_id(encoded: bytes, event_id: str) -> bytes:
    generated = orjson.loads(encoded)["event_id"]
    return encoded.replace(generated.encode(), event_id.encode(), 1)


def test_golden_task_state_event_decodes() -> None:
    event = decode_event(golden("event_task_state.json"))
    assert event == TaskStateEvent(
        event_id="3GqtClWFkzPgvfgOyv2Bp9CZ1P9",
        timestamp=WireTime(utc_ns(2026, 7, 22, 9, 0, 1)),
        task_id=GOLDEN_ID,
        state=TaskState.RETRY,
        tries=1,
        queue="EMAIL",
        task_type="email:new",
        last_error="smtp: connection refused",
        task_age_ns=1_182_000_000,
    )


def test_golden_leader_event_decodes() -> None:
    event = decode_event(golden("event_leader_elected.json"))
    assert event == LeaderElectedEvent(
        event_id="3GqtCxgfDK6q4V1g0qaa7GS4IxF",
        timestamp=WireTime(utc_ns(2026, 7, 22, 9, 0, 2)),
        name="sched1.example.net",
        component="task_scheduler",
    )


def test_task_state_event_encodes_with_go_field_order() -> None:
    task = decode_task(golden("task_retry.json"))
    encoded = encode_task_event(task, now_ns=TRIED_1305)
    assert _with_event_id(encoded, "3GqtClWFkzPgvfgOyv2Bp9CZ1P9") == golden("event_task_state.json")


def test_task_state_event_omits_empty_queue_last_error_and_age() -> None:
    task = decode_task(golden("task_blocked.json"))
    task.queue = ""
    encoded = encode_task_event(task, now_ns=task.created_at.unix_ns)
    assert _with_event_id(encoded, CHILD_ID) == (
        b'{"event_id":"3GqtDLPzByP9R7YNj68bmvfWULV","type":"io.choria.asyncjobs.v1.task_state",'
        b'"timestamp":"2026-07-22T09:00:05Z","task_id":"3GqtDLPzByP9R7YNj68bmvfWULV","state":"blocked","tries":0,'
        b'"task_type":"report:build"}'
    )


def test_task_age_is_now_minus_created_rounded_to_the_millisecond() -> None:
    # lifecycle.go: e.Age = time.Since(t.CreatedAt.Round(time.Millisecond)): the created time is rounded, not the age.
    task = decode_task(golden("task_retry.json"))
    now_ns = utc_ns(2026, 7, 22, 9, 0, 1, 305_456_789)
    age = orjson.loads(encode_task_event(task, now_ns=now_ns))["task_age"]
    assert age == now_ns - utc_ns(2026, 7, 22, 9, 0, 0, 123_000_000) == 1_182_456_789


def test_event_timestamps_are_the_whole_second_of_each_event() -> None:
    # In this order: one second's text is reused for the events of that second; a later or an earlier second, or
    # the same one again after another, gets its own.
    task = decode_task(golden("task_retry.json"))
    walk = [
        (utc_ns(2026, 7, 22, 9, 0, 1, 1), "2026-07-22T09:00:01Z"),
        (utc_ns(2026, 7, 22, 9, 0, 1, 999_999_999), "2026-07-22T09:00:01Z"),
        (utc_ns(2026, 7, 22, 9, 0, 2), "2026-07-22T09:00:02Z"),
        (utc_ns(2026, 7, 22, 8, 59, 59, 500), "2026-07-22T08:59:59Z"),
        (utc_ns(2026, 7, 22, 9, 0, 1, 1), "2026-07-22T09:00:01Z"),
        (utc_ns(2026, 12, 31, 23, 59, 59, 999_999_999), "2026-12-31T23:59:59Z"),
        (utc_ns(2027, 1, 1, 0, 0, 0), "2027-01-01T00:00:00Z"),
    ]
    for now_ns, timestamp in walk:
        assert orjson.loads(encode_task_event(task, now_ns=now_ns))["timestamp"] == timestamp
        assert orjson.loads(encode_leader_event("a", "b", now_ns=now_ns))["timestamp"] == timestamp


def test_leader_event_encodes_with_go_field_order() -> None:
    now_ns = utc_ns(2026, 7, 22, 9, 0, 2, 750_000_000)
    encoded = encode_leader_event("sched1.example.net", "task_scheduler", now_ns=now_ns)
    assert _with_event_id(encoded, "3GqtCxgfDK6q4V1g0qaa7GS4IxF") == golden("event_leader_elected.json")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{", id="truncated"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'{"event_id":"x","type":"io.choria.asyncjobs.v1.other"}', id="unknown-type"),
        pytest.param(golden("event_task_state.json").replace(b'"tries":1', b'"tries":1.5'), id="tries-float"),
        pytest.param(golden("event_task_state.json").replace(b"09:00:01Z", b"09:00:01"), id="timestamp-no-zone"),
    ],
)
def test_malformed_event_raises_corrupt_data(body: bytes) -> None:
    with pytest.raises(CorruptDataError):
        decode_event(body)


def test_unknown_event_type_names_the_type() -> None:
    with pytest.raises(CorruptDataError, match=r"unknown event type: io\.choria\.asyncjobs\.v1\.other"):
        decode_event(b'{"type":"io.choria.asyncjobs.v1.other"}')


# ---- signatures ----------------------------------------------------------------------------------------------


def test_signature_fixture() -> None:
    fixture = orjson.loads(golden("signature.json"))
    spec = fixture["task"]
    payload = spec["payload"].encode()
    envelope = signature_envelope(
        task_id=spec["id"],
        queue=spec["queue"],
        task_type=spec["type"],
        max_tries=spec["max_tries"],
        created_ns=spec["created_unix_ns"],
        deadline_ns=spec["deadline"],
        payload=payload,
    )
    assert envelope == fixture["envelope"].encode()
    assert envelope.endswith(base64.b64encode(payload))

    signer = TaskSigner.from_seed(fixture["seed"])
    assert signer.public_key_hex == fixture["public_key"]
    assert signer.sign(envelope) == fixture["signature"]

    verifier = TaskVerifier.from_public_key(fixture["public_key"])
    verifier.verify(envelope, fixture["signature"])
    with pytest.raises(InvalidSignature):
        verifier.verify(envelope.replace(b":10:", b":11:"), fixture["signature"])


def test_golden_signed_task_envelope_uses_the_exact_created_nanoseconds() -> None:
    fixture = orjson.loads(golden("signature.json"))
    task = decode_task(golden("task_signed.json"))
    envelope = signature_envelope(
        task_id=task.id,
        queue=task.queue,
        task_type=task.type,
        max_tries=task.max_tries,
        created_ns=task.created_at.unix_ns,
        deadline_ns=None if task.deadline_at is None else task.deadline_at.unix_ns,
        payload=task.payload,
    )
    assert envelope == fixture["envelope"].encode()
    TaskVerifier.from_public_key(fixture["public_key"]).verify(envelope, task.signature)


# ---- the fixtures themselves ---------------------------------------------------------------------------------


def test_every_fixture_is_documented_and_valid_json() -> None:
    readme = golden("README.md").decode()
    files = sorted(p.name for p in FIXTURES.glob("*.json"))
    assert files, "no fixtures found"
    for name in files:
        assert f"`{name}`" in readme, f"{name} is not described in fixtures/README.md"
        orjson.loads(golden(name))
        if not name.startswith("config_") and name != "signature.json":
            assert not golden(name).endswith((b"\n", b" ")), f"{name}: Go writes no trailing whitespace"
