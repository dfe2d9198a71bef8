"""How an ``ajc`` command connects and fails: the connection flags, the client it opens, and one-line errors.

Connection flags may be given before the command (``ajc --context X tasks ls``) or after it (``ajc tasks ls
--context X``), as with upstream's ``ajc``. The URL comes from ``--server``/``NATS_URL``, else the context
(``--context``/``CONTEXT``, default ``AJC`` when that context exists, else the selected NATS CLI context), else
``nats://127.0.0.1:4222``. Every failure ends with one line on stderr (``ajc: error: ...``) and a non-zero exit:
1 for a failed operation, 2 for bad usage, 130 for Ctrl-C. ``--debug`` adds the traceback and debug logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn, ParamSpec, TypeVar

import click

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_CONTEXT: Final = "AJC"
"""The NATS CLI context upstream's ``ajc`` uses when none is named."""
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
CONNECT_TIMEOUT_S: Final = 5.0

log = logging.getLogger("asyncjobs")

# name, flags, environment variables (root only), help
_CONNECTION_FLAGS: Final = (
    ("context", ("--context",), ("CONTEXT", "NATS_CONTEXT"), "NATS CLI context to connect with (env CONTEXT)"),
    ("server", ("--server", "-s"), ("NATS_URL",), "NATS URL(s), comma-separated (env NATS_URL)"),
    ("user", ("--user",), ("NATS_USER",), "user name (env NATS_USER)"),
    ("password", ("--password",), ("NATS_PASSWORD",), "password (env NATS_PASSWORD)"),
    ("token", ("--token",), ("NATS_TOKEN",), "authentication token (env NATS_TOKEN)"),
    ("creds", ("--creds",), ("NATS_CREDS",), "JWT credentials file (env NATS_CREDS)"),
    ("nkey", ("--nkey",), ("NATS_NKEY",), "nkey seed file (env NATS_NKEY)"),
    ("tls_ca", ("--tlsca", "--tls-ca"), ("NATS_CA",), "CA file to verify the server (env NATS_CA)"),
    ("tls_cert", ("--tlscert", "--tls-cert"), ("NATS_CERT",), "client certificate for mutual TLS (env NATS_CERT)"),
    ("tls_key", ("--tlskey", "--tls-key"), ("NATS_KEY",), "client key for mutual TLS (env NATS_KEY)"),
)


@dataclass
class Session:
    """The state of one ``ajc`` invocation: connection settings and debug, filled in by the flags."""

    settings: dict[str, str] = field(default_factory=dict)
    debug: bool = False
    signing: dict[str, str] = field(default_factory=dict)
    """:func:`asyncjobs.connect`'s signing options set by ``ajc tasks --sign/--verify`` for every command under it
    (tasks added or retried are signed, ``process`` verifies, ``cron scheduler`` signs what it enqueues)."""

    def client_options(self) -> dict[str, Any]:
        """:meth:`connect_options` and the signing options: what every client of this invocation is given."""
        return {**self.connect_options(), **self.signing}

    def connect_options(self) -> dict[str, Any]:
        """The :func:`asyncjobs.connect` arguments for the connection flags."""
        s = self.settings
        options: dict[str, Any] = {
            "user": s.get("user"),
            "password": s.get("password"),
            "token": s.get("token"),
            "creds_file": s.get("creds"),
            "nkey_seed_file": s.get("nkey"),
            "tls_ca_file": s.get("tls_ca"),
            "tls_cert_file": s.get("tls_cert"),
            "tls_key_file": s.get("tls_key"),
            "connect_timeout": CONNECT_TIMEOUT_S,
        }
        context = s.get("context")
        if s.get("server"):
            options["servers"] = s["server"]
            if context:
                options["context"] = context  # credentials and domain from the context, URL from --server
        elif context:
            options["context"] = context
        elif _context_exists(DEFAULT_CONTEXT):
            options["context"] = DEFAULT_CONTEXT
        elif _selected_context():
            options["context"] = _selected_context()
        return {key: value for key, value in options.items() if value is not None}

    @contextlib.asynccontextmanager
    async def client(self, *, queue: Any = None, init: bool = False, **options: Any) -> AsyncIterator[Any]:
        """A connected :class:`asyncjobs.Client`, closed on exit.

        Args:
            queue: the queue to bind (a name or :class:`asyncjobs.Queue`), when the command needs one.
            init: create the task store (and the queue, unless it is bound with ``no_create``) when missing, as
                upstream's ``ajc`` does; otherwise nothing is created.
            **options: any other :func:`asyncjobs.connect` option.
        """
        import asyncjobs

        if not init:
            options.setdefault("no_storage_init", True)
        client = await asyncjobs.connect(queue=queue, **{**self.client_options(), **options})
        try:
            yield client
        finally:
            await client.close()


