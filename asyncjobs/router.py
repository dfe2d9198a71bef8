"""Routing tasks to handlers by type, with middleware (docs/protocol.md, Routing by task type)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from asyncjobs.errors import ConfigurationError, DuplicateHandlerError, NoHandlerError
from asyncjobs.task import validate_name

if TYPE_CHECKING:
    from asyncjobs.task import Task


class Handler(Protocol):
    """A task handler: ``async def handle(task: Task) -> Any``.

    The return value is stored as the task's result (``bytes`` as base64, anything else as JSON). Raise
    :class:`~asyncjobs.TerminateTask` to end the task without retries; any other exception retries it.
    """

    def __call__(self, task: Task, /) -> Awaitable[Any]: ...


Middleware = Callable[[Handler], Handler]
"""Wraps a handler in another: ``def mw(next: Handler) -> Handler``."""


def chain(*middleware: Middleware) -> Middleware:
    """Compose middleware into one; the first given is the outermost."""
    for mw in middleware:
        _check_middleware(mw)

    def wrap(handler: Handler) -> Handler:
        for mw in reversed(middleware):
            handler = mw(handler)
        return handler

    return wrap


def _check_middleware(mw: object) -> None:
    if mw is None or not callable(mw):
        raise ConfigurationError(f"invalid middleware {mw!r}: pass a callable taking and returning a handler")


def _check_async(task_type: str, handler: object) -> None:
    """Refuse a handler that is certainly not async.

    A plain ``def`` handler would run, have its side effects, and only then fail when its result is awaited; the
    task would be retried and the side effects repeated. ``functools.partial`` is looked through; objects whose
    ``__call__`` cannot be inspected (a C callable) are accepted.

    Raises:
        ConfigurationError: the handler is a plain function or method, a class, an async generator function, or
            an object whose ``__call__`` is a plain method.
    """
    target = handler
    while isinstance(target, functools.partial):
        target = target.func
    if _is_async(target):
        return
    if inspect.isclass(target):
        raise ConfigurationError(
            f"handler for {task_type!r} is a class (calling it makes an instance, not a result): register an "
            "instance whose __call__ is declared with async def"
        )
    if inspect.isroutine(target):
        problem = "a plain function"
        if inspect.isasyncgenfunction(inspect.unwrap(target)):
            problem = "an async generator function (a handler returns its result, it does not yield)"
    else:
        call = getattr(type(target), "__call__", None)  # noqa: B004 - the class attribute, not callable()
        if not inspect.isfunction(call) or _is_async(call):
            return
        problem = f"an object whose {type(target).__name__}.__call__ is a plain method"
    raise ConfigurationError(
        f"handler for {task_type!r} is {problem}: declare it with async def (or wrap blocking code with "
        "asyncio.to_thread)"
    )


def _is_async(fn: Any) -> bool:
    # Also looks through functools.wraps decorators: a sync wrapper around a coroutine function returns its
    # coroutine.
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(inspect.unwrap(fn))


@dataclass(slots=True)
class _Route:
    handler: Handler
    middleware: tuple[Middleware, ...]
    wrapped: Handler


class Router:
    """Maps task types to handlers.

    Lookup takes the exact type first, then the longest registered prefix (so ``"email:"`` catches
    ``"email:new"`` and ``""`` catches everything). A task with no route fails with :class:`NoHandlerError` and is
    retried; middleware does not wrap that failure.
    """

    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}
        self._middleware: list[Middleware] = []
        self._prefixes: list[str] = []

    def handler(self, task_type: str, *, middleware: Sequence[Middleware] = ()) -> Callable[[Handler], Handler]:
        """Decorator registering a handler for ``task_type`` (a prefix; ``""`` catches all).

        Raises:
            DuplicateHandlerError: a handler is already registered for that type.
        """

        def register(fn: Handler) -> Handler:
            self.add(task_type, fn, middleware=middleware)
            return fn

        return register

    def add(self, task_type: str, handler: Handler, *, middleware: Iterable[Middleware] = ()) -> None:
        """Register ``handler`` for ``task_type`` with optional per-route middleware (inside global middleware).

        Raises:
            DuplicateHandlerError: a handler is already registered for that type.
            ConfigurationError: the handler is not callable or not async (a plain ``def``), or a middleware is not
                callable.
            InvalidNameError: the type breaks the name rule.
        """
        if task_type:
            validate_name(task_type, "task type")
        if task_type in self._routes:
            raise DuplicateHandlerError(f"a handler for task type {task_type!r} is already registered")
        if not callable(handler):
            raise ConfigurationError(f"handler for {task_type!r} must be an async callable taking a Task")
        _check_async(task_type, handler)
        route_mw = tuple(middleware)
        for mw in route_mw:
            _check_middleware(mw)
        self._routes[task_type] = _Route(handler, route_mw, self._wrap(handler, route_mw))
        self._prefixes = sorted(self._routes, key=len, reverse=True)

    def use(self, *middleware: Middleware) -> None:
        """Add global middleware; the first ever registered is the outermost. Existing routes are re-wrapped."""
        for mw in middleware:
            _check_middleware(mw)
        self._middleware.extend(middleware)
        for route in self._routes.values():
            route.wrapped = self._wrap(route.handler, route.middleware)

    def remote(self, task_type: str, *, middleware: Iterable[Middleware] = ()) -> None:
        """Route ``task_type`` to a remote NATS request-reply handler (docs/protocol.md, Remote handlers)."""
        from asyncjobs.remote import RequestReplyHandler

        self.add(task_type, RequestReplyHandler(task_type), middleware=middleware)

    def external(
        self,
        task_type: str,
        command: str | Path,
        *,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        middleware: Iterable[Middleware] = (),
    ) -> None:
        """Route ``task_type`` to an external command (see :class:`asyncjobs.remote.ExternalCommand`).

        Raises:
            RemoteHandlerError: the command does not exist or is not executable.
        """
        from asyncjobs.remote import ExternalCommand

        self.add(task_type, ExternalCommand(command, args=args, env=env), middleware=middleware)

    def _wrap(self, handler: Handler, route_mw: tuple[Middleware, ...]) -> Handler:
        return chain(*self._middleware, *route_mw)(handler)

    def lookup(self, task_type: str) -> Handler:
        """Return the wrapped handler for a task type, or one that raises :class:`NoHandlerError`."""
        route = self._routes.get(task_type)
        if route is None:
            for prefix in self._prefixes:
                if task_type.startswith(prefix):
                    route = self._routes[prefix]
                    break
            else:
                return _not_found
        return route.wrapped

    @property
    def task_types(self) -> list[str]:
        """The registered types, longest first."""
        return list(self._prefixes)

    def __len__(self) -> int:
        return len(self._routes)


async def _not_found(task: Task) -> Any:
    raise NoHandlerError(f'no handler for task type "{task.type}"')
