"""Conditions on a parent's result: the data of a step's ``when=``, and their evaluation.

A :class:`Condition` tests one value in the JSON result of one of the step's parents::

    Condition("check", "status", equals="ok")  # {"step": "check", "path": "status", "equals": "ok"}

Semantics, as the runtime applies them:

- A step's conditions are evaluated when its trigger rule would release it; all of them must hold. If one does not,
  the step is ``skipped``: its task is never enqueued, and the reason is recorded.
- A skipped step counts as not completed for its children: under ``all_success`` they are skipped too, under
  ``all_done`` they still run.
- A parent that did not complete has no result, so under ``all_done`` a condition on it is false, except
  ``exists: False``, which holds.

Evaluation is pure and never raises: a missing result, bytes that are not JSON or a path that leads nowhere make a
condition false (``exists: False`` holds when the path leads nowhere or there is no result), with a reason.
Values are compared as JSON values: ``1`` equals ``1.0``, but ``true`` does not equal ``1``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, Final

import orjson

from asyncjobs import ConfigurationError
from asyncjobs.names import validate_name
from asyncjobs.task import check_json
from asyncjobs_workflows.constants import MAX_STEP_NAME_LENGTH
from asyncjobs_workflows.errors import InvalidWorkflow

__all__ = ["CONDITION_KEYS", "OPERATORS", "Condition", "conditions_from", "evaluate_all"]

OPERATORS: Final = ("equals", "not_equals", "in", "not_in", "exists")
"""The operator keys of a condition's dict shape; a condition has exactly one."""
CONDITION_KEYS: Final = ("step", "path", *OPERATORS)
"""Every key of a condition's dict shape."""

_SHOWN_CHARS: Final = 60  # a value longer than this is cut in reasons: they are one line in a run's history


class _Unset(enum.Enum):
    """The type of :data:`_UNSET`, so that ``None`` (JSON ``null``) stays a value one can test for."""

    UNSET = enum.auto()

    def __repr__(self) -> str:
        return "UNSET"


_UNSET: Final = _Unset.UNSET
# Field names by operator key: "in" is a Python keyword.
_FIELDS: Final = {"equals": "equals", "not_equals": "not_equals", "in": "in_", "not_in": "not_in", "exists": "exists"}


