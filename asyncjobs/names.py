"""The name rule shared by task types, task ids and queue names (``^[a-zA-Z0-9_:-]+$``) and their length limits.

These checks are also importable from :mod:`asyncjobs.task`, where they used to live.
"""

from __future__ import annotations

import re
from typing import Final

from asyncjobs.constants import (
    MAX_QUEUE_NAME_LENGTH,
    MAX_STREAM_NAME_LENGTH,
    MAX_TASK_ID_LENGTH,
    MAX_TASK_TYPE_LENGTH,
    NAME_PATTERN,
    QUEUE_STREAM_PREFIX,
)
from asyncjobs.errors import InvalidNameError

__all__ = ["validate_name", "validate_queue_name", "validate_task_id"]

# fullmatch, not match: with match, "$" also matches before a trailing newline, so "id\n" would pass.
_NAME_RE: Final = re.compile(r"[a-zA-Z0-9_:-]+")
_NAME_CHARS: Final = "letters, digits, '_', ':' and '-'"

_SHORTER_ID: Final = "use a shorter id (a hash of the natural key)"
# The length limit and the fix for each kind of name; other names get the task id limit.
_LENGTH_LIMITS: Final = {
    "task id": (MAX_TASK_ID_LENGTH, _SHORTER_ID),
    "task dependency id": (MAX_TASK_ID_LENGTH, _SHORTER_ID),
    "task type": (MAX_TASK_TYPE_LENGTH, "use a shorter type"),
    "queue name": (
        MAX_QUEUE_NAME_LENGTH,
        f"use a shorter name (its stream {QUEUE_STREAM_PREFIX}<name> may have at most {MAX_STREAM_NAME_LENGTH} "
        "characters)",
    ),
}


def validate_name(value: str, what: str, *, max_length: int | None = None) -> str:
    """Check a task type, task id, queue name or other name against the shared name rule and its length limit.

    Args:
        value: the name.
        what: what the name is, for the message; ``"task id"``, ``"task dependency id"``, ``"task type"`` and
            ``"queue name"`` also select their length limit.
        max_length: the longest allowed name; by default the limit ``what`` selects, else
            :data:`~asyncjobs.constants.MAX_TASK_ID_LENGTH`.

    Returns:
        The name, unchanged.

    Raises:
        InvalidNameError: the value is not a string, is too long, or does not match ``^[a-zA-Z0-9_:-]+$``.
    """
    if not isinstance(value, str):
        raise InvalidNameError(f"{what} must be a string of {_NAME_CHARS}, not {type(value).__name__}")
    limit, fix = _LENGTH_LIMITS.get(what, (MAX_TASK_ID_LENGTH, "use a shorter one"))
    if max_length is not None:
        limit = max_length
    # Length first: it is cheap, and a huge value is not worth a regex nor a full repr in the message.
    if len(value) > limit:
        raise InvalidNameError(f"{what} is {len(value)} characters, over the limit of {limit}: {fix}")
    if _NAME_RE.fullmatch(value) is None:
        raise InvalidNameError(f"{what} is invalid: {value!r} must match {NAME_PATTERN}: use only {_NAME_CHARS}")
    return value


def validate_task_id(task_id: str) -> str:
    """Check a task id: the name rule and at most :data:`~asyncjobs.constants.MAX_TASK_ID_LENGTH` characters.

    Raises:
        InvalidNameError: the id breaks the rule.
    """
    return validate_name(task_id, "task id", max_length=MAX_TASK_ID_LENGTH)


def validate_queue_name(name: str) -> str:
    """Check a queue name: the name rule and at most :data:`~asyncjobs.constants.MAX_QUEUE_NAME_LENGTH` characters.

    Raises:
        InvalidNameError: the name breaks the rule.
    """
    return validate_name(name, "queue name", max_length=MAX_QUEUE_NAME_LENGTH)
