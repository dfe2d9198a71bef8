"""Tasks and work items against golden bytes: Go's bytes decode to Go's values and re-encode exactly.

The formats are in docs/protocol.md, sections Task JSON, Work items and Lifecycle events.

Every golden file in ``fixtures/`` is what Go's ``encoding/json`` writes (see ``fixtures/README.md``). Decoding one
must give the exact field values (times to the nanosecond); encoding the decoded task must give the same bytes
back, which is the strongest form of "what we write decodes to the same fields in Go". Expected values here are
written out independently of the library (times via :func:`calendar.timegm`), so the codec is never its own oracle.
Events and signatures are in ``test_codec_events.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import pytest

from asyncjobs import CorruptDataError
from asyncjobs.codec import decode_item, decode_task, dumps, encode_item, encode_task
from asyncjobs.task import TaskState
from asyncjobs.wiretime import WireTime
from tests.interop.conftest import (
    CREATED_NS,
    GOLDEN_ID,
    PAYLOAD,
    PAYLOAD_B64,
    SIGNATURE_FIXTURE,
    golden,
    utc_ns,
)

CHILD_ID: Final = "3GqtDLPzByP9R7YNj68bmvfWULV"
PARENT_A: Final = "3GqtCz2js3Y5DXPYWohb1TxrWqO"
PARENT_B: Final = "3GqtDDYZWqFrsc02wvBT815dOzu"


@dataclass(frozen=True, kw_only=True)
class Expect:
    """The field values Go holds after decoding a golden task (times as Unix ns, results as (payload, ns))."""

    state: TaskState
    id: str = GOLDEN_ID
    type: str = "email:new"
    queue: str = "EMAIL"
    payload: bytes | None = PAYLOAD
    max_tries: int = 10
    created_ns: int = CREATED_NS
    tried_ns: int | None = None
    deadline: WireTime | None = None
    tries: int = 0
    last_err: str = ""
    result: tuple[Any, int] | None = None
    dependencies: tuple[str, ...] = ()
    dependency_results: dict[str, tuple[Any, int]] = field(default_factory=dict)
    load_dependencies: bool = False
    signature: str = ""


CHILD: Final[dict[str, Any]] = {
    "id": CHILD_ID,
    "type": "report:build",
    "queue": "DEFAULT",
    "payload": None,
    "created_ns": utc_ns(2026, 7, 22, 9, 0, 5),
    "dependencies": (PARENT_A, PARENT_B),
    "load_dependencies": True,
}
TRIED_1305: Final = utc_ns(2026, 7, 22, 9, 0, 1, 305_000_000)

GOLDEN_TASKS: Final[dict[str, Expect]] = {
    "task_new.json": Expect(state=TaskState.NEW),
    "task_active.json": Expect(state=TaskState.ACTIVE, tried_ns=utc_ns(2026, 7, 22, 9, 0, 1, 200_000_000)),
    "task_retry.json": Expect(state=TaskState.RETRY, tried_ns=TRIED_1305, tries=1, last_err="smtp: connection refused"),
    "task_complete.json": Expect(
        state=TaskState.COMPLETED,
        tried_ns=utc_ns(2026, 7, 22, 9, 2, 40, 880_000_000),
        tries=2,
        result=("sent", utc_ns(2026, 7, 22, 9, 2, 40, 880_000_000)),
    ),
    "task_terminated.json": Expect(
        state=TaskState.TERMINATED, tried_ns=TRIED_1305, tries=1, last_err="invalid task payload: terminate task"
    ),
    "task_expired_deadline.json": Expect(
        state=TaskState.EXPIRED,
        deadline=WireTime(utc_ns(2026, 7, 22, 10, 0, 0)),
        tried_ns=TRIED_1305,
        tries=1,
        last_err="smtp: connection refused",
    ),
    "task_queue_error.json": Expect(state=TaskState.QUEUE_ERROR, last_err="duplicate work queue item"),
    "task_blocked.json": Expect(state=TaskState.BLOCKED, **CHILD),
    "task_active_dependency_results.json": Expect(
        state=TaskState.ACTIVE,
        tried_ns=utc_ns(2026, 7, 22, 9, 0, 8),
        dependency_results={
            PARENT_A: ("ok", utc_ns(2026, 7, 22, 9, 0, 6)),
            PARENT_B: ({"rows": 3}, utc_ns(2026, 7, 22, 9, 0, 7)),
        },
        **CHILD,
    ),
    "task_unreachable_not_found.json": Expect(
        state=TaskState.UNREACHABLE,
        tried_ns=utc_ns(2026, 7, 22, 9, 0, 6),
        last_err=f"task dependencies failed: task not found: {PARENT_A}",
        **CHILD,
    ),
    "task_unreachable_parent_failed.json": Expect(
        state=TaskState.UNREACHABLE,
        tried_ns=utc_ns(2026, 7, 22, 9, 0, 6),
        last_err="task dependencies failed: <nil>",
        **CHILD,
    ),
    "task_signed.json": Expect(state=TaskState.NEW, signature=SIGNATURE_FIXTURE["signature"]),
}


# ---- tasks ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expect"), GOLDEN_TASKS.items(), ids=list(GOLDEN_TASKS))
def test_golden_task_decodes_to_go_values(name: str, expect: Expect) -> None:
    task = decode_task(golden(name), seq=7)

    assert (task.id, task.type, task.queue, task.state) == (expect.id, expect.type, expect.queue, expect.state)
    assert task.payload == expect.payload
    assert (task.max_tries, task.tries, task.last_err) == (expect.max_tries, expect.tries, expect.last_err)
    assert task.created_at == WireTime(expect.created_ns, 0)
    assert (task.tried_at and task.tried_at.unix_ns) == expect.tried_ns
    assert task.deadline_at == expect.deadline
    result = None if task.result is None else (task.result.payload, task.result.completed_at.unix_ns)
    assert result == expect.result
    assert tuple(task.dependencies) == expect.dependencies
    got_results = {key: (res.payload, res.completed_at.unix_ns) for key, res in task.dependency_results.items()}
    assert got_results == expect.dependency_results
    assert task.load_dependencies is expect.load_dependencies
    assert task.signature == expect.signature
    assert task.seq == 7


@pytest.mark.parametrize("name", GOLDEN_TASKS)
def test_golden_task_reencodes_to_the_same_bytes(name: str) -> None:
    assert encode_task(decode_task(golden(name))) == golden(name)


def test_go_escapes_html_characters_in_strings() -> None:
    # Go writes the literal "<nil>" of a nil error as \u003cnil\u003e; we must read and write it the same way.
    assert b"\\u003cnil\\u003e" in golden("task_unreachable_parent_failed.json")
    assert dumps({"e": "a<b>&c\u2028\u2029é"}) == b'{"e":"a\\u003cb\\u003e\\u0026c\\u2028\\u2029\xc3\xa9"}'


def _new_with(old: bytes, new: bytes) -> bytes:
    body = golden("task_new.json")
    assert old in body
    return body.replace(old, new)


@pytest.mark.parametrize(
    ("body", "payload"),
    [
        pytest.param(
            _new_with(b'"payload":"' + PAYLOAD_B64 + b'"', b'"payload":"IntcImFcIjoxfSI="'),
            b'"{\\"a\\":1}"',
            id="ajc-string-payload",
        ),
        pytest.param(
            _new_with(
                b'"payload":"' + PAYLOAD_B64 + b'"',
                b'"payload":"ImV5SjBieUk2SW5WelpYSkFaWGhoYlhCc1pTNXVaWFFpTENKemRXSnFaV04wSWpvaWFHa2lmUT09Ig=="',
            ),
            b'"' + PAYLOAD_B64 + b'"',
            id="scheduler-double-encoded",
        ),
        pytest.param(_new_with(b'"payload":"' + PAYLOAD_B64 + b'"', b'"payload":"bnVsbA=="'), b"null", id="null-bytes"),
        pytest.param(_new_with(b'"payload":"' + PAYLOAD_B64 + b'"', b'"payload":null'), None, id="nil"),
        pytest.param(_new_with(b'"payload":"' + PAYLOAD_B64 + b'"', b'"payload":""'), b"", id="empty"),
    ],
)
def test_payload_encodings_seen_on_the_wire(body: bytes, payload: bytes | None) -> None:
    task = decode_task(body)
    assert task.payload == payload
    assert encode_task(task) == body


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2026-07-22T12:00:00+02:00", WireTime(utc_ns(2026, 7, 22, 10, 0, 0), 7200)),
        ("2026-07-22T04:30:00.5-05:30", WireTime(utc_ns(2026, 7, 22, 10, 0, 0, 500_000_000), -19800)),
        ("2026-07-22T10:00:00.000000001Z", WireTime(utc_ns(2026, 7, 22, 10, 0, 0, 1), 0)),
    ],
)
def test_deadline_keeps_the_callers_zone_and_every_nanosecond(text: str, value: WireTime) -> None:
    body = _new_with(b'"max_tries"', b'"deadline":"' + text.encode() + b'","max_tries"')
    task = decode_task(body)
    assert task.deadline_at == value
    assert encode_task(task) == body


def test_keys_in_other_case_decode_as_go_does() -> None:
    body = golden("task_retry.json")
    for key in (b"id", b"type", b"queue", b"payload", b"max_tries", b"state", b"created", b"tried", b"tries"):
        body = body.replace(b'"' + key + b'":', b'"' + key.upper() + b'":', 1)
    body = body.replace(b'"last_err":', b'"Last_Err":')
    assert b'"ID":' in body and b'"Payload"' not in body  # sanity: keys really changed

    task = decode_task(body)
    assert (task.id, task.payload, task.tries, task.last_err) == (GOLDEN_ID, PAYLOAD, 1, "smtp: connection refused")
    assert encode_task(task) == golden("task_retry.json")


def test_unknown_fields_are_ignored() -> None:
    body = golden("task_complete.json")
    body = b'{"priority":5,"meta":{"a":[1,null,"x"]},' + body[1:-1] + b',"x_future":"z"}'
    assert encode_task(decode_task(body)) == golden("task_complete.json")


def test_nulls_in_pointer_slice_and_map_fields_decode_as_absent() -> None:
    nulls = b'"dependencies":null,"dependency_results":null,"load_dependencies":null,'
    body = _new_with(b'"payload"', nulls + b'"payload"')
    body = body.replace(
        b'"tries":0}', b'"tries":0,"deadline":null,"result":null,"tried":null,"last_err":null,"signature":null}'
    )
    assert encode_task(decode_task(body)) == golden("task_new.json")


@pytest.mark.parametrize(
    ("attribute", "body"),
    [
        ("max_tries", _new_with(b'"max_tries":10', b'"max_tries":null')),
        ("tries", _new_with(b'"tries":0', b'"tries":null')),
    ],
)
def test_null_int_fields_decode_as_zero(attribute: str, body: bytes) -> None:
    assert getattr(decode_task(body), attribute) == 0


def test_dependency_results_are_written_with_sorted_keys() -> None:
    body = golden("task_active_dependency_results.json")
    first = b'"' + PARENT_A.encode() + b'":{"payload":"ok","completed":"2026-07-22T09:00:06Z"}'
    second = b'"' + PARENT_B.encode() + b'":{"payload":{"rows":3},"completed":"2026-07-22T09:00:07Z"}'
    swapped = body.replace(first + b"," + second, second + b"," + first)
    assert swapped != body
    assert encode_task(decode_task(swapped)) == body


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'"task"', id="string"),
        pytest.param(_new_with(b'"payload":"eyJ', b'"payload":"%%%'), id="payload-not-base64"),
        pytest.param(_new_with(PAYLOAD_B64, b"eyJ0bw"), id="payload-unpadded"),
        pytest.param(_new_with(b'"' + PAYLOAD_B64 + b'"', b"5"), id="payload-number"),
        pytest.param(_new_with(b"123456789Z", b"123456789"), id="created-without-zone"),
        pytest.param(_new_with(b'"2026-07-22T09:00:00.123456789Z"', b"1784710800"), id="created-number"),
        pytest.param(_new_with(b'"max_tries":10', b'"max_tries":10.0'), id="max-tries-float"),
        pytest.param(_new_with(b'"tries":0', b'"tries":"0"'), id="tries-string"),
        pytest.param(_new_with(b'"tries":0', b'"tries":0,"tried":"yesterday"'), id="tried-garbage"),
        pytest.param(_new_with(b'"max_tries"', b'"dependencies":"abc","max_tries"'), id="dependencies-string"),
        pytest.param(_new_with(b'"state"', b'"result":"sent","state"'), id="result-string"),
        pytest.param(_new_with(b'"tries":0', b'"tries":0,"signature":5'), id="signature-number"),
    ],
)
def test_malformed_task_raises_corrupt_data(body: bytes) -> None:
    with pytest.raises(CorruptDataError):
        decode_task(body)


# ---- work queue items -----------------------------------------------------------------------------------------


def test_item_encodes_exactly_as_go() -> None:
    assert encode_item(GOLDEN_ID) == golden("item.json") == b'{"kind":0,"job":"3GqtCeloEv8f4pnECKClET4Svy0"}'
    assert decode_item(golden("item.json")) == GOLDEN_ID


def test_item_keys_in_other_case_decode() -> None:
    assert decode_item(b'{"Kind":0,"JOB":"3GqtCeloEv8f4pnECKClET4Svy0","extra":true}') == GOLDEN_ID


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[]", b'{"kind":0}', b'{"kind":0,"job":""}', b'{"kind":0,"job":5}', b"null"]
)
def test_malformed_item_raises_corrupt_data(body: bytes) -> None:
    with pytest.raises(CorruptDataError):
        decode_item(body)