@dataclass(frozen=True, eq=False)
class Condition:
    """A test on the JSON result of one of a step's parents; the step runs only if it holds.

    Give exactly one operator. Values are checked and copied as JSON at construction.

    Raises:
        InvalidWorkflow: the step name or path is invalid, not exactly one operator is given, ``in_`` or ``not_in``
            is not a list, ``exists`` is not a bool, or a value cannot be JSON-encoded.
    """

    step: str
    """The parent step whose result is tested; it must be in the ``after`` of the step with this condition."""
    path: str = ""
    """A dotted path into the result, ``""`` for the whole result; a segment of digits indexes a list
    (``"rows.0.id"``). Keys holding a dot cannot be reached."""
    _: KW_ONLY
    equals: Any = _UNSET
    """The value at ``path`` equals this JSON value."""
    not_equals: Any = _UNSET
    """The value at ``path`` is present and does not equal this JSON value."""
    in_: Sequence[Any] | _Unset = _UNSET
    """The value at ``path`` equals one of these JSON values (``"in"`` in the dict shape)."""
    not_in: Sequence[Any] | _Unset = _UNSET
    """The value at ``path`` is present and equals none of these JSON values."""
    exists: bool | _Unset = _UNSET
    """``True``: something (even ``null``) is at ``path``; ``False``: nothing is, or the parent has no result."""

    def __post_init__(self) -> None:
        _check(self.step, self.path, _given(self), f"condition on step {self.step!r}")
        field = _FIELDS[self.operator]
        value = orjson.loads(orjson.dumps(getattr(self, field)))  # a plain JSON copy: later changes do not leak in
        object.__setattr__(self, field, tuple(value) if field in ("in_", "not_in") else value)

    @property
    def operator(self) -> str:
        """The operator's key in the dict shape: ``equals``, ``not_equals``, ``in``, ``not_in`` or ``exists``."""
        return _given(self)[0][0]

    @property
    def value(self) -> Any:
        """The operator's value: a JSON value, a tuple of them for ``in`` and ``not_in``, a bool for ``exists``."""
        return _given(self)[0][1]

    def __repr__(self) -> str:
        path = f", {self.path!r}" if self.path else ""
        return f"Condition({self.step!r}{path}, {_FIELDS[self.operator]}={self.value!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Condition):
            return NotImplemented
        same = (self.step, self.path, self.operator) == (other.step, other.path, other.operator)
        return same and _json_equal(self.value, other.value)

    def __hash__(self) -> int:
        # Not the value: equal values may differ in Python (1 and 1.0), and values may be unhashable dicts.
        return hash((self.step, self.path, self.operator))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> Condition:
        """Read ``{"step": "check", "path": "status", "equals": "ok"}``; see :data:`CONDITION_KEYS`.

        Args:
            data: the dict shape: ``step``, optional ``path``, and one of :data:`OPERATORS`.
            where: what holds the condition, to start error messages with.

        Raises:
            InvalidWorkflow: the data is not a mapping, has unknown keys, no ``step``, or an invalid field.
        """
        if not isinstance(data, Mapping):
            raise InvalidWorkflow(f"{where} must be a mapping with a 'step' and an operator, not {type(data).__name__}")
        unknown = sorted(str(key) for key in data if key not in CONDITION_KEYS)
        if unknown:
            raise InvalidWorkflow(
                f"{where} has unknown key(s) {', '.join(map(repr, unknown))}: use only {', '.join(CONDITION_KEYS)}"
            )
        if "step" not in data:
            raise InvalidWorkflow(f"{where} has no 'step': name the parent step whose result it tests")
        path = data.get("path", "")
        given = [(key, data[key]) for key in OPERATORS if key in data]
        _check(data["step"], path, given, where)
        return cls(data["step"], path, **{_FIELDS[key]: value for key, value in given})

    def to_dict(self) -> dict[str, Any]:
        """The dict shape, leaving out an empty ``path``; JSON-serialisable."""
        out: dict[str, Any] = {"step": self.step}
        if self.path:
            out["path"] = self.path
        value = self.value
        out[self.operator] = list(value) if isinstance(value, tuple) else value
        return out

    def evaluate(self, result: bytes | None) -> tuple[bool, str]:
        """Whether the condition holds for the parent's result, and why, as a short text for people.

        Args:
            result: the parent task's result payload (its handler's return value, JSON-encoded), or ``None``
                when the parent has no result because it did not complete.

        Returns:
            ``(holds, reason)``. Never raises, whatever the bytes.
        """
        return self._on(_decode(result))

    def _on(self, decoded: tuple[str, Any]) -> tuple[bool, str]:
        state, document = decoded
        subject = f"result of {self.step!r}" + (f" at {self.path!r}" if self.path else "")
        if state == "none":
            absent = self.operator == "exists" and self.value is False
            return absent, f"{self.step!r} has no result (it did not complete)"
        if state == "bad":
            return False, f"result of {self.step!r} is not JSON ({document}), so no condition on it holds"
        found, value = _lookup(document, self.path)
        if not found:
            missing = f"{subject} does not exist: {value}"
            return self.operator == "exists" and self.value is False, missing
        if self.operator == "exists":
            return self.value is True, f"{subject} exists"
        shown = f"{subject} is {_show(value)}"
        if self.operator in ("equals", "not_equals"):
            equal = _json_equal(value, self.value)
            verdict = f"{shown}, {'equal' if equal else 'not equal'} to {_show(self.value)}"
            return equal == (self.operator == "equals"), verdict
        member = any(_json_equal(value, choice) for choice in self.value)
        verdict = f"{shown}, {'one' if member else 'not one'} of {_show(list(self.value))}"
        return member == (self.operator == "in"), verdict


def conditions_from(value: Any, where: str, *, parents: Iterable[str] | None = None) -> tuple[Condition, ...]:
    """The conditions given as ``when=``: ``None``, a :class:`Condition`, its dict shape, or a list of those.

    Args:
        value: the conditions; all of them must hold.
        where: what holds the conditions, to start error messages with.
        parents: when given, the steps the conditions may test (the step's ``after``).

    Returns:
        The conditions, in the order given.

    Raises:
        InvalidWorkflow: the value has the wrong shape, a dict is not a valid condition, or a condition tests a
            step that is not in ``parents``.
    """
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else [value]
    conditions = []
    for index, item in enumerate(items):
        if isinstance(item, Condition):
            conditions.append(item)
        elif isinstance(item, Mapping):
            label = f"{where}: condition #{index + 1}" if isinstance(value, list | tuple) else f"{where}: condition"
            conditions.append(Condition.from_dict(item, label))
        else:
            raise InvalidWorkflow(
                f"{where}: when= must be a Condition, a mapping such as {{'step': ..., 'equals': ...}}, or a list of "
                f"them, not {type(item).__name__}"
            )
    allowed = None if parents is None else set(parents)
    for condition in conditions:
        if allowed is not None and condition.step not in allowed:
            raise InvalidWorkflow(
                f"{where}: its condition tests step {condition.step!r}, which is not in after=: "
                "add it to after= or test a parent"
            )
    return tuple(conditions)


