"""Leader election over a key-value bucket, compatible with Go's election package (docs/protocol.md, Leader election).

Candidates campaign for one key of a bucket whose TTL (its ``max_age``) removes a value nobody renews. The value is
the leader's name as raw bytes; a campaign is a KV create, and the leader keeps the key with KV updates at its last
revision, as Go candidates do, so Go and Python candidates share one election.

Where it differs from Go, to fail over faster and never lead twice:

* The winner leads at once (a create is atomic, so at most one candidate wins a given revision) instead of one
  campaign interval later.
* The leader renews every quarter TTL and holds a lease that ends ``margin_s`` before the key could expire (its last
  successful write was sent at least a TTL before the server removes it). :attr:`Election.is_leader` turns false
  when the lease ends, before any other candidate can win the key, even if the process cannot reach the server.
* Candidates watch the key: a deleted key (a leader that resigned) is campaigned for at once, and a key left to the
  TTL (a crashed leader) right after its last write expires, computed from the time the server stored it.
* A leader that stops gracefully deletes the key (only at its own revision) so a successor takes over at once.

A Go leader has no lease: it believes it leads until an update fails. If one stalls for longer than the TTL, a
Python candidate may win the expired key while that Go process still thinks it leads, until its next update (one
Go interval later) fails; Go's own candidates race it in the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from asyncjobs import AsyncJobsError, ConfigurationError, JetStreamError, TaskConflict
from asyncjobs.kv import Deleted, Entry, KeyValue
from asyncjobs.kvwatch import KeyWatch
from asyncjobs.metrics import METRICS
from asyncjobs_scheduler.clock import Clock, SystemClock

log = logging.getLogger("asyncjobs.scheduler")

MIN_TTL_S: Final = 10.0
MAX_TTL_S: Final = 3600.0
"""The TTLs Go's election package accepts."""
LEASE_MARGIN_S: Final = 2.0
"""The lease ends this long before the key could expire: slack for timers firing late and work under way."""
RENEW_FRACTION: Final = 0.25
"""The leader renews (and a candidate re-checks) every TTL times this."""
EXPIRY_GRACE_S: Final = 0.1
"""A candidate campaigns this long after the holder's key should have expired."""
EXPIRY_RETRY_S: Final = 0.25
EXPIRY_RETRY_WINDOW_S: Final = 2.0
"""While a key outlives its computed expiry (the server removes it a little late), retry this often, this long."""
RESIGN_TIMEOUT_S: Final = 5.0

Callback = Callable[[], Awaitable[None] | None]


class ElectionState(StrEnum):
    """Where a candidate stands (the ``state`` label of the campaign metric, as Go names them)."""

    UNKNOWN = "unknown"
    CANDIDATE = "candidate"
    LEADER = "leader"


