"""The raw JetStream API over a nats-py connection.

This is the one place where NATS and JetStream failures are translated into :mod:`asyncjobs.errors`. We speak the
JetStream JSON API directly (rather than through nats-py's JetStream helpers) so that the stream and consumer
configurations, headers and ack bodies are exactly those of the Go implementation, and so that the hot path parses
replies once with orjson.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from asyncjobs import denials
from asyncjobs.constants import (
    HDR_STATUS,
    JS_API_PREFIX,
    JS_ERR_CLUSTER_NOT_AVAILABLE,
    JS_ERR_CLUSTER_NOT_LEADER,
    JS_ERR_CONSUMER_NOT_FOUND,
    JS_ERR_DUPLICATE_MSG_ID_IN_PROCESS,
    JS_ERR_EXPECTED_LAST_SEQ_NOT_READY,
    JS_ERR_NO_MESSAGE_FOUND,
    JS_ERR_STREAM_NOT_FOUND,
    JS_ERR_TOO_MANY_REQUESTS,
    JS_ERR_WRONG_LAST_SEQUENCE,
    JS_ERR_WRONG_LAST_SEQUENCE_CONSTANT,
)
from asyncjobs.errors import (
    AsyncJobsError,
    ClientClosedError,
    JetStreamError,
    JetStreamUnavailable,
    PermissionDenied,
    QueueConsumerNotFound,
    QueueNotFound,
    RequestTimeout,
    TaskConflict,
    TaskNotFound,
)
from asyncjobs.inline import take_inline
from asyncjobs.stored import StoredMessage, decode_stored

log = logging.getLogger("asyncjobs")

ErrorMap = Mapping[int, type[JetStreamError]]

NO_RESPONDERS: Final = "503"
SWEEP_INTERVAL_S: Final = 0.25
# Back-off between attempts of a request that failed for a transient reason: doubling from 50 ms up to 1 s, with
# jitter, for at most the client's retry window.
RETRY_FIRST_S: Final = 0.05
RETRY_MAX_S: Final = 1.0
RETRY_LOG_EVERY_S: Final = 5.0
LEADER_TEXT: Final = "no leader (a leader election is under way, or the cluster lost quorum)"
NO_LEADER_ERR_CODES: Final = frozenset({JS_ERR_CLUSTER_NOT_AVAILABLE, JS_ERR_CLUSTER_NOT_LEADER})
DEFAULT_ERRORS: Final[ErrorMap] = {
    JS_ERR_WRONG_LAST_SEQUENCE: TaskConflict,
    JS_ERR_WRONG_LAST_SEQUENCE_CONSTANT: TaskConflict,
    JS_ERR_CLUSTER_NOT_AVAILABLE: JetStreamUnavailable,
    JS_ERR_CLUSTER_NOT_LEADER: JetStreamUnavailable,
    JS_ERR_DUPLICATE_MSG_ID_IN_PROCESS: JetStreamUnavailable,
    JS_ERR_EXPECTED_LAST_SEQ_NOT_READY: JetStreamUnavailable,
    JS_ERR_TOO_MANY_REQUESTS: JetStreamUnavailable,
}
_TRANSIENT_NATS_ERRORS: Final = (
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
)
QUEUE_ERRORS: Final[ErrorMap] = {
    JS_ERR_STREAM_NOT_FOUND: QueueNotFound,
    JS_ERR_CONSUMER_NOT_FOUND: QueueConsumerNotFound,
}
TASK_ERRORS: Final[ErrorMap] = {JS_ERR_NO_MESSAGE_FOUND: TaskNotFound} | {
    code: cls for code, cls in DEFAULT_ERRORS.items() if code != JS_ERR_NO_MESSAGE_FOUND
}


class PubAck(NamedTuple):
    """JetStream's acknowledgement of a publish (a tuple: built for every task save)."""

    stream: str
    seq: int
    duplicate: bool = False


