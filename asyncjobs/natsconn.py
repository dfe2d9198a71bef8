"""Opening NATS connections: server URLs, NATS CLI contexts and authentication."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import ssl
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import nats.errors
from nats.aio.client import Client as NATS

from asyncjobs import denials
from asyncjobs.errors import ConfigurationError, JetStreamError
from asyncjobs.natscontext import NatsContext, load_context
from asyncjobs.options import ConnectionOptions, check_file
from asyncjobs.retry import RETRY_LINEAR_ONE_MINUTE

log = logging.getLogger("asyncjobs")

DEFAULT_URL = "nats://127.0.0.1:4222"
INITIAL_CONNECT_ATTEMPTS = 2
INITIAL_RECONNECT_WAIT_S = 0.5
FIRST_CONNECT_ERRORS_KEPT: Final = 20
"""How many errors of the first connection attempt are kept to explain a failure."""
TLS_EOF_WARNING: Final = "returning true from eof_received() has no effect when using ssl"
"""What asyncio logs at WARNING on every disconnect of a nats-py TLS connection (see :class:`TlsEofNoise`)."""


class TlsEofNoise(logging.Filter):
    """Drops asyncio's warning ``returning true from eof_received() has no effect when using ssl``, and only it.

    nats-py upgrades a connection to TLS with ``loop.start_tls()`` and a new ``asyncio.StreamReaderProtocol`` that
    is never told it runs over TLS, so when the server closes the connection its ``eof_received()`` returns True
    and asyncio's TLS transport warns that this has no effect; it closes the connection just the same. The warning
    came on every TLS disconnect and said nothing a user can act on. Installed on the ``asyncio`` logger by
    :func:`quiet_tls_eof_warning`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == TLS_EOF_WARNING and not record.args)


_TLS_EOF_NOISE: Final = TlsEofNoise()


def quiet_tls_eof_warning() -> None:
    """Install :class:`TlsEofNoise` on the ``asyncio`` logger, once per process (each later call does nothing)."""
    asyncio_log = logging.getLogger("asyncio")
    if _TLS_EOF_NOISE not in asyncio_log.filters:
        asyncio_log.addFilter(_TLS_EOF_NOISE)


def tls_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """Build a TLS context from files, or ``None`` when none is given.

    Raises:
        ConfigurationError: a file does not hold a usable PEM certificate or key.
    """
    if not (ca or cert):
        return None
    try:
        context = ssl.create_default_context(cafile=ca or None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"TLS CA file {ca!r} holds no usable certificate ({exc}): pass a PEM file with the CA certificate"
        ) from exc
    if cert and key:
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigurationError(
                f"cannot load the TLS client certificate {cert!r} with key {key!r} ({exc}): pass PEM files of a "
                "certificate and its matching private key"
            ) from exc
    return context