def evaluate_all(conditions: Iterable[Condition], results: Mapping[str, bytes | None]) -> tuple[bool, str]:
    """Whether all the conditions hold; each parent's result is decoded once.

    Args:
        conditions: the conditions of a step.
        results: the parents' result payloads by step name; a missing name or ``None`` means no result.

    Returns:
        ``(True, "")`` when all hold, else ``(False, reason)`` for the first that does not. Never raises.
    """
    decoded: dict[str, tuple[str, Any]] = {}
    for condition in conditions:
        if condition.step not in decoded:
            decoded[condition.step] = _decode(results.get(condition.step))
        holds, reason = condition._on(decoded[condition.step])
        if not holds:
            return False, reason
    return True, ""


def _given(condition: Condition) -> list[tuple[str, Any]]:
    pairs = [(key, getattr(condition, field)) for key, field in _FIELDS.items()]
    return [(key, value) for key, value in pairs if value is not _UNSET]


def _check(step: Any, path: Any, given: list[tuple[str, Any]], where: str) -> None:
    """Raise for the first invalid field; ``given`` holds the (operator key, value) pairs that were given."""
    try:
        validate_name(step, "condition step name", max_length=MAX_STEP_NAME_LENGTH)
    except ConfigurationError as exc:
        raise InvalidWorkflow(f"{where}: {exc}: name a parent step") from exc
    if not isinstance(path, str) or (path and "" in path.split(".")):
        raise InvalidWorkflow(
            f"{where}: path must be a string of dot-separated keys or list indexes such as 'rows.0.id', "
            f"or '' for the whole result, not {path!r}"
        )
    if len(given) != 1:
        names = ", ".join(repr(key) for key, _ in given) or "none"
        raise InvalidWorkflow(
            f"{where} needs exactly one operator of {', '.join(OPERATORS)}, but has {names}: keep one"
        )
    key, value = given[0]
    if key in ("in", "not_in") and not isinstance(value, list | tuple):
        raise InvalidWorkflow(f"{where}: {key!r} must be a list of JSON values, not {type(value).__name__}")
    if key == "exists" and not isinstance(value, bool):
        raise InvalidWorkflow(f"{where}: 'exists' must be true or false, not {value!r}")
    try:
        check_json(value, f"the value of {key!r}")
    except ConfigurationError as exc:
        raise InvalidWorkflow(f"{where}: {exc}") from exc


def _decode(result: bytes | None) -> tuple[str, Any]:
    """``("none", None)``, ``("bad", why)`` or ``("ok", document)``."""
    if result is None:
        return "none", None
    try:
        return "ok", orjson.loads(result)
    except (orjson.JSONDecodeError, TypeError) as exc:
        return "bad", str(exc).partition(":")[0] or type(exc).__name__


def _lookup(document: Any, path: str) -> tuple[bool, Any]:
    """``(True, value)`` at ``path``, or ``(False, why it is missing)``."""
    value = document
    segments = path.split(".") if path else []
    for depth, segment in enumerate(segments):
        walked = f"the value at {'.'.join(segments[:depth])!r}" if depth else "the result"
        if isinstance(value, dict):
            if segment not in value:
                return False, f"{walked} has no key {segment!r}"
            value = value[segment]
        elif isinstance(value, list):
            if not (segment.isascii() and segment.isdigit()):
                return False, f"{walked} is a list, and {segment!r} is not an index"
            if int(segment) >= len(value):
                return False, f"{walked} is a list of {len(value)} item(s), so index {segment} is out of range"
            value = value[int(segment)]
        else:
            return False, f"{walked} is {_kind(value)}, which has no {segment!r}"
    return True, value


def _json_equal(left: Any, right: Any) -> bool:
    """Equality of JSON values: numbers by value (``1 == 1.0``), but a bool is not a number (``true != 1``)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(map(_json_equal, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_json_equal(left[key], right[key]) for key in left)
    return type(left) is type(right) and left == right


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a string" if isinstance(value, str) else "a number"


def _show(value: Any) -> str:
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = orjson.dumps(value).decode()
        except TypeError:  # nested deeper than orjson writes
            text = f"a {type(value).__name__} nested too deep to show"
    return text if len(text) <= _SHOWN_CHARS else f"{text[: _SHOWN_CHARS - 3]}..."
