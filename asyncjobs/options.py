"""Client options, validated when they are built (reference: docs/configuration.md; Go's defaults: docs/protocol.md,
Defaults)."""

from __future__ import annotations

import math
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from asyncjobs.constants import DEFAULT_CONCURRENCY, JS_API_PREFIX
from asyncjobs.errors import ConfigurationError
from asyncjobs.queue import Queue
from asyncjobs.retry import RETRY_DEFAULT, RetryPolicy, lookup_retry_policy
from asyncjobs.task import DISCARDABLE_STATES, TaskState
from asyncjobs.wiretime import to_ns

MAX_REPLICAS = 5


@dataclass(frozen=True, kw_only=True)
class ConnectionOptions:
    """How to reach NATS when the client makes its own connection."""

    servers: tuple[str, ...] = ()
    """Server URLs; empty means the context's URL, else ``nats://127.0.0.1:4222``."""
    context: str | None = None
    """A NATS CLI context name (``~/.config/nats/context/<name>.json``) supplying URL and credentials."""
    user: str | None = None
    """User name for user/password authentication."""
    password: str | None = None
    """Password for user/password authentication."""
    token: str | None = None
    """Authentication token."""
    nkey_seed_file: str | None = None
    """Path of an nkey seed file."""
    creds_file: str | None = None
    """Path of a JWT credentials (``.creds``) file."""
    tls: ssl.SSLContext | None = None
    """A TLS context; takes precedence over the file options below."""
    tls_ca_file: str | None = None
    """CA certificate to verify the server with."""
    tls_cert_file: str | None = None
    """Client certificate for mutual TLS."""
    tls_key_file: str | None = None
    """Client key for mutual TLS."""
    name: str = "Choria Asynchronous Jobs Client"
    """The connection name servers show in monitoring."""
    connect_timeout: float = 5.0
    """Seconds to wait for the first connection."""

    def __post_init__(self) -> None:
        for path_option, holds in _PATH_OPTIONS.items():
            value = getattr(self, path_option)
            if value is not None:
                check_file(value, path_option, holds)
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigurationError("tls_cert_file and tls_key_file must be given together")
        if self.user is None and self.password is not None:
            raise ConfigurationError("password given without user")
        check_seconds(self.connect_timeout, "connect_timeout", allow_zero=False)


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """Everything a client can be configured with."""

    queue: Queue = field(default_factory=Queue.default)
    """The work queue this client enqueues into and processes."""
    concurrency: int = DEFAULT_CONCURRENCY
    """Handlers running at once in this process."""
    retry_policy: RetryPolicy = RETRY_DEFAULT
    """NAK delay policy for failed tasks."""
    discard: frozenset[TaskState] = frozenset()
    """End states in which tasks are deleted instead of stored (complete, expired, terminated)."""
    replicas: int = 1
    """Replicas for streams and buckets this client creates (1 to 5)."""
    memory_storage: bool = False
    """Create streams, buckets and queues in memory instead of on disk."""
    task_retention: float | timedelta | None = None
    """Seconds to keep tasks when the task store is created; ``None`` keeps them forever."""
    prometheus_port: int | None = None
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` over HTTP on this port from connecting until the client is
    closed (producer-only clients too); 0 picks a free port (see :attr:`Client.metrics_port`); ``None`` serves
    nothing."""
    prometheus_address: str = "0.0.0.0"
    """The address the metrics and health endpoint binds: every interface by default (as Go's monitor port);
    ``"127.0.0.1"`` keeps it on this host."""
    signing_seed: bytes | str | None = None
    """ed25519 seed (32 bytes or 64 hex chars) to sign tasks on enqueue."""
    signing_seed_file: str | None = None
    """File holding the hex seed; re-read when it changes (checked at most once a second), so it can be rotated."""
    verification_key: bytes | str | None = None
    """ed25519 public key (32 bytes or 64 hex chars) to verify tasks on load."""
    verification_key_file: str | None = None
    """File holding the hex public key."""
    signatures_optional: bool = False
    """With a verification key, accept unsigned tasks (signed ones are still verified)."""
    no_storage_init: bool = False
    """Do not create or bind streams, buckets or the queue."""
    persist_events: bool = False
    """Keep lifecycle events in the ``CHORIA_AJ_EVENTS`` stream so they can be replayed."""
    events_retention: float | timedelta | None = 86400.0
    """Seconds the events stream keeps events, when created."""
    request_timeout: float = 5.0
    """Seconds to wait for each JetStream reply."""
    retry_window: float = 30.0
    """Seconds a JetStream call that failed for a transient reason (no reply in time, no leader during a leader
    election, a reconnecting connection) is retried with back-off before the error reaches the caller; 0 fails
    at once."""
    shutdown_grace: float = 30.0
    """Seconds running handlers get to finish when the worker stops."""
    reconcile_interval: float | None = 60.0
    """Seconds between the reconciler's passes over the queue's tasks while :meth:`Client.run` runs (it republishes
    missing or dead work items and ends tasks stranded past every delivery); ``None`` turns it off."""
    reconcile_grace: float = 120.0
    """Seconds a waiting task must be without progress (and without a live work item) before the reconciler acts:
    longer than any enqueue takes, retries included."""
    api_prefix: str = JS_API_PREFIX
    """The JetStream API prefix; ``$JS.<domain>.API`` reaches a JetStream domain."""
    pipeline_enqueue: bool = False
    """Send a task and its work item without waiting for the first acknowledgement in between (faster one-at-a-time
    :meth:`Client.enqueue`). The item can then reach a worker a moment before its task: Python workers wait for the
    task briefly, Go workers terminate the item and the task waits for a reconciler (docs/decisions.md)."""

    def __post_init__(self) -> None:
        if not isinstance(self.queue, Queue):
            raise ConfigurationError(f"queue must be a queue name or a Queue, not {self.queue!r}")
        check_int(self.concurrency, "concurrency", minimum=1)
        if not callable(getattr(self.retry_policy, "delay", None)):
            raise ConfigurationError("retry_policy must be a policy name or have a delay(tries) method")
        bad = self.discard - DISCARDABLE_STATES
        if bad:
            raise ConfigurationError("only states completed, expired or terminated can be discarded")
        check_int(self.replicas, "replicas", minimum=1)
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise ConfigurationError(f"replicas must be between 1 and {MAX_REPLICAS}, not {self.replicas}")
        to_ns(self.task_retention, name="task_retention")
        to_ns(self.events_retention, name="events_retention")
        if self.prometheus_port is not None and check_int(self.prometheus_port, "prometheus_port", minimum=0) > 65535:
            raise ConfigurationError(
                f"prometheus_port must be a TCP port (0 picks a free one), not {self.prometheus_port}"
            )
        if not isinstance(self.prometheus_address, str) or not self.prometheus_address:
            raise ConfigurationError(
                f"prometheus_address must be an address to bind such as '0.0.0.0' or '127.0.0.1', not "
                f"{self.prometheus_address!r}"
            )
        if self.signing_seed is not None and self.signing_seed_file is not None:
            raise ConfigurationError("give signing_seed or signing_seed_file, not both")
        if self.verification_key is not None and self.verification_key_file is not None:
            raise ConfigurationError("give verification_key or verification_key_file, not both")
        if self.signing_seed_file is not None:
            check_file(self.signing_seed_file, "signing_seed_file", "a file holding the ed25519 seed as 64 hex digits")
        if self.reconcile_interval is not None and not self.reconcile_interval > 0:
            raise ConfigurationError(f"reconcile_interval must be > 0 seconds or None, not {self.reconcile_interval}")
        if not self.reconcile_grace > 0:
            raise ConfigurationError(f"reconcile_grace must be > 0 seconds, not {self.reconcile_grace}")
        if self.retry_window < 0:
            raise ConfigurationError(f"retry_window must be >= 0 seconds, not {self.retry_window}")
        check_seconds(self.request_timeout, "request_timeout", allow_zero=False)
        check_seconds(self.shutdown_grace, "shutdown_grace", allow_zero=True)
        if not isinstance(self.pipeline_enqueue, bool):
            raise ConfigurationError(f"pipeline_enqueue must be True or False, not {self.pipeline_enqueue!r}")


_PATH_OPTIONS: Final = {
    "nkey_seed_file": "an nkey seed file (from `nk -gen user` or nsc)",
    "creds_file": "a credentials (.creds) file (from nsc or your NATS operator)",
    "tls_ca_file": "a PEM file with the CA certificate that signed the server's certificate",
    "tls_cert_file": "a PEM file with the client certificate",
    "tls_key_file": "a PEM file with the client certificate's private key",
}


def check_file(path: str, option: str, holds: str) -> str:
    """Check that an option names a readable file (``~`` expanded); return the expanded path.

    Raises:
        ConfigurationError: the file does not exist, is not a file, or cannot be read.
    """
    expanded = os.path.expanduser(path)
    if not os.path.exists(expanded):
        problem = "does not exist"
    elif not os.path.isfile(expanded):
        problem = "is not a file"
    elif not os.access(expanded, os.R_OK):
        problem = "cannot be read by this process"
    else:
        return expanded
    raise ConfigurationError(f"{option} {path!r} {problem}: pass the path of {holds}")


def check_int(value: object, name: str, *, minimum: int) -> int:
    """Check an integer option; ``True`` and ``False`` are refused although Python counts them as ints.

    Raises:
        ConfigurationError: the value is not an int, is a bool, or is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an integer of at least {minimum}, not {value!r}")
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, not {value}")
    return value


def check_seconds(value: object, name: str, *, allow_zero: bool) -> float:
    """Check a duration option given as a number of seconds (bools refused).

    Raises:
        ConfigurationError: the value is not a finite number, or is negative (or zero when not allowed).
    """
    least = ">= 0" if allow_zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a number of seconds {least}, not {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigurationError(f"{name} must be a number of seconds {least}, not {value}")
    return float(value)


def resolve_queue(queue: str | Queue | None) -> Queue:
    """A queue name becomes a :class:`Queue` with defaults (the ``DEFAULT`` queue gets Go's own).

    Raises:
        ConfigurationError: the value is neither a name nor a Queue.
    """
    if queue is None:
        return Queue.default()
    if isinstance(queue, Queue):
        return queue
    if isinstance(queue, str):
        return Queue.default() if queue == Queue.default().name else Queue(queue)
    raise ConfigurationError(f"queue must be a queue name or a Queue, not {queue!r}")


def resolve_policy(policy: RetryPolicy | str) -> RetryPolicy:
    """A policy name (``default``, ``10m``, ``1h``, ``1m``) becomes the policy.

    Raises:
        ConfigurationError: unknown name.
    """
    return lookup_retry_policy(policy) if isinstance(policy, str) else policy


def resolve_discard(states: Iterable[TaskState | str]) -> frozenset[TaskState]:
    """State names (``completed`` accepted) become states.

    Raises:
        ConfigurationError: unknown state.
    """
    if isinstance(states, str):
        states = [states]
    return frozenset(TaskState.parse(state) for state in states)
