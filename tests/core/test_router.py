"""Routing and middleware (upstream §1.6), table-driven, no server needed."""

from __future__ import annotations

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