class Election:
    """One candidate in the election for ``key`` in a bucket.

    Run it with :meth:`run` until cancelled or :meth:`resign`; both give up the key if it leads. The constructor
    does no I/O.

    Args:
        kv: the election bucket, e.g. ``client.key_value("CHORIA_AJ_ELECTIONS")``.
        key: the key to campaign for, e.g. ``task_scheduler``.
        name: this candidate's name, stored as the key's value; unique among the candidates.
        ttl_s: the bucket's TTL in seconds; ``None`` reads it from the bucket when :meth:`run` starts.
        clock: the time source (the system clock by default).
        on_won: called (and awaited when it returns an awaitable) when this candidate starts leading.
        on_lost: called when it stops leading (lost the key, lease ran out, resigned or stopped).
        margin_s: how long before the key could expire the lease ends.

    Raises:
        ConfigurationError: an argument is invalid.
    """

    def __init__(
        self,
        kv: KeyValue,
        key: str,
        name: str,
        *,
        ttl_s: float | None = None,
        clock: Clock | None = None,
        on_won: Callback | None = None,
        on_lost: Callback | None = None,
        margin_s: float = LEASE_MARGIN_S,
    ) -> None:
        if not key or not name:
            raise ConfigurationError(f"an election needs a key and a candidate name, got {key!r} and {name!r}")
        if not 0 <= margin_s < MIN_TTL_S * (1 - RENEW_FRACTION):
            raise ConfigurationError(f"margin_s must be between 0 and {MIN_TTL_S * (1 - RENEW_FRACTION):g}s")
        self._kv = kv
        self._key = key
        self._name = name
        self._value = name.encode()
        self._ttl_s = _check_ttl(ttl_s) if ttl_s is not None else None
        self._clock: Clock = clock or SystemClock()
        self._on_won = on_won
        self._on_lost = on_lost
        self._margin_s = margin_s
        self._state = ElectionState.UNKNOWN
        self._revision = 0
        """The revision of the last value we wrote (0: none), deleted when we stop."""
        self._lease_end: datetime | None = None
        self._holder: Entry | None = None
        """The key's value as last seen while not leading (to compute when it expires)."""
        self._wake = asyncio.Event()
        self._stopping = False
        self._running = False
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[object] | None = None

    @property
    def name(self) -> str:
        """This candidate's name."""
        return self._name

    @property
    def state(self) -> ElectionState:
        """``unknown`` before :meth:`run`, then ``candidate`` or ``leader``."""
        return self._state

    @property
    def is_leader(self) -> bool:
        """Whether this candidate leads now: it won the key and its lease has not run out."""
        return self._lease_end is not None and self._clock.now() < self._lease_end

    async def run(self) -> None:
        """Campaign, lead while it can, campaign again when it loses; until cancelled or :meth:`resign`.

        Raises:
            ConfigurationError: the bucket's TTL is missing or outside 10 s to 1 hour.
            JetStreamError: the bucket does not exist.
            ClientClosedError: the client's connection was closed.
        """
        if self._running or self._stopped.is_set():
            raise ConfigurationError("an Election runs once: create a new one to campaign again")
        self._running = True
        self._task = asyncio.current_task()
        try:
            await self._run()
        finally:
            self._stopped.set()

    async def _run(self) -> None:
        if self._ttl_s is None:
            self._ttl_s = _check_ttl(await self._kv.ttl())
        interval = self._ttl_s * RENEW_FRACTION
        METRICS.election_interval_seconds.labels(self._key, self._name).set(interval)
        self._state = ElectionState.CANDIDATE
        try:
            async with self._kv.watch(self._key) as watch:
                watcher = asyncio.create_task(self._follow(watch), name=f"election {self._key} watch")
                try:
                    await self._campaign_loop(interval)
                finally:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
        finally:
            await self._give_up()

    async def resign(self) -> None:
        """Stop campaigning; if leading, stop leading and delete the key so a successor takes over at once.

        :attr:`is_leader` is false when this returns; :meth:`run` returns once the key is given up.
        """
        self._stopping = True
        await self._lost("resigned")
        self._wake.set()
        if not self._running:
            await self._give_up()
            return
        try:
            async with asyncio.timeout(RESIGN_TIMEOUT_S):
                await asyncio.shield(self._stopped.wait())
        except TimeoutError:
            # Stuck in a request (NATS unreachable: retried for the client's retry window): stop it there.
            if self._task is not None:
                self._task.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESIGN_TIMEOUT_S):
                    await asyncio.shield(self._stopped.wait())

    async def _campaign_loop(self, interval: float) -> None:
        assert self._ttl_s is not None
        while not self._stopping:
            self._wake.clear()
            now = self._clock.now()
            METRICS.election_campaigns.labels(self._key, self._name, self._state.value).inc()
            if self._lease_end is None:
                next_at = await self._campaign(now, interval)
            else:
                next_at = await self._renew(now, interval)
            if not self._stopping:
                await self._sleep(next_at)

    async def _campaign(self, now: datetime, interval: float) -> datetime:
        """Try to win the key; returns when to try again."""
        assert self._ttl_s is not None
        try:
            try:
                revision = await self._kv.create(self._key, self._value)
            except TaskConflict:
                self._holder = await self._kv.get(self._key)
                return self._retry_at(now, interval)
        except JetStreamError as exc:
            log.warning("election %s: campaign by %s failed: %s", self._key, self._name, exc)
            return now + timedelta(seconds=interval)
        await self._won(now, revision)
        return now + timedelta(seconds=interval)

    def _retry_at(self, now: datetime, interval: float) -> datetime:
        """When to campaign next: right after the holder's value expires, at the latest one interval from now."""
        assert self._ttl_s is not None
        regular = now + timedelta(seconds=interval)
        if self._holder is None:  # gone between the create and the read
            return now
        expiry = self._holder.created + timedelta(seconds=self._ttl_s + EXPIRY_GRACE_S)
        if expiry > now:
            return min(expiry, regular)
        if (now - expiry).total_seconds() < EXPIRY_RETRY_WINDOW_S:
            return now + timedelta(seconds=EXPIRY_RETRY_S)
        return regular  # the server's clock differs from ours: fall back to the regular interval

    async def _renew(self, now: datetime, interval: float) -> datetime:
        """Keep the key; returns when to renew again, or to campaign if the key was lost."""
        assert self._lease_end is not None and self._ttl_s is not None
        lease_end = self._lease_end
        remaining = (lease_end - now).total_seconds()
        try:
            async with asyncio.timeout(max(remaining, 0)):
                revision = await self._kv.update(self._key, self._value, revision=self._revision)
        except TaskConflict:
            await self._lost("the key was taken or deleted")
            return now
        except (JetStreamError, TimeoutError) as exc:
            if self._clock.now() >= lease_end:
                await self._lost(f"could not renew within the lease ({exc})")
                return now
            log.warning("election %s: renewing failed, retrying: %s", self._key, exc)
            return min(lease_end, now + timedelta(seconds=EXPIRY_RETRY_S * 4))
        self._revision = revision  # ours now, so a stop deletes it
        if self._lease_end is None:  # resigned while the update was on its way
            return now
        self._lease_end = now + timedelta(seconds=self._ttl_s - self._margin_s)
        return min(now + timedelta(seconds=interval), self._lease_end)

    async def _won(self, sent_at: datetime, revision: int) -> None:
        assert self._ttl_s is not None
        self._revision = revision
        if self._stopping:  # resigned while the create was on its way: the stop deletes the key again
            return
        # The write was sent at `sent_at`, so the server stored it no earlier: it cannot expire before sent_at + TTL.
        self._lease_end = sent_at + timedelta(seconds=self._ttl_s - self._margin_s)
        self._state = ElectionState.LEADER
        self._holder = None
        METRICS.election_leader.labels(self._key, self._name).set(1)
        log.info("election %s: %s is the leader", self._key, self._name)
        await _call(self._on_won, "on_won")

    async def _lost(self, why: str) -> None:
        if self._lease_end is None:
            return
        self._lease_end = None
        self._state = ElectionState.CANDIDATE
        METRICS.election_leader.labels(self._key, self._name).set(0)
        log.info("election %s: %s stopped leading: %s", self._key, self._name, why)
        await _call(self._on_lost, "on_lost")

    async def _give_up(self) -> None:
        """Stop leading and delete the key if we still hold it (at our revision: never someone else's)."""
        await self._lost("stopped")
        revision, self._revision = self._revision, 0
        if not revision:
            return
        try:
            async with asyncio.timeout(RESIGN_TIMEOUT_S):
                await self._kv.delete(self._key, revision=revision)
        except TaskConflict:
            pass  # someone else holds it already
        except (AsyncJobsError, TimeoutError) as exc:  # the connection may be closed already
            log.warning("election %s: could not give up the key (it expires with the TTL): %s", self._key, exc)

    async def _follow(self, watch: KeyWatch) -> None:
        """Wake the campaign when the key is deleted or changes hands; note the holder for its expiry.

        If the watch fails for good (the connection closed), campaigns go on at the regular interval.
        """
        try:
            await self._follow_items(watch)
        except AsyncJobsError as exc:
            log.warning("election %s: stopped watching the key: %s", self._key, exc)

    async def _follow_items(self, watch: KeyWatch) -> None:
        async for item in watch:
            if item is None or item.revision < self._revision:  # older than our own write: already superseded
                continue
            if isinstance(item, Deleted):
                self._holder = None
                await self._lost("the key was deleted")
                self._wake.set()
            elif isinstance(item, Entry) and item.value != self._value:
                self._holder = item  # a candidate's next campaign waits for this value to expire
                if self._lease_end is not None:
                    await self._lost(f"the key now holds {item.value[:100]!r}")
                    self._wake.set()

    async def _sleep(self, until: datetime) -> None:
        """Sleep until ``until``, or until the watch (or :meth:`resign`) wakes the loop."""
        waiters: set[asyncio.Future[object]] = {
            asyncio.ensure_future(self._clock.sleep_until(until)),
            asyncio.ensure_future(self._wake.wait()),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


def _check_ttl(ttl_s: float | None) -> float:
    if ttl_s is None or not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
        shown = "none" if ttl_s is None else f"{ttl_s:g}s"
        raise ConfigurationError(
            f"an election bucket needs a TTL (max_age) between {MIN_TTL_S:g}s and {MAX_TTL_S:g}s, got {shown}: "
            "use the bucket the client creates (CHORIA_AJ_ELECTIONS, 10s) or create one with such a TTL"
        )
    return ttl_s


async def _call(callback: Callback | None, what: str) -> None:
    if callback is None:
        return
    try:
        result = callback()
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("election %s callback failed", what)
