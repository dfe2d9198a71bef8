"""Opening NATS connections: server URLs, NATS CLI contexts and authentication."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from nats.aio.client import Client as NATS

from asyncjobs.errors import ConfigurationError, JetStreamError
from asyncjobs.options import ConnectionOptions
from asyncjobs.retry import RETRY_LINEAR_ONE_MINUTE

log = logging.getLogger("asyncjobs")

DEFAULT_URL = "nats://127.0.0.1:4222"
INITIAL_CONNECT_ATTEMPTS = 2
INITIAL_RECONNECT_WAIT_S = 0.5


@dataclass(frozen=True, slots=True)
class NatsContext:
    """The parts of a NATS CLI context (``nats context add``) that a client uses."""

    name: str
    url: str = ""
    user: str = ""
    password: str = ""
    token: str = ""
    creds: str = ""
    nkey: str = ""
    cert: str = ""
    key: str = ""
    ca: str = ""
    inbox_prefix: str = ""
    jetstream_domain: str = ""
    jetstream_api_prefix: str = ""

    @property
    def api_prefix(self) -> str | None:
        """The JetStream API prefix the context selects, if any."""
        if self.jetstream_api_prefix:
            return self.jetstream_api_prefix
        if self.jetstream_domain:
            return f"$JS.{self.jetstream_domain}.API"
        return None


def context_dir() -> Path:
    """Where the NATS CLI keeps contexts (``$XDG_CONFIG_HOME/nats/context``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "nats" / "context"


def load_context(name: str | None = None) -> NatsContext:
    """Read a NATS CLI context; ``None`` or ``""`` reads the selected one (``nats context select``).

    Raises:
        ConfigurationError: the context does not exist or cannot be read.
    """
    directory = context_dir()
    if not name:
        selected = directory.parent / "context.txt"
        try:
            name = selected.read_text().strip()
        except OSError:
            name = ""
        if not name:
            raise ConfigurationError("no NATS context is selected: pass a context name or run `nats context select`")
    if "/" in name or name.startswith("."):
        raise ConfigurationError(f"invalid NATS context name {name!r}")
    path = directory / f"{name}.json"
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigurationError(
            f"NATS context {name!r} not found at {path}: create it with `nats context add {name} --server URL`"
        ) from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigurationError(f"cannot read NATS context {name!r} at {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"NATS context {name!r} at {path} is not a JSON object")
    fields = {key: str(data[key]) for key in NatsContext.__dataclass_fields__ if key != "name" and data.get(key)}
    return NatsContext(name=name, **fields)


def tls_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """Build a TLS context from files, or ``None`` when none is given."""
    if not (ca or cert):
        return None
    context = ssl.create_default_context(cafile=ca or None)
    if cert and key:
        context.load_cert_chain(cert, key)
    return context


async def open_connection(options: ConnectionOptions) -> tuple[NATS, str | None]:
    """Connect to NATS as the options say; return the connection and the context's JetStream API prefix.

    Raises:
        ConfigurationError: the context or credentials are unusable.
        JetStreamError: no server could be reached.
    """
    ctx = load_context(options.context) if options.context is not None else None
    servers = list(options.servers) or ([u.strip() for u in ctx.url.split(",")] if ctx and ctx.url else [DEFAULT_URL])
    kwargs: dict[str, Any] = {
        "servers": servers,
        "name": options.name,
        "connect_timeout": options.connect_timeout,
        # nats-py applies the reconnect limit to the first connection too, where -1 would retry forever; so the
        # first connection gets a few quick tries and the limit is lifted once connected (below).
        "max_reconnect_attempts": INITIAL_CONNECT_ATTEMPTS,
        "allow_reconnect": True,
        "reconnect_time_wait": INITIAL_RECONNECT_WAIT_S,
        "error_cb": _on_error,
        "disconnected_cb": _on_disconnect,
        "reconnected_cb": _on_reconnect,
    }
    user = options.user or (ctx.user if ctx else "")
    if user:
        kwargs["user"] = user
        kwargs["password"] = options.password or (ctx.password if ctx else "")
    token = options.token or (ctx.token if ctx else "")
    if token:
        kwargs["token"] = token
    creds = options.creds_file or (ctx.creds if ctx else "")
    if creds:
        kwargs["user_credentials"] = _existing(creds, "credentials file")
    nkey = options.nkey_seed_file or (ctx.nkey if ctx else "")
    if nkey:
        kwargs["nkeys_seed"] = _existing(nkey, "nkey seed file")
    tls = options.tls or tls_context(
        options.tls_ca_file or (ctx.ca if ctx else None),
        options.tls_cert_file or (ctx.cert if ctx else None),
        options.tls_key_file or (ctx.key if ctx else None),
    )
    if tls is not None:
        kwargs["tls"] = tls
    if ctx and ctx.inbox_prefix:
        kwargs["inbox_prefix"] = ctx.inbox_prefix
    nc = NATS()
    # nats-py can keep retrying some failures (a TLS handshake it cannot verify) past its attempt limit, so the
    # first connection also gets an overall deadline.
    deadline = (options.connect_timeout + INITIAL_RECONNECT_WAIT_S) * INITIAL_CONNECT_ATTEMPTS * len(servers) + 1
    try:
        async with asyncio.timeout(deadline):
            await nc.connect(**kwargs)
    except Exception as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no connection within {deadline:.0f}s (see the logged connection errors)"
        raise JetStreamError(f"cannot connect to NATS at {', '.join(servers)}: {reason}") from exc
    # Once connected, reconnect forever with upstream's delay (the 1-minute linear policy's first interval).
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = RETRY_LINEAR_ONE_MINUTE.delay(1)
    return nc, ctx.api_prefix if ctx else None


def _existing(path: str, what: str) -> str:
    expanded = os.path.expanduser(path)
    if not os.path.isfile(expanded):
        raise ConfigurationError(f"{what} {path!r} does not exist")
    return expanded


async def _on_error(exc: Exception) -> None:
    log.warning("NATS connection error: %s", exc)


async def _on_disconnect() -> None:
    log.info("disconnected from NATS")


async def _on_reconnect() -> None:
    log.info("reconnected to NATS")
