"""``asyncjobs.connect``: validate options, open or adopt a NATS connection, prepare storage, return a client."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from nats.aio.client import Client as NATS

from asyncjobs.client import Client
from asyncjobs.constants import (
    JS_API_PREFIX,
    JS_ERR_NOT_ENABLED,
    JS_ERR_NOT_ENABLED_FOR_ACCOUNT,
    STATUS_NO_RESPONDERS,
)
from asyncjobs.errors import AsyncJobsError, ConfigurationError, JetStreamError
from asyncjobs.jsapi import JetStream
from asyncjobs.natsconn import open_connection, quiet_tls_eof_warning
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
        queue: a queue name (created with defaults if missing; ``"DEFAULT"`` gets Go's 1-minute run time)
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
            ``signing_seed``, ``verification_key``, ``persist_events``, ``shutdown_grace``, ``pipeline_enqueue``,
            ...).

    Raises:
        ConfigurationError: an invalid option (raised before connecting).
        QueueNotFound: the queue was to be bound only and does not exist.
        JetStreamError: NATS could not be reached (the message says why: refused, authorization, TLS), or the
            server has no JetStream for this account.
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
        quiet_tls_eof_warning()  # it may use TLS: see asyncjobs.natsconn.TlsEofNoise
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
        try:
            await client._open()
        except JetStreamError as exc:
            if exc.code == STATUS_NO_RESPONDERS:
                await _check_jetstream(nc, client_options.api_prefix, client_options.request_timeout, exc)
            raise
    except BaseException:
        await client.close()
        raise
    return client


async def _check_jetstream(nc: NATS, api_prefix: str, timeout: float, cause: JetStreamError) -> None:
    """After "no responders" while preparing storage, ask ``$JS.API.INFO`` whether JetStream is there at all.

    Raises:
        JetStreamError: JetStream is not enabled on the server or for the account.
    """
    try:
        await JetStream(nc, timeout=timeout, api_prefix=api_prefix).account_info()
    except JetStreamError as exc:
        if exc.code != STATUS_NO_RESPONDERS and exc.err_code not in (
            JS_ERR_NOT_ENABLED,
            JS_ERR_NOT_ENABLED_FOR_ACCOUNT,
        ):
            return
        fix = "start nats-server with -js, or enable JetStream for the account"
        if api_prefix != JS_API_PREFIX:
            fix += f", or check the JetStream domain (api_prefix {api_prefix!r})"
        raise JetStreamError(
            f"JetStream is not enabled on the NATS server at {_server_url(nc)} (or not for this account): {fix}",
            code=exc.code,
            err_code=exc.err_code,
            description=exc.description,
        ) from cause
    except AsyncJobsError:  # a timeout or a closed connection says nothing about JetStream: keep the first error
        return


def _server_url(nc: NATS) -> str:
    # Built from the parts so that credentials in the URL never reach a message.
    url = nc.connected_url
    if url is None:
        return "(unknown)"
    return f"{url.scheme}://{url.hostname}:{url.port}"