class _FirstConnect:
    """What nats-py reports through ``error_cb`` while the first connection is attempted.

    nats-py's own exception then only says "no servers available"; the reports say why (an authorization
    violation, a certificate the CA does not vouch for, a host name that does not resolve), so they go into the
    error raised. Once connected, errors are logged at WARNING.
    """

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.connected = False
        self.fatal = asyncio.Event()
        self.nc: NATS | None = None

    async def on_error(self, exc: Exception) -> None:
        if self.connected:
            if self.nc is not None and denials.note(self.nc, exc):
                log.warning("NATS refused a message: %s (the request it belonged to fails with the fix)", exc)
                return
            log.warning("NATS connection error: %s", exc)
            return
        log.debug("NATS connection attempt failed: %r", exc)
        if len(self.errors) < FIRST_CONNECT_ERRORS_KEPT:
            self.errors.append(exc)
        if isinstance(exc, ssl.SSLCertVerificationError):
            # nats-py stops trying after a failed certificate check without ever returning: give up now.
            self.fatal.set()

    async def on_disconnect(self) -> None:
        # nats-py reports each failed first attempt as a disconnection too: only a real one is news.
        if self.connected:
            log.info("disconnected from NATS")

    def reason(self, options: ConnectionOptions, ctx: NatsContext | None, servers: Sequence[str]) -> str | None:
        """The most telling reported failure with how to fix it, or ``None`` when nothing was reported."""
        for exc in self.errors:
            if _is_auth_error(exc):
                return f"authorization violation: {_auth_hint(options, ctx)}"
        for exc in self.errors:
            if isinstance(exc, ssl.SSLCertVerificationError):
                return (
                    f"TLS certificate verification failed ({exc.verify_message}): pass tls_ca_file with the CA "
                    "certificate that signed the server's certificate, and use a server address the certificate "
                    "names"
                )
        for exc in self.errors:
            if isinstance(exc, ssl.SSLError):
                return (
                    f"TLS handshake failed ({exc.reason or exc}): check tls_ca_file, tls_cert_file and "
                    "tls_key_file against the server's TLS settings"
                )
        for exc in self.errors:
            if isinstance(exc, socket.gaierror):
                hosts = ", ".join(repr(host) for host in _host_names(servers)) or "the server's host name"
                return (
                    f"cannot resolve host {hosts} ({exc.strerror or exc}): check the host name in the server URL "
                    "and the DNS settings of this machine"
                )
        for exc in self.errors:
            if isinstance(exc, ConnectionRefusedError):
                return "connection refused: check that nats-server runs and listens at that address and port"
        for exc in self.errors:
            if isinstance(exc, OSError) and exc.errno in _NO_ROUTE_ERRNOS:
                return (
                    f"no route to host ({exc.strerror or exc}): check the address, and the network between this "
                    "machine and the server (routes, firewall, VPN)"
                )
        for exc in self.errors:
            if isinstance(exc, TimeoutError):
                return _timed_out(options.connect_timeout)
        for exc in self.errors:
            if isinstance(exc, nats.errors.Error) and "expecting INFO" in str(exc):
                return (
                    "the server closed the connection without a NATS greeting: check that the address is a NATS "
                    "client port (4222 by default, not the monitoring or cluster port)"
                )
        if self.errors:
            last = self.errors[-1]
            return str(last) or type(last).__name__
        return None


_NO_ROUTE_ERRNOS: Final = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN})


def _timed_out(seconds: float) -> str:
    return (
        f"timed out: no NATS server answered within {seconds:.3g}s: check the address and port, that nats-server "
        "runs there and that no firewall drops the traffic (or raise connect_timeout)"
    )


def _redacted(server: str) -> str:
    """A server URL without the user and password it may hold, for messages."""
    parts = urlsplit(server)
    if parts.password is None and parts.username is None:
        return server
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _host_names(servers: Sequence[str]) -> list[str]:
    """The host names (not IP addresses) in server URLs: the ones a DNS lookup can fail for."""
    names: list[str] = []
    for server in servers:
        host = urlsplit(server if "://" in server else f"nats://{server}").hostname
        if not host or host in names:
            continue
        try:
            ipaddress.ip_address(host)
        except ValueError:
            names.append(host)
    return names


def _is_auth_error(exc: BaseException) -> bool:
    if isinstance(exc, nats.errors.AuthorizationError):
        return True
    text = str(exc).lower()
    return isinstance(exc, nats.errors.Error) and ("authorization" in text or "authentication" in text)


def _auth_hint(options: ConnectionOptions, ctx: NatsContext | None) -> str:
    if options.creds_file or (ctx and ctx.creds):
        return "check the credentials file (and that the server trusts its account)"
    if options.nkey_seed_file or (ctx and ctx.nkey):
        return "check the nkey seed file (its public key must be a user on the server)"
    if options.token or (ctx and ctx.token):
        return "check the token"
    if options.user or (ctx and ctx.user):
        return "check the user and password"
    return (
        "the server requires authentication: pass user and password (or token, nkey_seed_file, creds_file), "
        "or a NATS context holding them"
    )


