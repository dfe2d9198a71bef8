"""Permission violations the NATS server reported on a connection, so a request they stopped fails at once.

A request whose subject the user may not publish to (or whose reply inbox it may not subscribe to) gets no reply:
the server reports ``-ERR 'Permissions Violation ...'`` on the connection instead. Without this record the request
would time out and be retried for the whole ``retry_window`` before failing as a timeout, which says nothing of
the cause. Violations are kept per connection (weakly) for connections the library opened itself.
"""

from __future__ import annotations

import re
import time
import weakref
from typing import Final

from nats.aio.client import Client as NATS

KEPT_PER_CONNECTION: Final = 64
_VIOLATION: Final = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"', re.IGNORECASE)
_seen: weakref.WeakKeyDictionary[NATS, dict[tuple[str, str], float]] = weakref.WeakKeyDictionary()


def note(nc: NATS, exc: BaseException) -> bool:
    """Record a permissions violation reported on ``nc``; return whether ``exc`` was one."""
    match = _VIOLATION.search(str(exc))
    if match is None:
        return False
    seen = _seen.setdefault(nc, {})
    if len(seen) >= KEPT_PER_CONNECTION:
        seen.pop(min(seen, key=seen.__getitem__))
    seen[(match.group(1).lower(), match.group(2).lower())] = time.monotonic()
    return True


def denial(nc: NATS, subject: str, *, since: float) -> str | None:
    """Why a request to ``subject`` sent at ``since`` (monotonic) got no reply, if a violation explains it."""
    seen = _seen.get(nc)
    if not seen:
        return None
    wanted = subject.lower()
    for (kind, denied), at in seen.items():
        if at < since:
            continue
        if kind == "publish" and denied == wanted:
            return (
                f"permission denied: this NATS user may not publish to {subject}: grant it in the server's "
                "authorization (the security guide lists what producers, workers and admins need), or connect as "
                "a user that has it"
            )
        if kind == "subscription":
            return (
                f"permission denied: this NATS user may not subscribe to {denied}, where replies arrive: grant it "
                "subscribe permission there (or set the context's inbox_prefix to a subject it may subscribe to)"
            )
    return None
