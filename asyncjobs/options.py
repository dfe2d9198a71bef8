"""Client options (upstream §1.2), validated when they are built."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

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
        for path_option in ("nkey_seed_file", "creds_file", "tls_ca_file", "tls_cert_file", "tls_key_file"):
            value = getattr(self, path_option)
            if value is not None and not os.path.isfile(value):
                raise ConfigurationError(f"{path_option} {value!r} is not a readable file")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigurationError("tls_cert_file and tls_key_file must be given together")
        if self.user is None and self.password is not None:
            raise ConfigurationError("password given without user")


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
    """Serve Prometheus metrics on this port while the client runs; ``None`` for none."""
    signing_seed: bytes | str | None = None
    """ed25519 seed (32 bytes or 64 hex chars) to sign tasks on enqueue."""
    signing_seed_file: str | None = None
    """File holding the hex seed; re-read at each signature."""
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
    shutdown_grace: float = 30.0
    """Seconds running handlers get to finish when the worker stops."""
    api_prefix: str = JS_API_PREFIX
    """The JetStream API prefix; ``$JS.<domain>.API`` reaches a JetStream domain."""

    def __post_init__(self) -> None:
        if not isinstance(self.queue, Queue):
            raise ConfigurationError(f"queue must be a queue name or a Queue, not {self.queue!r}")
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer of at least 1, not {self.concurrency!r}")
        if not callable(getattr(self.retry_policy, "delay", None)):
            raise ConfigurationError("retry_policy must be a policy name or have a delay(tries) method")
        bad = self.discard - DISCARDABLE_STATES
        if bad:
            raise ConfigurationError("only states completed, expired or terminated can be discarded")
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise ConfigurationError(f"replicas must be between 1 and {MAX_REPLICAS}, not {self.replicas}")
        to_ns(self.task_retention, name="task_retention")
        to_ns(self.events_retention, name="events_retention")
        if self.prometheus_port is not None and not 0 <= self.prometheus_port <= 65535:
            raise ConfigurationError(f"prometheus_port must be a TCP port, not {self.prometheus_port}")
        if self.signing_seed is not None and self.signing_seed_file is not None:
            raise ConfigurationError("give signing_seed or signing_seed_file, not both")
        if self.verification_key is not None and self.verification_key_file is not None:
            raise ConfigurationError("give verification_key or verification_key_file, not both")
        if self.signing_seed_file is not None and not Path(self.signing_seed_file).is_file():
            raise ConfigurationError(f"signing_seed_file {self.signing_seed_file!r} is not a readable file")
        if self.request_timeout <= 0 or self.shutdown_grace < 0:
            raise ConfigurationError("request_timeout must be > 0 and shutdown_grace >= 0 seconds")


def resolve_queue(queue: str | Queue | None) -> Queue:
    """A queue name becomes a :class:`Queue` with defaults (the ``DEFAULT`` queue gets upstream's own).

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
