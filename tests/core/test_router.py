"""Routing and middleware (docs/protocol.md, Routing by task type), table-driven, no server needed."""

from __future__ import annotations

import functools
import unittest.mock
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import asyncjobs


def _handler(name: str) -> asyncjobs.Handler:
    async def handle(task: asyncjobs.Task) -> Any:
        return name

    return handle


ROUTES = ["things:", "things:very:specific", "email:new", ""]


@pytest.mark.parametrize(
    ("task_type", "expected"),
    [
        ("email:new", "email:new"),
        ("things:very:specific", "things:very:specific"),
        ("things:very:specific:more", "things:very:specific"),
        ("things:other", "things:"),
        ("things:", "things:"),
        ("email:old", ""),
        ("anything", ""),
    ],
)
async def test_exact_then_longest_prefix(task_type: str, expected: str) -> None:
    router = asyncjobs.Router()
    for route in ROUTES:
        router.add(route, _handler(route))
    assert await router.lookup(task_type)(asyncjobs.Task(task_type if task_type else "x")) == expected


async def test_unrouted_type_raises_no_handler() -> None:
    router = asyncjobs.Router()
    router.add("email:new", _handler("email"))
    with pytest.raises(asyncjobs.NoHandlerError, match='no handler for task type "sms:new"'):
        await router.lookup("sms:new")(asyncjobs.Task("sms:new"))


def test_duplicate_and_invalid_registrations() -> None:
    router = asyncjobs.Router()
    router.add("x", _handler("x"))
    with pytest.raises(asyncjobs.DuplicateHandlerError, match="'x' is already registered"):
        router.add("x", _handler("x"))
    with pytest.raises(asyncjobs.InvalidNameError):
        router.add("bad type", _handler("x"))
    with pytest.raises(asyncjobs.ConfigurationError, match="invalid middleware"):
        router.use(None)  # type: ignore[arg-type]
    with pytest.raises(asyncjobs.ConfigurationError, match="async callable"):
        router.add("y", "not callable")  # type: ignore[arg-type]


async def test_middleware_order() -> None:
    calls: list[str] = []

    def mw(name: str) -> asyncjobs.Middleware:
        def wrap(next_handler: asyncjobs.Handler) -> asyncjobs.Handler:
            async def inner(task: asyncjobs.Task) -> Any:
                calls.append(f"{name}>")
                result = await next_handler(task)
                calls.append(f"<{name}")
                return result

            return inner

        return wrap

    router = asyncjobs.Router()
    router.use(mw("g1"))

    @router.handler("x", middleware=[mw("r1"), mw("r2")])
    async def handle(task: asyncjobs.Task) -> str:
        calls.append("handler")
        return "ok"

    router.use(mw("g2"))  # added later, still wraps the existing route, inside g1
    assert await router.lookup("x")(asyncjobs.Task("x")) == "ok"
    assert calls == ["g1>", "g2>", "r1>", "r2>", "handler", "<r2", "<r1", "<g2", "<g1"]
    calls.clear()
    chained = asyncjobs.chain(mw("a"), mw("b"))(_handler("h"))
    await chained(asyncjobs.Task("x"))
    assert calls == ["a>", "b>", "<b", "<a"]


# ---- handlers must be async -----------------------------------------------------------------------------------------


def _plain(task: asyncjobs.Task) -> str:
    return "sent"


async def _async(task: asyncjobs.Task, greeting: str = "hi") -> str:
    return greeting


async def _async_gen(task: asyncjobs.Task) -> AsyncIterator[str]:
    yield "x"


class _SyncMethods:
    def handle(self, task: asyncjobs.Task) -> str:
        return "sync"

    def __call__(self, task: asyncjobs.Task) -> str:
        return "sync"


class _AsyncMethods:
    async def handle(self, task: asyncjobs.Task) -> str:
        return "async method"

    async def __call__(self, task: asyncjobs.Task) -> str:
        return "async call"


def _sync_decorator(fn: Callable[[asyncjobs.Task], Awaitable[str]]) -> Callable[[asyncjobs.Task], Awaitable[str]]:
    @functools.wraps(fn)
    def wrapper(task: asyncjobs.Task) -> Awaitable[str]:
        return fn(task)

    return wrapper


@pytest.mark.parametrize(
    ("handler", "problem"),
    [
        (_plain, "is a plain function"),
        (functools.partial(_plain), "is a plain function"),
        (functools.partial(functools.partial(_plain)), "is a plain function"),
        (_SyncMethods().handle, "is a plain function"),
        (lambda task: _async(task), "is a plain function"),
        (_SyncMethods(), r"is an object whose _SyncMethods.__call__ is a plain method"),
        (_async_gen, "is an async generator function"),
        (_AsyncMethods, "is a class"),
        (print, "is a plain function"),
    ],
)
def test_plain_handlers_are_refused(handler: Any, problem: str) -> None:
    router = asyncjobs.Router()
    with pytest.raises(asyncjobs.ConfigurationError, match=f"^handler for 'email:new' {problem}"):
        router.add("email:new", handler)
    assert len(router) == 0
    with pytest.raises(asyncjobs.ConfigurationError, match="async def"):
        router.handler("email:new")(handler)


def test_plain_handler_message_says_how_to_fix() -> None:
    with pytest.raises(asyncjobs.ConfigurationError) as caught:
        asyncjobs.Router().add("email:new", _plain)
    assert str(caught.value) == (
        "handler for 'email:new' is a plain function: declare it with async def "
        "(or wrap blocking code with asyncio.to_thread)"
    )


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (_async, "hi"),
        (functools.partial(_async, greeting="hello"), "hello"),
        (_AsyncMethods().handle, "async method"),
        (_AsyncMethods(), "async call"),
        (_sync_decorator(_async), "hi"),
        (unittest.mock.AsyncMock(return_value="mocked"), "mocked"),
    ],
)
async def test_async_handlers_are_accepted(handler: Any, expected: str) -> None:
    router = asyncjobs.Router()
    router.add("email:new", handler)
    assert await router.lookup("email:new")(asyncjobs.Task("email:new")) == expected


def test_remote_and_external_handlers_are_accepted(tmp_path: Path) -> None:
    script = tmp_path / "handler.sh"
    script.write_text("#!/bin/sh\necho ok\n")
    script.chmod(0o755)
    router = asyncjobs.Router()
    router.remote("remote:job")
    router.external("ext:job", script)
    assert router.task_types == ["remote:job", "ext:job"]


async def test_middleware_wrapping_an_async_handler_still_works() -> None:
    def sync_middleware(next_handler: asyncjobs.Handler) -> asyncjobs.Handler:
        # Middleware is a plain function returning a wrapper; only the handler itself must be async.
        def wrapper(task: asyncjobs.Task) -> Awaitable[Any]:
            return next_handler(task)

        return wrapper

    router = asyncjobs.Router()
    router.use(sync_middleware)
    router.add("x", _async, middleware=[sync_middleware])
    assert await router.lookup("x")(asyncjobs.Task("x")) == "hi"
