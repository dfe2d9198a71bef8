"""``asyncjobs.connect``: validate options, open or adopt a NATS connection, prepare storage, return a client."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from nats.aio.client import Client as NATS

from asyncjobs.client import Client
from asyncjobs.errors import ConfigurationError
from asyncjobs.natsconn import open_connection
from asyncjobs.options import ClientOptions, ConnectionOptions, resolve_discard, resolve_policy, resolve_queue
from asyncjobs.queue import Queue
from asyncjobs.retry import RetryPolicy
from asyncjobs.task import TaskState


async def connect(
    servers: str | Sequence[str] | NATS | None = None,
    *,
    queue: str | Queue | None = None,
    concurrency: int = 10,
    retry_policy: RetryPolicy | str = "default",
    discard: Iterable[TaskState | str] = (),
    context: str | None = None,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    nkey_seed_file: str | None = None,
    creds_file: str | None = None,
    tls: Any = None,
    tls_ca_file: str | None = None,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
    connect_timeout: float = 5.0,
    api_prefix: str | None = None,
    task_retention: float | timedelta | None = None,
    **options: Any,
) -> Client:
    """Connect to NATS, create or bind the task store and queue, and return a ready client.

    Args:
        servers: server URL(s) (``"nats://host:4222"``, a comma-separated string or a list), or an existing
            connected nats-py client (which the client will not close), or ``None`` to use ``context`` or
            ``nats://127.0.0.1:4222``.
        queue: a queue name (created with defaults if missing; ``"DEFAULT"`` gets upstream's 1-minute run time)
            or a :class:`Queue`.
        concurrency: handlers running at once in this process.
        retry_policy: a policy or one of the names ``default``, ``10m``, ``1h``, ``1m``.
        discard: end states in which tasks are deleted instead of stored.
        context: a NATS CLI context name supplying URL and credentials.
        user: with ``password``, user/password authentication.
        password: the password.
        token: token authentication.
        nkey_seed_file: nkey authentication.
        creds_file: JWT credentials file authentication.
        tls: an ``ssl.SSLContext``.
        tls_ca_file: CA file to verify the server.
        tls_cert_file: client certificate file for mutual TLS.
        tls_key_file: client key file for mutual TLS.
        connect_timeout: seconds to wait for the connection.
        api_prefix: JetStream API prefix (default ``$JS.API``, or the context's domain).
        task_retention: seconds to keep tasks when the task store is created.
        **options: any other :class:`ClientOptions` field (``replicas``, ``memory_storage``, ``prometheus_port``,
            ``signing_seed``, ``verification_key``, ``persist_events``, ``shutdown_grace``, ...).

    Raises:
        ConfigurationError: an invalid option (raised before connecting).
        QueueNotFound: the queue was to be bound only and does not exist.
        JetStreamError: NATS or JetStream could not be reached.
    """
    unknown = set(options) - set(ClientOptions.__dataclass_fields__)
    if unknown:
        raise ConfigurationError(f"unknown option(s) {', '.join(sorted(unknown))}: see asyncjobs.ClientOptions")
    if api_prefix:
        options["api_prefix"] = api_prefix
    client_options = ClientOptions(
        queue=resolve_queue(queue),
        concurrency=concurrency,
        retry_policy=resolve_policy(retry_policy),
        discard=resolve_discard(discard),
        task_retention=task_retention,
        **options,
    )
    if isinstance(servers, NATS):
        if not servers.is_connected:
            raise ConfigurationError("the nats-py client passed to connect() is not connected")
        nc, owns = servers, False
    else:
        urls = tuple(u.strip() for u in servers.split(",")) if isinstance(servers, str) else tuple(servers or ())
        conn = ConnectionOptions(
            servers=urls,
            context=context,
            user=user,
            password=password,
            token=token,
            nkey_seed_file=nkey_seed_file,
            creds_file=creds_file,
            tls=tls,
            tls_ca_file=tls_ca_file,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            connect_timeout=connect_timeout,
        )
        nc, context_prefix = await open_connection(conn)
        owns = True
        if context_prefix and not api_prefix:
            client_options = dataclasses.replace(client_options, api_prefix=context_prefix)
    client = Client(nc, client_options, owns_connection=owns)
    try:
        await client._open()
    except BaseException:
        await client.close()
        raise
    return client