def _context_exists(name: str) -> bool:
    from asyncjobs.natscontext import context_dir

    return (context_dir() / f"{name}.json").is_file()


def _selected_context() -> str:
    from asyncjobs.natscontext import context_dir

    try:
        return (context_dir().parent / "context.txt").read_text().strip()
    except OSError:
        return ""


def _store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is None or value is False or param.name is None:
        return
    session = ctx.find_object(Session) or ctx.ensure_object(Session)
    if param.name == "debug":
        session.debug = True
    else:
        session.settings[param.name] = value


def connection_options(*, root: bool = False) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Add the connection flags and ``--debug`` to a command.

    On the root they are listed in ``--help`` and take their defaults from the environment; on every other command
    they are hidden and only override what the root was given.
    """

    def decorate(command: Callable[P, R]) -> Callable[P, R]:
        wrapped: Any = command
        for name, flags, env, text in reversed(_CONNECTION_FLAGS):
            wrapped = click.option(
                *flags,
                name,
                envvar=list(env) if root else None,
                show_envvar=False,
                hidden=not root,  # listed once, in `ajc --help`
                expose_value=False,
                callback=_store,
                help=text,
                metavar="TEXT" if name not in ("creds", "nkey", "tls_ca", "tls_cert", "tls_key") else "FILE",
            )(wrapped)
        wrapped = click.option(
            "--debug",
            is_flag=True,
            default=False,
            envvar="AJC_DEBUG" if root else None,
            hidden=not root,
            expose_value=False,
            callback=_store,
            help="log debug messages and show tracebacks (env AJC_DEBUG)",
        )(wrapped)
        result: Callable[P, R] = wrapped
        return result

    return decorate


def json_option(command: Callable[P, R]) -> Callable[P, R]:
    """Add ``-j/--json`` (as the parameter ``json_output``)."""
    result: Callable[P, R] = click.option(
        "--json", "-j", "json_output", is_flag=True, help="print JSON instead of text"
    )(command)
    return result


def force_option(command: Callable[P, R]) -> Callable[P, R]:
    """Add ``-f/--force`` (skip the confirmation prompt)."""
    result: Callable[P, R] = click.option("--force", "-f", is_flag=True, help="do not ask for confirmation")(command)
    return result


def session() -> Session:
    """The current invocation's :class:`Session`."""
    return click.get_current_context().ensure_object(Session)


def run(
    work: Callable[[], Awaitable[R]],
    *,
    service: bool = False,
    runner: Callable[[Coroutine[Any, Any, R]], R] = asyncio.run,
) -> R:
    """Run a command's coroutine and turn every failure into one line on stderr and an exit status.

    Args:
        work: the command's coroutine function.
        service: a long-running command (``tasks process``, ``cron scheduler``) that logs at INFO.
        runner: what runs the coroutine to its end (``asyncio.run``; a service passes the worker command's runner,
            which does not wait forever for a handler that ignores its cancellation).

    Raises:
        click.exceptions.Exit: with the status of a failure (the message is already printed).
    """
    current = session()
    _configure_logging(current.debug, service=service)
    try:
        return runner(_main(work))
    except KeyboardInterrupt:
        click.echo("ajc: interrupted", err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except Exception as exc:  # every other failure: one line, never a traceback (unless --debug)
        if current.debug:
            traceback.print_exc()
        fail(describe(exc), status=usage_status(exc))


async def _main(work: Callable[[], Awaitable[R]]) -> R:
    return await work()


def fail(message: str, *, status: int = EXIT_FAILED) -> NoReturn:
    """Print ``ajc: error: message`` on stderr and exit with ``status``.

    Raises:
        click.exceptions.Exit: always.
    """
    click.echo(f"ajc: error: {message}", err=True)
    raise click.exceptions.Exit(status)


def usage_status(exc: BaseException) -> int:
    """2 for bad arguments or options (restarting cannot help), 1 for anything else."""
    from asyncjobs.errors import ConfigurationError

    return EXIT_USAGE if isinstance(exc, ConfigurationError | ValueError) else EXIT_FAILED


def describe(exc: BaseException) -> str:
    """One line saying what failed, for errors that are not the library's own (which already say it)."""
    from asyncjobs.errors import AsyncJobsError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, AsyncJobsError) and text:
        return text
    if isinstance(exc, OSError | TimeoutError | asyncio.TimeoutError):
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else f"{type(exc).__name__} (run with --debug for the traceback)"


def _configure_logging(debug: bool, *, service: bool) -> None:
    # A one-shot command reports its outcome itself, in one line; the library's warnings on the way (a retry, a
    # refused message) would only repeat it. --debug shows everything.
    level = logging.DEBUG if debug else logging.INFO if service else logging.ERROR
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not debug:
        logging.getLogger("nats").setLevel(logging.CRITICAL)  # its reconnect chatter: our errors say what failed