async def open_connection(options: ConnectionOptions) -> tuple[NATS, str | None]:
    """Connect to NATS as the options say; return the connection and the context's JetStream API prefix.

    Raises:
        ConfigurationError: the context or credentials are unusable.
        JetStreamError: no server could be reached.
    """
    ctx = load_context(options.context) if options.context is not None else None
    attempt = _FirstConnect()
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
        "error_cb": attempt.on_error,
        "disconnected_cb": attempt.on_disconnect,
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
        kwargs["user_credentials"] = _existing(creds, "creds_file", ctx)
    nkey = options.nkey_seed_file or (ctx.nkey if ctx else "")
    if nkey:
        kwargs["nkeys_seed"] = _existing(nkey, "nkey_seed_file", ctx)
    tls = options.tls or tls_context(
        _existing(options.tls_ca_file or (ctx.ca if ctx else ""), "tls_ca_file", ctx),
        _existing(options.tls_cert_file or (ctx.cert if ctx else ""), "tls_cert_file", ctx),
        _existing(options.tls_key_file or (ctx.key if ctx else ""), "tls_key_file", ctx),
    )
    if tls is not None:
        kwargs["tls"] = tls
    if ctx and ctx.inbox_prefix:
        kwargs["inbox_prefix"] = ctx.inbox_prefix
    # TLS is used when asked for, but also when the server requires it: nats-py then upgrades on its own.
    quiet_tls_eof_warning()
    nc = NATS()
    attempt.nc = nc
    # nats-py can keep retrying some failures (a TLS handshake it cannot verify) past its attempt limit, so the
    # first connection also gets an overall deadline.
    deadline = (options.connect_timeout + INITIAL_RECONNECT_WAIT_S) * INITIAL_CONNECT_ATTEMPTS * len(servers) + 1
    try:
        await _connect(nc, kwargs, attempt, deadline)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.shield(nc.close())  # cancelled mid-connect: leave no half-open connection behind
        raise
    except Exception as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        reason = attempt.reason(options, ctx, servers)
        if reason is None:
            if isinstance(exc, TimeoutError):
                reason = _timed_out(deadline)
            else:
                reason = f"{str(exc) or type(exc).__name__}: check the address and that nats-server runs there"
        where = ", ".join(_redacted(server) for server in servers)
        raise JetStreamError(f"cannot connect to NATS at {where}: {reason}") from exc
    secure_ws = nc.connected_url is not None and nc.connected_url.scheme == "wss"  # TLS below the websocket
    asked = tls is not None or any(urlsplit(server).scheme == "tls" for server in servers)
    if asked and not secure_ws and not _server_info(nc).get("tls_required"):
        with contextlib.suppress(Exception):
            await nc.close()
        where = ", ".join(_redacted(server) for server in servers)
        raise ConfigurationError(
            f"TLS was asked for (TLS options or a tls:// URL), but the NATS server at {where} does not require TLS, so "
            "nats-py would talk to "
            "it in plain text: enable TLS on the server (a tls block without allow_non_tls, see docs/security.md), "
            "or drop the TLS options"
        )
    attempt.connected = True
    # Once connected, reconnect forever with upstream's delay (the 1-minute linear policy's first interval).
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = RETRY_LINEAR_ONE_MINUTE.delay(1)
    return nc, ctx.api_prefix if ctx else None


def _server_info(nc: NATS) -> dict[str, Any]:
    # nats-py keeps the server's INFO only in a private attribute; read it defensively.
    info = getattr(nc, "_server_info", None)
    return info if isinstance(info, dict) else {}


async def _connect(nc: NATS, kwargs: dict[str, Any], attempt: _FirstConnect, deadline: float) -> None:
    """Run nats-py's connect, giving up at ``deadline`` seconds or at once on a fatal report.

    Raises:
        TimeoutError: no connection in time, or a fatal error was reported (see ``attempt``).
        Exception: what nats-py raised.
    """
    connecting = asyncio.ensure_future(nc.connect(**kwargs))
    fatal = asyncio.ensure_future(attempt.fatal.wait())
    try:
        async with asyncio.timeout(deadline):
            await asyncio.wait((connecting, fatal), return_when=asyncio.FIRST_COMPLETED)
    finally:
        fatal.cancel()
        if not connecting.done():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
    if connecting.cancelled():
        raise TimeoutError("the first connection attempt failed fatally")
    connecting.result()


_CONTEXT_FIELDS: Final = {
    "creds_file": "creds",
    "nkey_seed_file": "nkey",
    "tls_ca_file": "ca",
    "tls_cert_file": "cert",
    "tls_key_file": "key",
}


def _existing(path: str, option: str, ctx: NatsContext | None) -> str:
    """Expand and check a file named by an option or by the NATS context; ``""`` stays ``""``."""
    if not path:
        return ""
    what = option if ctx is None else f"{option} (or the {_CONTEXT_FIELDS[option]!r} of NATS context {ctx.name!r})"
    return check_file(path, what, "an existing file")


async def _on_reconnect() -> None:
    log.info("reconnected to NATS")
