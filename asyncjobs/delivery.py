"""One delivered work item: its delivery count, its ack bodies, and the running handler's deadline."""

from __future__ import annotations

import asyncio
import time
from typing import Final

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from asyncjobs.constants import NAK_PREFIX, WPI
from asyncjobs.errors import AsyncJobsError, TaskTimeout

ACK_TIMEOUT_S: Final = 2.0
MAX_ERROR_CHARS: Final = 4000
"""Longest ``last_err`` stored for a handler's exception (the log line keeps the whole message)."""


def delivery_count(reply: str) -> int:
    """The delivery count from a JetStream ack subject (1 on first delivery), or 0 if it cannot be read."""
    tokens = reply.split(".")
    try:
        if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
            return int(tokens[4])
        if len(tokens) >= 12:  # $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>...
            return int(tokens[6])
    except ValueError:
        pass
    return 0


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
