"""Input validation at the edges: names and their length limits, JSON values that cannot be stored, options."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import orjson
import pytest

import asyncjobs
from asyncjobs import codec
from asyncjobs.constants import MAX_QUEUE_NAME_LENGTH, MAX_TASK_ID_LENGTH, MAX_TASK_TYPE_LENGTH
from asyncjobs.options import ClientOptions, ConnectionOptions
from asyncjobs.task import encode_payload, validate_name
from tests.core.conftest import ClientFactory

LONE_SURROGATE = os.fsdecode(b"\xff")  # '\udcff': what a file name with a byte that is not UTF-8 decodes to
NAN = float("nan")
INF = float("inf")


# ---- names ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["id\n", "id\r\n", "\nid", "a b", "a.b", "a*", "", "é", "id\x00"],
)
@pytest.mark.parametrize("what", ["task id", "task type", "queue name"])
def test_names_must_match_entirely(value: str, what: str) -> None:
    with pytest.raises(asyncjobs.InvalidNameError, match=f"{what} is invalid: .* use only letters, digits"):
        validate_name(value, what)


@pytest.mark.parametrize(
    ("what", "limit", "fix"),
    [
        ("task id", MAX_TASK_ID_LENGTH, r"use a shorter id \(a hash of the natural key\)"),
        ("task dependency id", MAX_TASK_ID_LENGTH, r"use a shorter id"),
        ("task type", MAX_TASK_TYPE_LENGTH, "use a shorter type"),
        (
            "queue name",
            MAX_QUEUE_NAME_LENGTH,
            r"use a shorter name \(its stream CHORIA_AJ_Q_<name> may have at most 255",
        ),
    ],
)
def test_name_length_limits(what: str, limit: int, fix: str) -> None:
    assert validate_name("a" * limit, what) == "a" * limit
    with pytest.raises(
        asyncjobs.InvalidNameError, match=f"^{what} is {limit + 1} characters, over the limit of {limit}: {fix}"
    ):
        validate_name("a" * (limit + 1), what)


def test_limits() -> None:
    assert (MAX_TASK_ID_LENGTH, MAX_TASK_TYPE_LENGTH, MAX_QUEUE_NAME_LENGTH) == (1024, 255, 243)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"id": "x" * 4050}, "task id is 4050 characters, over the limit of 1024: use a shorter id"),
        ({"id": "id\n"}, "task id is invalid"),
        ({"dependencies": ["d" * 1025]}, "task dependency id is 1025 characters"),
        ({"dependencies": ["dep\n"]}, "task dependency id is invalid"),
    ],
)
def test_task_ids_checked(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(asyncjobs.InvalidNameError, match=fragment):
        asyncjobs.Task("x", **kwargs)


def test_task_type_and_queue_names_checked() -> None:
    with pytest.raises(asyncjobs.InvalidNameError, match="task type is 256 characters, over the limit of 255"):
        asyncjobs.Task("t" * 256)
    with pytest.raises(asyncjobs.InvalidNameError, match="queue name is 244 characters, over the limit of 243"):
        asyncjobs.Queue("Q" * 244)
    with pytest.raises(asyncjobs.InvalidNameError, match="queue name is invalid"):
        asyncjobs.Queue("EMAIL\n")


async def test_longest_names_work_on_a_server(make_client: ClientFactory) -> None:
    # The longest queue name makes a 255 character stream name, the most nats-server accepts.
    client = await make_client(queue="Q" * MAX_QUEUE_NAME_LENGTH)
    task = await client.enqueue(asyncjobs.Task("t" * MAX_TASK_TYPE_LENGTH, {"a": 1}, id="i" * MAX_TASK_ID_LENGTH))
    loaded = await client.get_task(task.id)
    assert loaded.id == task.id and loaded.type == task.type and loaded.queue == client.queue.name


# ---- work items -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b'{"kind":0,"job":"a.b"}',
        b'{"kind":0,"job":"id\\n"}',
        b'{"kind":0,"job":"a b"}',
        b'{"kind":0,"job":"caf\xc3\xa9"}',
        b'{"kind":0,"job":"' + b"x" * (MAX_TASK_ID_LENGTH + 1) + b'"}',
        b'{"job":"CHORIA_AJ.T.x"}',
        b'{"kind":0,"job":"\\u0041.B"}',
    ],
)
def test_item_with_an_invalid_job_id_is_corrupt(data: bytes) -> None:
    with pytest.raises(asyncjobs.CorruptDataError, match="corrupt queue item received: task id"):
        codec.decode_item(data)


@pytest.mark.parametrize(
    ("data", "job"),
    [
        (b'{"kind":0,"job":"2P3ab:c-d_e"}', "2P3ab:c-d_e"),
        (b'{"job":"abc","kind":0}', "abc"),
        (b'{"kind":0,"job":"' + b"x" * MAX_TASK_ID_LENGTH + b'"}', "x" * MAX_TASK_ID_LENGTH),
        (b'{"kind":0,"job":"\\u0041B"}', "AB"),
    ],
)
def test_item_with_a_valid_job_id(data: bytes, job: str) -> None:
    assert codec.decode_item(data) == job


# ---- JSON values ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Reading:
    value: float


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (NAN, "holds the float nan, which JSON cannot represent"),
        ({"a": [1, {"b": -INF}]}, "holds the float -inf"),
        ((1, INF), "holds the float inf"),
        ({"r": Reading(NAN)}, "holds the float nan"),
        (2**64, r"Integer exceeds 64-bit range\): integers must fit in 64 bits"),
        ({"n": -(2**63) - 1}, "integers must fit in 64 bits"),
        ({"path": LONE_SURROGATE}, "lone surrogate.*safe_text"),
        ({1: "int key"}, "cannot be JSON-encoded"),
        (object(), "cannot be JSON-encoded"),
    ],
)
def test_payloads_that_cannot_be_stored(payload: Any, fragment: str) -> None:
    with pytest.raises(asyncjobs.ConfigurationError, match=fragment):
        encode_payload(payload)
    with pytest.raises(asyncjobs.ConfigurationError, match=fragment):
        asyncjobs.Task("x", payload)


@pytest.mark.parametrize(
    ("payload", "stored"),
    [
        ({"a": None, "b": "null", "c": 1.5}, b'{"a":null,"b":"null","c":1.5}'),
        ([None, math.pi], b"[null,3.141592653589793]"),
        (2**64 - 1, b"18446744073709551615"),
        (-(2**63), b"-9223372036854775808"),
        ("é\u2028", orjson.dumps("é\u2028")),
        (Reading(0.5), b'{"value":0.5}'),
    ],
)
def test_payloads_that_can_be_stored(payload: Any, stored: bytes) -> None:
    assert encode_payload(payload) == stored


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (2**70, "integers must fit in 64 bits"),
        (-(2**63) - 1, "integers must fit in 64 bits"),
        (LONE_SURROGATE, "lone surrogate"),
        (["ok", LONE_SURROGATE], "lone surrogate"),
        (NAN, "handler result holds the float nan"),
        (-INF, "handler result holds the float -inf"),
        ({"x": [NAN]}, "handler result holds the float nan"),
        (object(), "handler result of type object cannot be JSON-encoded"),
    ],
)
def test_results_that_cannot_be_stored(value: Any, fragment: str) -> None:
    with pytest.raises(asyncjobs.ConfigurationError, match=fragment):
        codec.result_payload(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        ("text", "text"),
        ("é", "é"),
        (2**64 - 1, 2**64 - 1),
        (1.5, 1.5),
        (b"\x00\xff", "AP8="),
        ((1, "a"), [1, "a"]),
        ({"a": None}, {"a": None}),
        (Reading(2.0), {"value": 2.0}),
    ],
)
def test_results_always_encode(value: Any, expected: Any) -> None:
    result = codec.result_payload(value)
    assert result == expected
    task = asyncjobs.Task("x")
    task.result = asyncjobs.TaskResult(result, task.created_at)
    assert codec.decode_task(codec.encode_task(task)).result == task.result


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("plain ascii", "plain ascii"),
        ("caf\u00e9 \u2603 \U0001f600", "caf\u00e9 \u2603 \U0001f600"),
        (LONE_SURROGATE, "\\udcff"),
        ("open /tmp/\udcff\udcfe.txt: no such file", "open /tmp/\\udcff\\udcfe.txt: no such file"),
        ("\ud800 high", "\\ud800 high"),
    ],
)
def test_safe_text(text: str, expected: str) -> None:
    safe = codec.safe_text(text)
    assert safe == expected
    orjson.dumps(safe)


def test_safe_text_returns_clean_text_itself() -> None:
    text = "caf\u00e9" * 1000
    assert codec.safe_text(text) is text


def test_task_with_surrogates_in_last_err_still_encodes() -> None:
    task = asyncjobs.Task("x")
    task.last_err = f"cannot open {LONE_SURROGATE}"
    decoded = codec.decode_task(codec.encode_task(task))
    assert decoded.last_err == "cannot open \\udcff"
    event = codec.decode_event(codec.encode_task_event(task))
    assert isinstance(event, asyncjobs.TaskStateEvent) and event.last_error == "cannot open \\udcff"


# ---- options --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("concurrency", True, "concurrency must be an integer of at least 1, not True"),
        ("concurrency", False, "concurrency must be an integer"),
        ("concurrency", 0, "concurrency must be at least 1"),
        ("concurrency", 2.5, "concurrency must be an integer"),
        ("replicas", True, "replicas must be an integer"),
        ("replicas", 6, "replicas must be between 1 and 5"),
        ("prometheus_port", True, "prometheus_port must be an integer"),
        ("prometheus_port", 70000, "prometheus_port must be a TCP port"),
        ("request_timeout", True, "request_timeout must be a number of seconds > 0, not True"),
        ("request_timeout", 0, "request_timeout must be a number of seconds > 0"),
        ("request_timeout", NAN, "request_timeout must be a number of seconds"),
        ("request_timeout", "5", "request_timeout must be a number of seconds"),
        ("shutdown_grace", False, "shutdown_grace must be a number of seconds >= 0"),
        ("shutdown_grace", -1, "shutdown_grace must be a number of seconds >= 0"),
    ],
)
def test_client_options_refuse_bools_and_bad_numbers(option: str, value: Any, fragment: str) -> None:
    with pytest.raises(asyncjobs.ConfigurationError, match=fragment):
        ClientOptions(**{option: value})


def test_client_options_accept_good_numbers() -> None:
    options = ClientOptions(concurrency=1, replicas=3, prometheus_port=0, request_timeout=0.5, shutdown_grace=0)
    assert options.concurrency == 1 and options.replicas == 3


@pytest.mark.parametrize("value", [True, 0, -1, INF, "5"])
def test_connect_timeout_is_checked(value: Any) -> None:
    with pytest.raises(asyncjobs.ConfigurationError, match="connect_timeout must be a number of seconds > 0"):
        ConnectionOptions(connect_timeout=value)


async def test_connect_refuses_a_bool_concurrency_before_connecting() -> None:
    # No server listens on port 1: the option error must come first.
    with pytest.raises(asyncjobs.ConfigurationError, match="concurrency must be an integer of at least 1, not True"):
        await asyncjobs.connect("nats://127.0.0.1:1", concurrency=True)
