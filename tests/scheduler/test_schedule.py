"""The Schedule value object: validation, due times, task ids, jitter, and its ScheduledTask JSON."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from asyncjobs import AsyncJobsError, ConfigurationError, CorruptDataError
from asyncjobs.names import validate_task_id
from asyncjobs.wiretime import WireTime
from asyncjobs_scheduler.codec import decode_schedule, encode_schedule, go_task_payload
from asyncjobs_scheduler.constants import DstGap, DstOverlap, Misfire, Overlap
from asyncjobs_scheduler.errors import InvalidSchedule, ScheduleExists, ScheduleNotFound, SchedulerError
from asyncjobs_scheduler.schedule import Schedule

GO_GOLDEN = (
    b'{"name":"EMAIL_MONTHLY_UPDATE","schedule":"0 0 1 * *","queue":"EMAIL","task_type":"email:monthly",'
    b'"payload":null,"deadline":43200000000000,"max_tries":10,"created_at":"2022-02-17T17:40:37.001480991Z"}'
)
PROTOCOL_EXAMPLE = (
    b'{"name":"EMAIL_DIGEST","schedule":"0 7 * * 1","queue":"EMAIL","task_type":"email:digest",'
    b'"payload":"eyJsaXN0Ijoid2Vla2x5In0=","deadline":3600000000000,"max_tries":5,"created_at":"2026-03-01T12:00:00.5Z"}'
)
JAN1 = datetime(2026, 1, 1, tzinfo=UTC)


def make(**options: Any) -> Schedule:
    args = {"name": "report", "spec": "0 9 * * *", "task_type": "report:daily"} | options
    return Schedule(args.pop("name"), args.pop("spec"), args.pop("task_type"), args.pop("payload", None), **args)


# -- validation ----------------------------------------------------------------------------------------------------

INVALID = [
    ({"name": "bad name"}, "schedule name is invalid.*use only letters"),
    ({"name": "x" * 256}, "schedule name is 256 characters, over the limit of 255"),
    ({"name": ""}, "schedule name is invalid"),
    ({"task_type": "bad type"}, "task type is invalid"),
    ({"spec": "0 9 * *"}, "has 4 fields, expected exactly 5"),
    ({"spec": "@every 0s"}, "must be positive"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus': use an IANA zone"),
    ({"timezone": "Local"}, "unknown time zone"),
    ({"timezone": 5}, "timezone must be an IANA zone name"),
    ({"spec": "CRON_TZ=Asia/Tokyo 0 9 * * *", "timezone": "Europe/London"}, "give the zone once"),
    ({"deadline": 29}, "deadline 29 s is too short: use at least 30 s"),
    ({"deadline": timedelta(seconds=29.5)}, "too short"),
    ({"deadline": -1}, "deadline must be a finite number of seconds, at least 0"),
    ({"deadline": "1h"}, "deadline must be seconds as a number or a timedelta, not str"),
    ({"deadline": float("inf")}, "finite"),
    ({"max_tries": 0}, "max_tries must be a whole number of at least 1, or None"),
    ({"max_tries": True}, "max_tries must be a whole number"),
    ({"max_tries": 2.0}, "max_tries must be a whole number"),
    ({"misfire": "never"}, "unknown misfire policy 'never': use 'skip' or 'run_once' or 'run_all'"),
    ({"catchup_window": -1}, "catchup_window must be a finite number of seconds, at least 0"),
    ({"dst_gap": "later"}, "unknown dst_gap policy 'later': use 'shift' or 'skip'"),
    ({"dst_overlap": "thrice"}, "unknown dst_overlap policy 'thrice': use 'once' or 'twice'"),
    ({"overlap": "queue"}, "unknown overlap policy 'queue': use 'allow' or 'skip'"),
    ({"jitter": -0.5}, "jitter must be a finite number of seconds, at least 0"),
    ({"jitter": True}, "jitter must be seconds"),
    ({"spec": "@every 90s", "jitter": 90}, "jitter 90 s is not shorter than the @every interval 90 s"),
    ({"queue": "bad queue"}, "queue name is invalid"),
    ({"queue": ""}, "queue name is invalid"),
    ({"payload": {1, 2}}, "task payload"),
    ({"payload": float("nan")}, "NaN"),
    ({"created_at": datetime(2026, 1, 1)}, "created_at must be an aware datetime"),
    ({"created_at": "2026-01-01"}, "created_at must be a datetime"),
    ({"paused": "yes"}, "paused must be True or False"),
]


@pytest.mark.parametrize(("options", "message"), INVALID)
def test_invalid_arguments_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSchedule, match=message):
        make(**options)


def test_error_tree() -> None:
    assert issubclass(InvalidSchedule, SchedulerError) and issubclass(InvalidSchedule, ValueError)
    assert issubclass(SchedulerError, AsyncJobsError)
    assert issubclass(ScheduleNotFound, SchedulerError) and issubclass(ScheduleNotFound, LookupError)
    assert issubclass(ScheduleExists, SchedulerError)


def test_defaults_and_normal_forms() -> None:
    s = make(payload={"to": "ops"}, deadline=timedelta(hours=1), misfire="run_all", overlap=Overlap.SKIP)
    assert s.payload == b'{"to":"ops"}'
    assert (s.queue, s.timezone, s.deadline, s.max_tries, s.task_max_tries) == (None, "UTC", 3600.0, None, 10)
    assert s.misfire is Misfire.RUN_ALL and s.overlap is Overlap.SKIP
    assert (s.dst_gap, s.dst_overlap, s.catchup_window, s.jitter) == (DstGap.SHIFT, DstOverlap.ONCE, 3600.0, 0.0)
    assert (s.created_at, s.created, s.paused) == (None, None, False)
    assert make(payload=b"\x00raw").payload == b"\x00raw"
    assert make(deadline=30).deadline_ns == 30_000_000_000


def test_spec_prefix_becomes_the_timezone() -> None:
    s = make(spec="CRON_TZ=Europe/London 0 9 * * *")
    assert (s.spec, s.timezone, s.wire_spec) == ("0 9 * * *", "Europe/London", "CRON_TZ=Europe/London 0 9 * * *")
    assert make(spec="TZ=Europe/London 0 9 * * *", timezone="Europe/London").timezone == "Europe/London"
    assert make(timezone="Asia/Tokyo").wire_spec == "CRON_TZ=Asia/Tokyo 0 9 * * *"
    assert make().wire_spec == "0 9 * * *"


def test_frozen_equal_and_replace() -> None:
    s = make()
    with pytest.raises(AttributeError):
        s.name = "other"  # type: ignore[misc]
    assert s == make() and hash(s) == hash(make())
    later = s.replace(paused=True, timezone="Europe/Paris")
    assert later.paused and later.timezone == "Europe/Paris" and later.name == s.name
    with pytest.raises(InvalidSchedule, match="misfire"):
        s.replace(misfire="sometimes")


# -- due times -----------------------------------------------------------------------------------------------------


def test_next_times() -> None:
    s = make(timezone="Europe/London")
    got = s.next_times(datetime(2026, 6, 30, 12, tzinfo=UTC), 3)
    assert got == [datetime(2026, 7, d, 8, tzinfo=UTC) for d in (1, 2, 3)]
    assert all(t.tzinfo is UTC for t in got)
    assert s.next_times(JAN1, 0) == []
    assert s.next_after(datetime(2026, 6, 30, 12, tzinfo=timezone(timedelta(hours=2)))) == got[0]
    with pytest.raises(ConfigurationError, match="aware"):
        s.next_times(datetime(2026, 1, 1), 1)
    with pytest.raises(ConfigurationError, match="count"):
        s.next_times(JAN1, -1)


def test_due_between() -> None:
    s = make(spec="0 * * * *")
    got = s.due_between(JAN1, JAN1 + timedelta(hours=5))
    assert got == [JAN1 + timedelta(hours=h) for h in range(1, 6)]
    assert s.due_between(JAN1, JAN1 + timedelta(hours=5), limit=2) == got[-2:]
    assert s.due_between(JAN1, JAN1 + timedelta(minutes=59)) == []


def test_every_is_anchored_on_created_at() -> None:
    created = datetime(2026, 1, 1, 10, 0, 7, 900_000, tzinfo=UTC)
    a = make(spec="@every 1h", created_at=created)
    b = decode_schedule(encode_schedule(a, "Q"))
    after = datetime(2026, 1, 2, tzinfo=UTC)
    expected = [datetime(2026, 1, 2, h, 0, 7, tzinfo=UTC) for h in (0, 1, 2)]
    assert a.next_times(after, 3) == b.next_times(after, 3) == expected
    assert a.anchor == datetime(2026, 1, 1, 10, 0, 7, tzinfo=UTC)
    # Not stored yet: counted from the Unix epoch.
    unstored = make(spec="@every 1h")
    assert unstored.next_after(datetime(2026, 1, 1, 0, 30, tzinfo=UTC)) == datetime(2026, 1, 1, 1, tzinfo=UTC)


def test_task_id() -> None:
    s = make(name="nightly:report")
    due = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    task_id = s.task_id(due)
    assert task_id == "nightly:report:20260308T070000Z"
    assert validate_task_id(task_id) == task_id
    assert s.task_id(due.astimezone(timezone(timedelta(hours=-4)))) == task_id
    assert make(name="other").task_id(due) != task_id
    assert make(name="x" * 255).task_id(due).startswith("x" * 255 + ":")
    with pytest.raises(ConfigurationError, match="aware"):
        s.task_id(datetime(2026, 3, 8, 7))


def test_jitter_is_deterministic_and_bounded() -> None:
    dues = [JAN1 + timedelta(minutes=n) for n in range(200)]
    s = make(jitter=60)
    delays = [s.jittered(due) - due for due in dues]
    assert all(timedelta(0) <= d <= timedelta(seconds=60) for d in delays)
    assert len(set(delays)) > 150  # spread out, not one fixed delay
    assert [make(jitter=60).jittered(due) for due in dues] == [due + d for due, d in zip(dues, delays, strict=True)]
    assert [make(name="other", jitter=60).jittered(due) - due for due in dues] != delays
    assert make().jittered(dues[3]) == dues[3]
    local = dues[3].astimezone(timezone(timedelta(hours=5)))
    assert s.jittered(local) == s.jittered(dues[3]) and s.jittered(local).tzinfo is UTC


# -- ScheduledTask JSON --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("golden", [GO_GOLDEN, PROTOCOL_EXAMPLE])
def test_go_bytes_decode_and_encode_exactly(golden: bytes) -> None:
    s = decode_schedule(golden)
    assert encode_schedule(s) == golden
    assert decode_schedule(golden.decode()) == s


def test_go_golden_fields() -> None:
    s = decode_schedule(GO_GOLDEN)
    assert (s.name, s.spec, s.queue, s.task_type, s.payload) == (
        "EMAIL_MONTHLY_UPDATE",
        "0 0 1 * *",
        "EMAIL",
        "email:monthly",
        None,
    )
    assert (s.deadline, s.max_tries, s.timezone) == (43200.0, 10, "UTC")
    assert s.created_at == WireTime(1645119637001480991)
    # A Go-written schedule gets the same defaults as a new one.
    assert (s.misfire, s.catchup_window, s.overlap, s.jitter, s.paused) == (Misfire.RUN_ONCE, 3600.0, "allow", 0, False)
    assert decode_schedule(PROTOCOL_EXAMPLE).payload == b'{"list":"weekly"}'


def test_old_spellings_and_any_case() -> None:
    old = (
        b'{"Name":"EMAIL_MONTHLY_UPDATE","Schedule":"0 0 1 * *","Queue":"EMAIL","TaskType":"email:monthly",'
        b'"Payload":null,"Deadline":43200000000000,"MaxTries":10,"CreatedAt":"2022-02-17T17:40:37.001480991Z"}'
    )
    assert encode_schedule(decode_schedule(old)) == GO_GOLDEN
    shouting = orjson.loads(GO_GOLDEN)
    shouting = {key.upper(): value for key, value in shouting.items()}
    assert decode_schedule(orjson.dumps(shouting)) == decode_schedule(GO_GOLDEN)
    # The exact key wins over one that differs only in case.
    both = orjson.loads(GO_GOLDEN) | {"MaxTries": 3}
    assert decode_schedule(orjson.dumps(both)).max_tries == 10


def test_extra_fields_round_trip_after_gos() -> None:
    s = make(
        payload=[1, 2],
        queue="REPORTS",
        timezone="America/New_York",
        deadline=90.5,
        max_tries=3,
        misfire="run_all",
        catchup_window=7200,
        dst_gap="skip",
        dst_overlap="twice",
        overlap="skip",
        jitter=12.25,
        created_at=datetime(2026, 1, 1, 8, 30, tzinfo=UTC),
        paused=True,
    )
    data = encode_schedule(s, "DEFAULT")
    assert data == (
        b'{"name":"report","schedule":"CRON_TZ=America/New_York 0 9 * * *","queue":"REPORTS",'
        b'"task_type":"report:daily","payload":"WzEsMl0=","deadline":90500000000,"max_tries":3,'
        b'"created_at":"2026-01-01T08:30:00Z","misfire":"run_all","catchup_window":7200000000000,"dst_gap":"skip",'
        b'"dst_overlap":"twice","overlap":"skip","jitter":12250000000,"paused":true}'
    )
    assert decode_schedule(data) == s


def test_encode_uses_the_given_queue_and_the_current_time() -> None:
    before = WireTime.now().unix_ns
    obj = orjson.loads(encode_schedule(make(), "EMAIL"))
    assert obj["queue"] == "EMAIL"
    assert obj["max_tries"] == 10 and "deadline" not in obj
    created = decode_schedule(encode_schedule(make(), "EMAIL")).created_at
    assert created is not None and created.unix_ns >= before
    with pytest.raises(InvalidSchedule, match="has no queue: pass queue="):
        encode_schedule(make())


def test_tz_prefix_written_by_go_is_read() -> None:
    go = orjson.loads(GO_GOLDEN) | {"schedule": "TZ=Australia/Sydney 0 0 1 * *"}
    s = decode_schedule(orjson.dumps(go))
    assert (s.timezone, s.spec, s.wire_spec) == ("Australia/Sydney", "0 0 1 * *", "CRON_TZ=Australia/Sydney 0 0 1 * *")


def test_go_max_tries_zero_means_the_default() -> None:
    go = orjson.loads(GO_GOLDEN) | {"max_tries": 0}
    assert decode_schedule(orjson.dumps(go)).max_tries is None


BAD_JSON = [
    (b"not json", "not valid JSON"),
    (b"[1]", "not a JSON object"),
    ({"name": None}, "'name' is missing or empty"),
    ({"queue": ""}, "'queue' is missing or empty"),
    ({"schedule": 5}, "'schedule' must be a string"),
    ({"max_tries": "10"}, "'max_tries' must be an integer"),
    ({"deadline": 1.5}, "'deadline' must be an integer"),
    ({"deadline": 10_000_000_000}, "deadline 10 s is too short"),
    ({"payload": "***"}, "'payload' is not valid base64"),
    ({"payload": 5}, "'payload' must be a base64 string"),
    ({"created_at": "yesterday"}, "'created_at'.*invalid time"),
    ({"created_at": 5}, "'created_at' must be an RFC 3339 time string"),
    ({"schedule": "0 0 30 2 *"}, "scheduled task 'EMAIL_MONTHLY_UPDATE' is invalid:.*never fires"),
    ({"misfire": "later"}, "unknown misfire policy"),
    ({"jitter": "5s"}, "'jitter' must be an integer"),
    ({"paused": 1}, "'paused' must be true or false"),
]


@pytest.mark.parametrize(("change", "message"), BAD_JSON)
def test_malformed_values_name_the_key(change: bytes | dict[str, Any], message: str) -> None:
    data = change if isinstance(change, bytes) else orjson.dumps(orjson.loads(GO_GOLDEN) | change)
    with pytest.raises(CorruptDataError, match=message):
        decode_schedule(data)


def test_go_scheduler_payload_double_encoding() -> None:
    # docs/protocol.md, Scheduled tasks: Go's scheduler JSON-encodes the stored payload bytes once more.
    stored = base64.b64decode("eyJ0byI6InVzZXJAZXhhbXBsZS5uZXQiLCJzdWJqZWN0IjoiaGkifQ==")
    expected = "ImV5SjBieUk2SW5WelpYSkFaWGhoYlhCc1pTNXVaWFFpTENKemRXSnFaV04wSWpvaWFHa2lmUT09Ig=="
    assert base64.b64encode(go_task_payload(stored)).decode() == expected
    assert base64.b64encode(go_task_payload(None)).decode() == "bnVsbA=="