def _expire(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def translate(exc: BaseException, what: str) -> AsyncJobsError:
    """Translate a nats-py exception raised while doing ``what``."""
    if isinstance(exc, AsyncJobsError):
        return exc
    if isinstance(exc, nats.errors.NoRespondersError):
        return JetStreamUnavailable(f"{what}: nats: no responders available for request", code=503)
    if isinstance(exc, nats.errors.TimeoutError | TimeoutError):
        return RequestTimeout(f"{what}: timed out waiting for the NATS server")
    if isinstance(exc, nats.errors.ConnectionClosedError):
        return ClientClosedError(f"{what}: the NATS connection is closed: create a new client with connect()")
    if isinstance(exc, _TRANSIENT_NATS_ERRORS):
        return JetStreamUnavailable(f"{what}: the NATS connection is not usable right now ({exc})")
    return JetStreamError(f"{what}: {exc}")


def is_transient(exc: BaseException) -> bool:
    """Whether a failed request may succeed if sent again: a timeout or no leader (upstream never retries)."""
    return isinstance(exc, RequestTimeout | JetStreamUnavailable)


def _still_failing(exc: JetStreamError, attempts: int, window: float) -> JetStreamError:
    """The error a caller sees once retries are used up: the same class, saying for how long it was tried."""
    if window <= 0:
        return exc
    final = type(exc)(
        f"{exc}; still failing after {attempts} attempts over {window:g}s (the client's retry_window)",
        code=exc.code,
        err_code=exc.err_code,
        description=exc.description,
    )
    final.attempts = attempts
    return final


_last_retry_log = 0.0


def _log_retry(what: str, exc: AsyncJobsError, window: float) -> None:
    # Under load every in-flight request retries at once: one line every few seconds says enough.
    global _last_retry_log
    now = time.monotonic()
    if now - _last_retry_log >= RETRY_LOG_EVERY_S:
        _last_retry_log = now
        log.warning("%s; retrying with back-off for up to %gs", exc, window)


def api_error(reply: Mapping[str, Any], what: str, errors: ErrorMap) -> JetStreamError:
    """Build the error for a JetStream ``{"error": {...}}`` reply."""
    err = reply.get("error") or {}
    err_code = int(err.get("err_code", 0) or 0)
    code = int(err.get("code", 0) or 0)
    description = str(err.get("description", ""))
    cls = errors.get(err_code) or DEFAULT_ERRORS.get(err_code, JetStreamError)
    if err_code in NO_LEADER_ERR_CODES:
        description = f"{description}: {LEADER_TEXT}"
    return cls(f"{what}: {description} (err_code {err_code})", code=code, err_code=err_code, description=description)


class JetStream:
    """Requests against the JetStream API of one connection.

    Requests that fail for a transient reason (no reply in time, no leader during an election, a reconnecting
    connection) are sent again with back-off for up to ``retry_window`` seconds; only then does the caller see
    :class:`RequestTimeout` or :class:`JetStreamUnavailable`. Every error carries ``attempts``, so a caller can
    tell that an earlier attempt may have landed (a timed-out write followed by a conflict).

    Args:
        nc: a connected nats-py client.
        timeout: seconds to wait for each reply.
        api_prefix: the JetStream API prefix (``$JS.API``, or ``$JS.<domain>.API`` for a domain).
        retry_window: seconds to keep retrying transient failures; 0 fails at once.
    """

    def __init__(
        self, nc: NATS, *, timeout: float = 5.0, api_prefix: str = JS_API_PREFIX, retry_window: float = 0.0
    ) -> None:
        self.nc = nc
        self.timeout = timeout
        self.retry_window = retry_window
        self.prefix = api_prefix
        self._inbox = ""
        self._next_token = 0
        self._pending: dict[str, asyncio.Future[Msg]] = {}
        self._deadlines: dict[str, float] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._subscribing: asyncio.Lock | None = None

    async def _reply_prefix(self) -> str:
        # One wildcard subscription carries every reply, like nats-py's own request mux, but with a counter for
        # tokens and one timer per request: this is the hot path of every task.
        if not self._inbox:
            if self._subscribing is None:
                self._subscribing = asyncio.Lock()
            async with self._subscribing:
                if not self._inbox:
                    inbox = self.nc.new_inbox() + "."
                    sub = await self.nc.subscribe(inbox + "*", cb=self._on_reply)
                    take_inline(sub, self._take_reply)
                    self._inbox = inbox
        return self._inbox

    def _sweep(self) -> None:
        # One periodic sweep instead of a timer per request: requests time out up to SWEEP_INTERVAL_S late.
        self._sweeper = None
        if not self._pending:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for token, deadline in list(self._deadlines.items()):
            if deadline <= now:
                _expire(self._pending[token])
        self._sweeper = loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    def _take_reply(self, msg: Msg) -> bool:
        future = self._pending.get(msg.subject[len(self._inbox) :])
        if future is not None and not future.done():
            future.set_result(msg)
        return True

    async def _on_reply(self, msg: Msg) -> None:
        self._take_reply(msg)

    async def request_raw(
        self, subject: str, payload: bytes, what: str, *, headers: dict[str, str] | None = None
    ) -> Msg:
        """Send a request and return the reply message.

        One attempt, no retries.

        Raises:
            JetStreamUnavailable: no responders (no stream or service, or no leader for it).
            RequestTimeout: no reply in time.
            JetStreamError: another NATS failure.
        """
        inbox = self._inbox or await self._reply_prefix()
        self._next_token += 1
        token = str(self._next_token)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._pending[token] = future
        self._deadlines[token] = loop.time() + self.timeout
        if self._sweeper is None:
            self._sweeper = loop.call_later(SWEEP_INTERVAL_S, self._sweep)
        try:
            await self.nc.publish(subject, payload, reply=inbox + token, headers=headers)
            msg = await future
        except Exception as exc:
            raise translate(exc, what) from exc
        finally:
            del self._pending[token]
            del self._deadlines[token]
        if msg.headers and not msg.data and msg.headers.get(HDR_STATUS) == NO_RESPONDERS:
            raise JetStreamUnavailable(f"{what}: nats: no responders available for request", code=503)
        return msg

    async def request(
        self,
        subject: str,
        payload: bytes,
        what: str,
        *,
        headers: dict[str, str] | None = None,
        errors: ErrorMap = DEFAULT_ERRORS,
        stream: str | None = None,
        retry: bool = True,
    ) -> dict[str, Any]:
        """Send a request and decode its JSON reply, raising the mapped error for ``{"error": ...}``.

        Transient failures are retried (see the class); ``stream`` names the stream a publish goes to, so that
        "no responders" is told apart at once: the stream is gone (raise) or only has no leader yet (retry).

        Raises:
            JetStreamError: the server answered with an error (a subclass chosen by ``errors``).
            QueueNotFound: ``stream`` does not exist.
            JetStreamUnavailable: no leader or no responders, still after the retry window.
            RequestTimeout: no reply in time, still after the retry window.
            PermissionDenied: the server refused the request or its reply for the user's permissions.
        """
        attempts = 0
        deadline = 0.0
        checked_stream = False
        while True:
            attempts += 1
            sent = time.monotonic()
            try:
                return _reply(await self.request_raw(subject, payload, what, headers=headers), what, errors)
            except JetStreamError as exc:
                exc.attempts = attempts
                if isinstance(exc, RequestTimeout) and (why := denials.denial(self.nc, subject, since=sent)):
                    raise PermissionDenied(f"{what}: {why}") from exc
                if not (retry and is_transient(exc) and self.retry_window > 0):
                    raise
                if subject.startswith(self.prefix) and exc.code == 503 and not exc.err_code:
                    raise  # nobody serves the JetStream API: JetStream is off for this account, not electing
                if stream is not None and exc.code == 503 and not exc.err_code:
                    if not checked_stream:
                        checked_stream = True
                        await self._check_stream(stream, what)
                    # The stream exists, so nobody answering for it means it has no leader right now.
                    exc = JetStreamUnavailable(f"{what}: no responders: stream {stream} has {LEADER_TEXT}", code=503)
                    exc.attempts = attempts
                now = time.monotonic()
                deadline = deadline or now + self.retry_window
                delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** min(attempts - 1, 10)) * random.uniform(0.5, 1.0)
                if now + delay >= deadline:
                    raise _still_failing(exc, attempts, self.retry_window) from exc
                _log_retry(what, exc, self.retry_window)
                await asyncio.sleep(delay)

    async def api(
        self, suffix: str, body: Any, what: str, *, errors: ErrorMap = DEFAULT_ERRORS, retry: bool = True
    ) -> dict[str, Any]:
        """Call ``$JS.API.<suffix>`` with a JSON body (``None`` sends an empty body)."""
        payload = b"" if body is None else orjson.dumps(body)
        return await self.request(f"{self.prefix}.{suffix}", payload, what, errors=errors, retry=retry)

    async def publish(
        self,
        subject: str,
        payload: bytes,
        what: str,
        *,
        headers: dict[str, str] | None = None,
        errors: ErrorMap = DEFAULT_ERRORS,
        stream: str | None = None,
    ) -> PubAck:
        """Publish into a stream and wait for JetStream's acknowledgement, retrying transient failures.

        Only publish what is safe to send twice: a write guarded by an expected sequence (a second copy conflicts),
        one with a ``Nats-Msg-Id`` (deduplicated), or one that replaces the subject's only message.

        Raises:
            JetStreamUnavailable: no stream (or no leader) answered on the subject, still after retries.
            QueueNotFound: ``stream`` was given and does not exist.
            TaskConflict: an expected-sequence header did not match.
        """
        reply = await self.request(subject, payload, what, headers=headers, errors=errors, stream=stream)
        try:
            return PubAck(str(reply["stream"]), int(reply["seq"]), bool(reply.get("duplicate", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise JetStreamError(f"{what}: unexpected publish acknowledgement {reply!r}") from exc

    async def get_last(self, stream: str, subject: str, what: str, *, errors: ErrorMap = TASK_ERRORS) -> StoredMessage:
        """Read the last message stored for a subject.

        Raises:
            TaskNotFound: nothing is stored for the subject (with the default error map).
        """
        body = b'{"last_by_subj":"' + subject.encode() + b'"}'
        reply = await self.request(f"{self.prefix}.STREAM.MSG.GET.{stream}", body, what, errors=errors)
        return decode_stored(reply, what)

    async def stream_info(
        self, stream: str, what: str, *, errors: ErrorMap = QUEUE_ERRORS, retry: bool = True
    ) -> dict[str, Any]:
        """Return ``STREAM.INFO`` for a stream."""
        return await self.api(f"STREAM.INFO.{stream}", None, what, errors=errors, retry=retry)

    async def _check_stream(self, stream: str, what: str) -> None:
        """Raise :class:`QueueNotFound` if ``stream`` is gone; any other answer means "retry the publish"."""
        try:
            await self.stream_info(stream, what, retry=False)
        except QueueNotFound as exc:
            raise QueueNotFound(
                f"{what}: nats: no responders available for request: stream {stream} does not exist",
                code=exc.code,
                err_code=exc.err_code,
                description=exc.description,
            ) from exc
        except JetStreamError:
            pass

    async def account_info(self) -> dict[str, Any]:
        """Return the account's JetStream information (usable as a readiness check)."""
        return await self.api("INFO", None, "reading JetStream account information")


def _reply(msg: Msg, what: str, errors: ErrorMap) -> dict[str, Any]:
    """Decode a JSON API reply, raising the mapped error for ``{"error": ...}``."""
    try:
        reply = orjson.loads(msg.data)
    except orjson.JSONDecodeError as exc:
        raise JetStreamError(f"{what}: the server sent a reply that is not JSON: {msg.data[:200]!r}") from exc
    if not isinstance(reply, dict):
        raise JetStreamError(f"{what}: unexpected reply {reply!r}")
    if "error" in reply:
        raise api_error(reply, what, errors)
    return reply
