"""One delivered work item: its delivery count, its ack bodies, and the running handler's deadline."""

from __future__ import annotations

import asyncio
import time
from typing import Final

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from asyncjobs.constants import NAK_PREFIX, WPI
from asyncjobs.errors import AsyncJobsError, TaskTimeout
from asyncjobs.wiretime import NS_PER_SECOND

ACK_TIMEOUT_S: Final = 2.0
MAX_ERROR_CHARS: Final = 4000
"""Longest ``last_err`` stored for a handler's exception (the log line keeps the whole message)."""
ORPHAN_GRACE_S = 5.0
"""Seconds of age during which an item whose task is not stored yet is handed back instead of terminated: with
pipelined enqueue the item can be stored before its task (docs/decisions.md). Not ``Final``: tests shorten it."""
ORPHAN_FIRST_DELAY_S: Final = 0.05
"""The hand-back delay of such an item's first delivery; it doubles with each delivery."""
ORPHAN_MAX_DELAY_S: Final = 1.0
"""The longest hand-back delay of such an item."""
_V1_ACK_TOKENS: Final = 9
_V2_ACK_TOKENS: Final = 12


def delivery_count(reply: str) -> int:
    """The delivery count from a JetStream ack subject (1 on first delivery), or 0 if it cannot be read."""
    tokens = reply.split(".")
    try:
        if len(tokens) == _V1_ACK_TOKENS:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
            return int(tokens[4])
        if len(tokens) >= _V2_ACK_TOKENS:  # $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>...
            return int(tokens[6])
    except ValueError:
        pass
    return 0


def stored_at_ns(reply: str) -> int | None:
    """When the delivered message was stored in its stream (Unix ns), from a JetStream ack subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<timestamp>.<pending>``, or with a domain and account
    in front (``$JS.ACK.<domain>.<account>.<stream>...``, 12 tokens or more).

    Returns:
        The timestamp, or ``None`` when the subject is not an ack subject or the token is not a positive integer.
    """
    tokens = reply.split(".")
    if len(tokens) == _V1_ACK_TOKENS:
        token = tokens[7]
    elif len(tokens) >= _V2_ACK_TOKENS:
        token = tokens[9]
    else:
        return None
    if tokens[0] != "$JS" or tokens[1] != "ACK" or not token.isdigit():
        return None
    stamp = int(token)
    return stamp or None


def orphan_delay_ns(reply: str, delivered: int, now_ns: int) -> int | None:
    """The hand-back delay for an item whose task is not stored, or ``None`` once it is old enough to terminate.

    With pipelined enqueue an item can be stored, and delivered, a moment before its task, so a young item is handed
    back for ``ORPHAN_FIRST_DELAY_S``, doubling with each delivery up to ``ORPHAN_MAX_DELAY_S``, until it is
    ``ORPHAN_GRACE_S`` old. Its age is the later of two clocks: the stream timestamp in ``reply`` against
    ``now_ns``, and the hand-back delays its earlier deliveries must have waited, so that a worker whose clock runs
    behind the server's (or a subject without a timestamp) still gives up after the grace.

    Args:
        reply: the delivery's ack subject.
        delivered: its delivery count (1 on first delivery).
        now_ns: the current Unix time in ns.
    """
    if delivered < 1:
        return None  # not a JetStream delivery: nothing bounds its hand-backs
    grace_ns = int(ORPHAN_GRACE_S * NS_PER_SECOND)
    first_ns = int(ORPHAN_FIRST_DELAY_S * NS_PER_SECOND)
    max_ns = int(ORPHAN_MAX_DELAY_S * NS_PER_SECOND)
    waited_ns = sum(min(first_ns << n, max_ns) for n in range(min(delivered - 1, 64)))
    stamp = stored_at_ns(reply)
    age_ns = max(waited_ns, now_ns - stamp if stamp is not None else 0)
    if age_ns >= grace_ns:
        return None
    return min(first_ns << min(delivered - 1, 32), max_ns)


def error_text(error: BaseException) -> str:
    """The ``last_err`` for a failed try: our errors' own messages, others prefixed with their type.

    ``str(KeyError("email"))`` is just ``'email'``; ``KeyError: 'email'`` says what happened. The text always
    encodes as JSON (lone surrogates, e.g. from ``os.fsdecode`` file names, are escaped), and is cut to
    ``MAX_ERROR_CHARS`` so that an outsized message cannot make the task too large to store.
    """
    name = type(error).__name__
    try:
        message = str(error)
    except Exception as exc:  # a broken __str__ must not lose the failure
        message = f"(its message could not be read: {type(exc).__name__})"
    if not isinstance(error, AsyncJobsError):
        message = f"{name}: {message}" if message else name
    elif not message:
        message = name
    if len(message) > MAX_ERROR_CHARS:
        message = f"{message[:MAX_ERROR_CHARS]}... ({len(message) - MAX_ERROR_CHARS} more characters cut)"
    try:
        message.encode()
    except UnicodeEncodeError:
        message = message.encode("utf-8", "backslashreplace").decode()
    return message


def nak(delay_ns: int) -> bytes:
    """The ``-NAK {"delay": <ns>}`` ack body, exactly as Go sends it."""
    return NAK_PREFIX + str(max(0, int(delay_ns))).encode() + b"}"


class HandlerContext:
    """What a running handler's task knows about its delivery: used by ``Task.mark_in_progress``."""

    __slots__ = ("max_run_time_s", "msg", "nc", "scope")

    def __init__(self, nc: NATS, msg: Msg, max_run_time_s: float) -> None:
        self.nc = nc
        self.msg = msg
        self.max_run_time_s = max_run_time_s
        self.scope: asyncio.Timeout | None = None

    @property
    def deadline(self) -> float:
        """The handler's deadline as a Unix time in seconds."""
        loop = asyncio.get_running_loop()
        when = self.scope.when() if self.scope is not None else None
        remaining = self.max_run_time_s if when is None else when - loop.time()
        return time.time() + remaining

    async def mark_in_progress(self) -> None:
        """Send ``+WPI`` and, once the server confirms, move the handler's deadline a max run time ahead.

        Raises:
            TaskTimeout: the server did not confirm; the deadline is unchanged.
        """
        try:
            await self.nc.request(self.msg.reply, WPI, timeout=ACK_TIMEOUT_S)
        except Exception as exc:
            raise TaskTimeout(f"could not extend the handler deadline: {exc}") from exc
        if self.scope is not None:
            self.scope.reschedule(asyncio.get_running_loop().time() + self.max_run_time_s)
