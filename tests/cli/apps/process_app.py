"""A router for ``ajc tasks process`` tests, imported by path (``process_app:router``) from ``--app-dir``."""

from __future__ import annotations

import asyncjobs

router = asyncjobs.Router()


@router.handler("py:upper")
async def upper(task: asyncjobs.Task) -> str:
    return str(task.payload_json()).upper()


@router.handler("py:length")
async def length(task: asyncjobs.Task) -> int:
    return len(str(task.payload_json()))


def make_router() -> asyncjobs.Router:
    """A factory, as ``--router process_app:make_router`` takes one."""
    return router
