"""KSUID ids: format, timestamps, ordering and the upstream fixtures."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

import pytest

from asyncjobs.errors import ConfigurationError
from asyncjobs.ksuid import KSUID_LENGTH, ksuid_timestamp, new_ksuid

_KSUID_RE = re.compile(r"[0-9A-Za-z]{27}")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Upstream docs: a lifecycle event id and its timestamp.
        ("24mHmiRY9eQCVU4xuHwsztJ2MJH", datetime(2022, 2, 7, 10, 16, 42, tzinfo=UTC)),
        # Upstream docs/protocol.md, Task JSON fixture task id.
        ("3GqtCeloEv8f4pnECKClET4Svy0", datetime(2026, 7, 22, 9, 0, 0, tzinfo=UTC)),
        # The smallest and largest KSUIDs segmentio/ksuid accepts.
        ("000000000000000000000000000", datetime(2014, 5, 13, 16, 53, 20, tzinfo=UTC)),
        ("aWgEPTl1tmebfsQzFP4bxwgy80V", datetime(2150, 6, 19, 23, 21, 35, tzinfo=UTC)),
    ],
)
def test_known_timestamps(value: str, expected: datetime) -> None:
    assert ksuid_timestamp(value) == expected
    assert ksuid_timestamp(value).tzinfo is UTC


@pytest.mark.parametrize(
    "now",
    [1_400_000_000, 1_644_229_002.9, 1_784_710_800, 5_694_967_295],
)
def test_generated_ids_round_trip_their_time(now: float) -> None:
    value = new_ksuid(now=now)
    assert len(value) == KSUID_LENGTH
    assert _KSUID_RE.fullmatch(value)
    assert ksuid_timestamp(value) == datetime.fromtimestamp(int(now), UTC)


def test_generated_ids_use_the_current_time() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    stamp = ksuid_timestamp(new_ksuid())
    after = datetime.now(UTC)
    assert before <= stamp <= after


def test_generated_ids_are_unique() -> None:
    ids = {new_ksuid(now=1_784_710_800) for _ in range(1000)}
    assert len(ids) == 1000


def test_ids_sort_by_time() -> None:
    # Later seconds must sort after earlier ones whatever the random part, so compare many pairs.
    times = [1_400_000_000 + step * 977_777 for step in range(200)]
    ids = [new_ksuid(now=now) for now in times]
    assert ids == sorted(ids)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "27 base62 characters"),
        ("3GqtCeloEv8f4pnECKClET4Svy", "27 base62 characters"),
        ("3GqtCeloEv8f4pnECKClET4Svy00", "27 base62 characters"),
        ("3GqtCeloEv8f4pnECKClET4Svy-", "not a base62 character"),
        ("3GqtCeloEv8f4pnECKClET4Svy\u0663", "not a base62 character"),
        # One past the largest 20-byte value.
        ("aWgEPTl1tmebfsQzFP4bxwgy80W", "more than 20 bytes"),
        ("zzzzzzzzzzzzzzzzzzzzzzzzzzz", "more than 20 bytes"),
    ],
)
def test_malformed_ids_are_rejected(value: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        ksuid_timestamp(value)


@pytest.mark.parametrize("now", [1_399_999_999, 5_694_967_296, -1.0])
def test_times_outside_the_timestamp_range_are_rejected(now: float) -> None:
    with pytest.raises(ConfigurationError, match="cannot make a KSUID"):
        new_ksuid(now=now)


@pytest.mark.parametrize("now", [1_400_000_000, 1_784_710_800, 5_694_967_295])
def test_fast_ids_are_valid_unique_and_of_their_second(now: float) -> None:
    ids = [new_ksuid(now=now, secure=False) for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(_KSUID_RE.fullmatch(value) for value in ids)
    assert {ksuid_timestamp(value) for value in ids} == {datetime.fromtimestamp(int(now), UTC)}


def test_fast_ids_start_afresh_each_second_and_sort_by_time() -> None:
    first = [new_ksuid(now=1_784_710_800, secure=False) for _ in range(3)]
    second = [new_ksuid(now=1_784_710_801, secure=False) for _ in range(3)]
    assert first == sorted(first) and second == sorted(second)
    assert max(first) < min(second)


def test_a_forked_child_does_not_continue_its_parents_fast_ids() -> None:
    parent = [new_ksuid(now=1_784_710_900, secure=False) for _ in range(2)]
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.close(reader)
        os.write(writer, new_ksuid(now=1_784_710_900, secure=False).encode())
        os._exit(0)
    os.close(writer)
    child = os.read(reader, 64).decode()
    os.close(reader)
    os.waitpid(pid, 0)
    ours = new_ksuid(now=1_784_710_900, secure=False)
    assert ours[:18] == parent[0][:18]  # the parent carries on from its start
    assert child != ours and child[:18] != parent[0][:18]  # the child drew a random start of its own
