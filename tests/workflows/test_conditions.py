"""Step conditions (``when=``): evaluation on result bytes, the dict shape and its errors, and lists of conditions."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from asyncjobs_workflows import InvalidWorkflow
from asyncjobs_workflows.conditions import CONDITION_KEYS, OPERATORS, Condition, conditions_from, evaluate_all

ROWS = b'{"rows": [{"id": 7, "tags": ["a", "b"]}, {"id": 8}], "status": "ok", "count": 3, "done": true, "none": null}'
DEEP = b"[" * 300 + b"]" * 300  # JSON orjson reads but will not write back: too deep to show in a reason

# -- evaluate -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "result", "holds", "reason"),
    [
        # equals: strings, numbers, bools, null, objects, lists, the whole result
        (Condition("check", "status", equals="ok"), ROWS, True, "result of 'check' at 'status' is 'ok', equal to 'ok'"),
        (
            Condition("check", "status", equals="ok"),
            b'{"status": "failed"}',
            False,
            "result of 'check' at 'status' is 'failed', not equal to 'ok'",
        ),
        (Condition("check", "count", equals=3), ROWS, True, "is 3, equal to 3"),
        (Condition("check", "count", equals=3.0), ROWS, True, "is 3, equal to 3.0"),
        (Condition("check", "count", equals=4), ROWS, False, "is 3, not equal to 4"),
        (Condition("check", "count", equals="3"), ROWS, False, "is 3, not equal to '3'"),
        (Condition("check", "done", equals=True), ROWS, True, "is true, equal to true"),
        (Condition("check", "done", equals=1), ROWS, False, "is true, not equal to 1"),
        (Condition("check", "count", equals=True), b'{"count": 1}', False, "is 1, not equal to true"),
        (Condition("check", "count", equals=False), b'{"count": 0}', False, "is 0, not equal to false"),
        (Condition("check", "none", equals=None), ROWS, True, "is null, equal to null"),
        (Condition("check", "none", equals=0), ROWS, False, "is null, not equal to 0"),
        (Condition("check", "gone", equals=None), ROWS, False, "at 'gone' does not exist: the result has no key"),
        (Condition("check", "o", equals={"a": [1, 2], "b": None}), b'{"o": {"b": null, "a": [1, 2.0]}}', True, "equal"),
        (Condition("check", "o", equals={"a": [1]}), b'{"o": {"a": [1], "b": 2}}', False, "not equal"),
        (Condition("check", "o", equals={"a": [True]}), b'{"o": {"a": [1]}}', False, "not equal"),
        (Condition("check", "rows.0.tags", equals=["a", "b"]), ROWS, True, 'is ["a","b"], equal to ["a","b"]'),
        (Condition("check", "rows.0.tags", equals=["b", "a"]), ROWS, False, "not equal"),
        (Condition("check", equals="ok"), b'"ok"', True, "result of 'check' is 'ok', equal to 'ok'"),
        (Condition("check", equals=[]), DEEP, False, "is a list nested too deep to show, not equal to"),
        # paths: nested keys, list indexes, digit keys of objects, dead ends
        (Condition("check", "rows.1.id", equals=8), ROWS, True, "at 'rows.1.id' is 8"),
        (Condition("check", "a.b.c", equals=1), b'{"a": {"b": {"c": 1}}}', True, "at 'a.b.c' is 1, equal to 1"),
        (Condition("check", "m.0", equals="x"), b'{"m": {"0": "x"}}', True, "equal to 'x'"),
        (
            Condition("check", "rows.2.id", equals=9),
            ROWS,
            False,
            "at 'rows.2.id' does not exist: the value at 'rows' is a list of 2 item(s), so index 2 is out of range",
        ),
        (
            Condition("check", "rows.-1", equals=8),
            ROWS,
            False,
            "the value at 'rows' is a list, and '-1' is not an index",
        ),
        (Condition("check", "rows.first", equals=8), ROWS, False, "is a list, and 'first' is not an index"),
        (Condition("check", "rows.٣", equals=8), ROWS, False, "is a list, and '٣' is not an index"),
        (
            Condition("check", "status.code", equals=200),
            ROWS,
            False,
            "at 'status.code' does not exist: the value at 'status' is a string, which has no 'code'",
        ),
        (Condition("check", "count.x", equals=1), ROWS, False, "the value at 'count' is a number, which has no 'x'"),
        (Condition("check", "done.x", equals=1), ROWS, False, "the value at 'done' is a boolean, which has no 'x'"),
        (Condition("check", "none.x", equals=1), ROWS, False, "the value at 'none' is null, which has no 'x'"),
        (Condition("check", "rows.0.tags.1.z", equals=1), ROWS, False, "the value at 'rows.0.tags.1' is a string"),
        (Condition("check", "x", equals=1), b"[1]", False, "the result is a list, and 'x' is not an index"),
        # no result, or not JSON
        (Condition("check", "status", equals="ok"), None, False, "'check' has no result (it did not complete)"),
        (Condition("check", "status", equals="ok"), b"not json", False, "result of 'check' is not JSON ("),
        (Condition("check", equals=""), b"", False, "is not JSON"),
        (Condition("check", equals="ok"), b"\xff\xfe", False, "is not JSON"),
        (Condition("check", equals="ok"), b'{"a": NaN}', False, "is not JSON"),
        (Condition("check", equals="ok"), b"[" * 2000 + b"]" * 2000, False, "is not JSON"),
        # not_equals: the value must be there
        (Condition("check", "status", not_equals="failed"), ROWS, True, "is 'ok', not equal to 'failed'"),
        (Condition("check", "status", not_equals="ok"), ROWS, False, "is 'ok', equal to 'ok'"),
        (Condition("check", "done", not_equals=1), ROWS, True, "is true, not equal to 1"),
        (Condition("check", "gone", not_equals="ok"), ROWS, False, "does not exist"),
        (Condition("check", "status", not_equals="ok"), None, False, "has no result"),
        # in, not_in
        (Condition("check", "status", in_=["ok", "warn"]), ROWS, True, 'is \'ok\', one of ["ok","warn"]'),
        (Condition("check", "status", in_=["failed"]), ROWS, False, "is 'ok', not one of [\"failed\"]"),
        (Condition("check", "count", in_=[1.0, 3.0]), ROWS, True, "one of [1.0,3.0]"),
        (Condition("check", "done", in_=[1, 0]), ROWS, False, "is true, not one of [1,0]"),
        (Condition("check", "count", in_=[]), ROWS, False, "not one of []"),
        (Condition("check", "gone", in_=[None]), ROWS, False, "does not exist"),
        (Condition("check", "status", not_in=["failed", "error"]), ROWS, True, "not one of"),
        (Condition("check", "status", not_in=["ok"]), ROWS, False, "is 'ok', one of [\"ok\"]"),
        (Condition("check", "gone", not_in=["ok"]), ROWS, False, "does not exist"),
        (Condition("check", "status", not_in=["ok"]), b"{", False, "is not JSON"),
        # exists
        (Condition("check", "status", exists=True), ROWS, True, "result of 'check' at 'status' exists"),
        (Condition("check", "none", exists=True), ROWS, True, "at 'none' exists"),
        (Condition("check", "rows.1", exists=True), ROWS, True, "exists"),
        (Condition("check", "rows.5", exists=True), ROWS, False, "does not exist: the value at 'rows' is a list of 2"),
        (Condition("check", exists=True), b"null", True, "result of 'check' exists"),
        (Condition("check", "status", exists=True), None, False, "has no result"),
        (Condition("check", "status", exists=False), ROWS, False, "at 'status' exists"),
        (
            Condition("check", "gone", exists=False),
            ROWS,
            True,
            "at 'gone' does not exist: the result has no key 'gone'",
        ),
        (Condition("check", "status", exists=False), None, True, "'check' has no result (it did not complete)"),
        (Condition("check", "status", exists=False), b"<html>", False, "is not JSON"),
    ],
)
def test_evaluate(condition: Condition, result: bytes | None, holds: bool, reason: str) -> None:
    got_holds, got_reason = condition.evaluate(result)
    assert got_holds is holds
    assert reason in got_reason
    assert "\n" not in got_reason


def test_long_values_are_cut_in_reasons() -> None:
    holds, reason = Condition("c", "s", equals="x").evaluate(orjson.dumps({"s": "y" * 1000}))
    assert not holds
    assert len(reason) < 200
    assert "..." in reason


EVERY_KIND = [
    Condition("c", "a.0.b", equals={"k": [1, None]}),
    Condition("c", "a", not_equals=0),
    Condition("c", "a.1", in_=[1, "x", None]),
    Condition("c", not_in=[True]),
    Condition("c", "a.b", exists=True),
    Condition("c", "0.0", exists=False),
]


def test_evaluate_never_raises() -> None:
    rng = random.Random(1234)
    samples: list[bytes | None] = [None, b"", DEEP, b"[" * 2000 + b"]" * 2000, b'{"a": 1e400}', b"18446744073709551616"]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(12))) for _ in range(300)]
    alphabet = b'{}[]",:01a.tfnul '
    samples += [bytes(rng.choice(alphabet) for _ in range(rng.randrange(20))) for _ in range(2000)]
    for result in samples:
        for condition in EVERY_KIND:
            holds, reason = condition.evaluate(result)
            assert isinstance(holds, bool) and reason


# -- construction and the dict shape --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"step": "check", "path": "status", "equals": "ok"},
        {"step": "check", "equals": None},
        {"step": "check", "path": "rows.0.id", "not_equals": {"a": [1, 2.5, True]}},
        {"step": "check", "path": "status", "in": ["ok", 1, None]},
        {"step": "check", "not_in": []},
        {"step": "check", "path": "a", "exists": True},
        {"step": "check", "path": "a", "exists": False},
    ],
)
def test_dict_round_trip(data: dict[str, Any]) -> None:
    condition = Condition.from_dict(data, "here")
    assert condition.to_dict() == data
    assert Condition.from_dict(orjson.loads(orjson.dumps(condition.to_dict())), "here") == condition


def test_fields_and_properties() -> None:
    condition = Condition.from_dict({"step": "check", "path": "", "in": ["a", "b"]}, "here")
    assert condition == Condition("check", in_=("a", "b"))
    assert (condition.step, condition.path, condition.operator, condition.value) == ("check", "", "in", ("a", "b"))
    assert condition.in_ == ("a", "b")
    assert condition.to_dict() == {"step": "check", "in": ["a", "b"]}, "an empty path is left out"
    assert repr(condition) == "Condition('check', in_=('a', 'b'))"
    assert repr(Condition("c", "x.y", exists=False)) == "Condition('c', 'x.y', exists=False)"


def test_values_are_copied_as_json() -> None:
    value = {"a": (1, 2)}
    condition = Condition("c", equals=value)
    value["b"] = 3  # type: ignore[assignment]
    assert condition.value == {"a": [1, 2]}


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        (Condition("c", equals=1), Condition("c", equals=1.0), True),
        (Condition("c", equals=1), Condition("c", equals=True), False),
        (Condition("c", equals={"a": 1, "b": 2}), Condition("c", equals={"b": 2, "a": 1}), True),
        (Condition("c", in_=[1]), Condition("c", in_=(1,)), True),
        (Condition("c", in_=[1]), Condition("c", not_in=[1]), False),
        (Condition("c", "p", exists=True), Condition("c", "q", exists=True), False),
        (Condition("c", exists=True), Condition("d", exists=True), False),
        (Condition("c", equals=None), Condition("c", equals=0), False),
    ],
)
def test_equality_is_json_equality(left: Condition, right: Condition, equal: bool) -> None:
    assert (left == right) is equal
    if equal:
        assert hash(left) == hash(right)
    assert left != "not a condition"


W = "workflow 'w': step 'b': condition"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (["step", "a"], f"^{W} must be a mapping with a 'step' and an operator, not list$"),
        (
            {"step": "a", "equal": 1},
            f"^{W} has unknown key\\(s\\) 'equal': use only step, path, equals, not_equals, in,",
        ),
        ({"path": "x", "equals": 1}, f"^{W} has no 'step': name the parent step whose result it tests$"),
        ({"step": "a"}, f"^{W} needs exactly one operator of equals, not_equals, in, not_in, exists, but has none"),
        ({"step": "a", "path": "x"}, "but has none: keep one$"),
        ({"step": "a", "equals": 1, "in": [1]}, f"^{W} needs exactly one operator .* but has 'equals', 'in': keep one"),
        ({"step": "a", "exists": True, "not_equals": None}, "but has 'not_equals', 'exists'"),
        ({"step": "a", "in": "ok"}, f"^{W}: 'in' must be a list of JSON values, not str$"),
        ({"step": "a", "not_in": {"ok": 1}}, f"^{W}: 'not_in' must be a list of JSON values, not dict$"),
        ({"step": "a", "in": None}, "'in' must be a list of JSON values, not NoneType"),
        ({"step": "a", "exists": 1}, f"^{W}: 'exists' must be true or false, not 1$"),
        ({"step": "a", "exists": "yes"}, "'exists' must be true or false, not 'yes'"),
        ({"step": "a", "exists": None}, "'exists' must be true or false, not None"),
        ({"step": "a", "equals": object()}, f"^{W}: the value of 'equals' of type object cannot be JSON-encoded"),
        ({"step": "a", "equals": b"ok"}, "the value of 'equals' of type bytes cannot be JSON-encoded"),
        ({"step": "a", "in": [1, {2}]}, "the value of 'in' of type list cannot be JSON-encoded"),
        ({"step": "a", "equals": float("nan")}, "the value of 'equals' holds the float nan, which JSON cannot"),
        ({"step": "a", "not_equals": 2**70}, "integers must fit in 64 bits"),
        ({"step": "a", "equals": {1: "x"}}, "the value of 'equals' of type dict cannot be JSON-encoded"),
        (
            {"step": "a", "path": "a..b", "equals": 1},
            f"^{W}: path must be a string of dot-separated keys .*not 'a..b'$",
        ),
        ({"step": "a", "path": ".a", "equals": 1}, "path must be a string of dot-separated keys .* not '.a'"),
        ({"step": "a", "path": "a.", "equals": 1}, "not 'a.'"),
        ({"step": "a", "path": ".", "equals": 1}, "not '.'"),
        ({"step": "a", "path": 3, "equals": 1}, "path must be a string .* not 3"),
        (
            {"step": "a b", "equals": 1},
            f"^{W}: condition step name is invalid: 'a b' must match .*: name a parent step",
        ),
        ({"step": "", "equals": 1}, "condition step name is invalid"),
        ({"step": None, "equals": 1}, "condition step name must be a string"),
        ({"step": "x" * 129, "equals": 1}, "condition step name is 129 characters, over the limit of 128"),
    ],
)
def test_from_dict_errors(data: Any, message: str) -> None:
    with pytest.raises(InvalidWorkflow, match=message):
        Condition.from_dict(data, W)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Condition("a"), "^condition on step 'a' needs exactly one operator of .* but has none"),
        (lambda: Condition("a", equals=1, exists=True), "but has 'equals', 'exists': keep one"),
        (lambda: Condition("a", in_="ab"), "^condition on step 'a': 'in' must be a list of JSON values, not str"),
        (lambda: Condition("a", exists=0), "'exists' must be true or false, not 0"),
        (lambda: Condition("a", "x..y", equals=1), "path must be a string"),
        (lambda: Condition("a", equals=set()), "cannot be JSON-encoded"),
        (lambda: Condition("no way", equals=1), "condition step name is invalid"),
    ],
)
def test_constructor_errors(build: Any, message: str) -> None:
    with pytest.raises(InvalidWorkflow, match=message):
        build()


def test_keys() -> None:
    assert OPERATORS == ("equals", "not_equals", "in", "not_in", "exists")
    assert CONDITION_KEYS[:2] == ("step", "path")
    assert CONDITION_KEYS[2:] == OPERATORS


# -- lists of conditions --------------------------------------------------------------------------------------------

OK = Condition("check", "status", equals="ok")
SOME = Condition("load", "rows", exists=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ([], ()),
        (OK, (OK,)),
        ({"step": "check", "path": "status", "equals": "ok"}, (OK,)),
        ([OK, {"step": "load", "path": "rows", "exists": True}], (OK, SOME)),
        ((SOME, OK), (SOME, OK)),
    ],
)
def test_conditions_from(value: Any, expected: tuple[Condition, ...]) -> None:
    assert conditions_from(value, "here") == expected
    assert conditions_from(value, "here", parents=["load", "check"]) == expected


@pytest.mark.parametrize(
    ("value", "parents", "message"),
    [
        ("check", None, "^here: when= must be a Condition, a mapping such as .* or a list of them, not str$"),
        (5, None, "not int"),
        ([OK, 5], None, "not int"),
        ({"step": "check"}, None, "^here: condition needs exactly one operator"),
        ([OK, {"step": "check"}], None, "^here: condition #2 needs exactly one operator"),
        (
            OK,
            ["load"],
            "^here: its condition tests step 'check', which is not in after=: add it to after= or test a parent$",
        ),
        ([SOME, OK], ["load"], "tests step 'check', which is not in after="),
        (SOME, [], "tests step 'load', which is not in after="),
    ],
)
def test_conditions_from_errors(value: Any, parents: list[str] | None, message: str) -> None:
    with pytest.raises(InvalidWorkflow, match=message):
        conditions_from(value, "here", parents=parents)


@pytest.mark.parametrize(
    ("conditions", "results", "expected"),
    [
        ((), {}, (True, "")),
        ((OK,), {"check": b'{"status": "ok"}'}, (True, "")),
        ((OK, SOME), {"check": b'{"status": "ok"}', "load": b'{"rows": []}'}, (True, "")),
        (
            (OK, SOME),
            {"check": b'{"status": "ok"}', "load": b"{}"},
            (False, "result of 'load' at 'rows' does not exist: the result has no key 'rows'"),
        ),
        (
            (OK, SOME),
            {"check": b'{"status": "bad"}', "load": b"{}"},
            (False, "result of 'check' at 'status' is 'bad', not equal to 'ok'"),
        ),
        ((OK,), {}, (False, "'check' has no result (it did not complete)")),
        ((OK,), {"check": None}, (False, "'check' has no result (it did not complete)")),
        ((Condition("check", "status", exists=False),), {}, (True, "")),
        (
            (Condition("check", "n", in_=[1, 2]), Condition("check", "n", not_equals=2)),
            {"check": b'{"n": 2}'},
            (False, "result of 'check' at 'n' is 2, equal to 2"),
        ),
    ],
)
def test_evaluate_all(
    conditions: tuple[Condition, ...], results: dict[str, bytes | None], expected: tuple[bool, str]
) -> None:
    assert evaluate_all(conditions, results) == expected
