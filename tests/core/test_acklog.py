"""The recent final acks a worker sends again after a disturbance: order, bodies, window, cap, and the replay."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

import asyncjobs
from asyncjobs.acklog import BUCKET_S, AckLog
from asyncjobs.constants import ACK, TERM
from asyncjobs.delivery import nak
from asyncjobs.settle import ACK_REPLAY_MAX, ACK_REPLAY_WINDOW_S, Settler
from asyncjobs.testing import eventually


def subject(n: int, stream: str = "CHORIA_AJ_TASKS") -> str:
    """An ack subject as nats-server writes it (``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>...``)."""
    return f"$JS.ACK.{stream}.WORKERS.1.{1000 + n}.{1000 + n}.{1733000000000000000 + n}.{n % 7}"


def log_of(times: list[float], *, window_s: float = 10.0, limit: int = 1000) -> AckLog:
    """A log with ack ``n`` sent at ``times[n]``."""
    log = AckLog(window_s=window_s, limit=limit)
    for n, now in enumerate(times):
        log.append(subject(n), ACK, now)
    return log


def numbers(log: AckLog) -> list[int]:
    return [int(reply.split(".")[5]) - 1000 for reply, _ in log]


def test_acks_come_back_oldest_first_with_their_bodies() -> None:
    log = AckLog(window_s=60.0, limit=100)
    sent = [(subject(n), TERM if n % 3 == 0 else ACK) for n in range(25)]
    for n, (reply, body) in enumerate(sent):
        log.append(reply, body, n * 0.3)  # over several buckets
    assert list(log) == sent
    assert len(log) == 25


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.dom.ACCHASH.CHORIA_AJ_TASKS.WORKERS.2.10.9.1733000000000000000.0.TOKEN",  # with domain and account
        subject(1, stream="OTHER"),  # another prefix than the bucket's
        "_INBOX.short",
        "nodots",
        "",
        "$JS.ACK.STRÖM.WORKERS.1.2.3.4.5",
    ],
)
def test_any_subject_comes_back_unchanged_beside_the_usual_ones(reply: str) -> None:
    log = AckLog(window_s=60.0, limit=100)
    sent = [(subject(0), ACK), (reply, TERM), (subject(2), ACK), (reply, ACK)]
    for reply_, body in sent:
        log.append(reply_, body, 0.0)
    assert list(log) == sent


@pytest.mark.parametrize(
    ("now", "kept"),
    [
        (10.0, [0, 1, 2, 3]),
        (10.49, [0, 1, 2, 3]),  # the first bucket's newest ack (0.5 s) is within the window
        (10.51, [2, 3]),  # the whole first bucket goes
        (11.4, [2, 3]),
        (11.6, []),
    ],
)
def test_expiry_drops_whole_buckets_once_their_newest_ack_is_past_the_window(now: float, kept: list[int]) -> None:
    log = log_of([0.0, 0.5, 1.0, 1.5])  # buckets [0.0, 0.5] and [1.0, 1.5]
    log.expire(now)
    assert numbers(log) == kept
    assert len(log) == len(kept)


def test_an_ack_is_kept_the_window_and_at_most_a_bucket_longer() -> None:
    times = [n * 0.07 for n in range(600)]
    for now in (5.0, 12.3, 20.0, 41.9):
        log = log_of([t for t in times if t <= now], window_s=10.0)
        log.expire(now)
        ages = [now - times[n] for n in numbers(log)]
        assert max(ages) <= 10.0 + BUCKET_S
        assert all(now - t > 10.0 for t in times[: numbers(log)[0]])  # nothing younger than the window went


def test_a_log_nobody_replays_still_stays_about_a_window_long() -> None:
    log = log_of([n * 0.1 for n in range(1000)], window_s=10.0)  # 100 s of acks, never expired by hand
    assert len(log) <= (10.0 + 2 * BUCKET_S) / 0.1
    assert numbers(log)[-1] == 999


@pytest.mark.parametrize("spread_s", [0.0, 0.25, 3.0])  # all in one bucket, a few, one bucket each
def test_the_cap_drops_the_oldest_acks_one_at_a_time(spread_s: float) -> None:
    log = log_of([n * spread_s for n in range(12)], window_s=1000.0, limit=5)
    assert numbers(log) == [7, 8, 9, 10, 11]
    assert len(log) == 5
    log.append(subject(12), TERM, 12 * spread_s)
    assert numbers(log) == [8, 9, 10, 11, 12]
    assert list(log)[-1] == (subject(12), TERM)


def test_a_copy_is_not_changed_by_later_acks() -> None:
    log = log_of([n * 0.25 for n in range(10)], limit=10)
    copy = log.copy()
    for n in range(10, 20):
        log.append(subject(n), TERM, n * 0.25)
    log.expire(100.0)
    assert numbers(copy) == list(range(10))
    assert len(copy) == 10 and len(log) == 0


def test_the_settler_keeps_a_minute_of_at_most_100_000_acks() -> None:
    settler = Settler(SimpleNamespace(nc=None), asyncjobs.Queue("ACKLOG"))  # type: ignore[arg-type]
    assert (settler.recent_acks.window_s, settler.recent_acks.limit) == (ACK_REPLAY_WINDOW_S, ACK_REPLAY_MAX)
    assert (ACK_REPLAY_WINDOW_S, ACK_REPLAY_MAX) == (60.0, 100_000)


async def test_a_replay_sends_the_final_acks_again_in_order(nc: NatsClient) -> None:
    settler = Settler(SimpleNamespace(nc=nc), asyncjobs.Queue("ACKLOG"))  # type: ignore[arg-type]
    received: list[tuple[str, bytes]] = []

    async def note(msg: Msg) -> None:
        received.append((msg.subject, msg.data))

    await nc.subscribe("$JS.ACK.REPLAY.>", cb=note)
    sent: list[tuple[str, bytes]] = []
    for n, body in enumerate([ACK, TERM, nak(0), ACK]):
        reply = subject(n, stream="REPLAY")
        await settler.ack(Msg(nc, reply=reply), body)
        sent.append((reply, body))
    await eventually(lambda: len(received) == 4 or None, timeout=5)
    assert received == sent

    settler.replay_acks()
    replaying: Any = settler._replaying
    assert replaying is not None
    await asyncio.wait_for(replaying, 5)
    final = [(reply, body) for reply, body in sent if body in (ACK, TERM)]  # a -NAK is not sent again
    await eventually(lambda: len(received) == 4 + len(final) or None, timeout=5)
    assert received[4:] == final
