"""Params as methods declare them: each kind's test, the 64-bit range, min/max and checks, at their edges."""

from __future__ import annotations

from typing import Any

import pytest

from ipcd.control.registry import Method, Param
from ipcd.errors import InvalidParams
from ipcd.wire.jsonrpc import Request


class Refused(str):
    """What a refusal's message says (the expected outcome, when it is not a value)."""


def _upper(v: str) -> str:
    if not v:
        raise ValueError("empty")
    return v.upper()


CASES: list[tuple[Param, Any, Any]] = [
    # (param, value, what validate returns, or Refused(what its message says))
    (Param("s", "string"), "x", "x"),
    (Param("s", "string"), 1, Refused("must be a string")),
    (Param("s", "string"), True, Refused("must be a string")),
    (Param("s", "string", check=_upper), "ab", "AB"),  # a string still goes through its check
    (Param("s", "string", check=_upper), "", Refused("invalid param 's': empty")),
    (Param("b", "boolean"), False, False),
    (Param("b", "boolean"), 0, Refused("must be true or false")),
    (Param("i", "integer"), 2**63 - 1, 2**63 - 1),
    (Param("i", "integer"), 2**63, Refused("out of the 64-bit range")),
    (Param("i", "integer"), -(2**63), -(2**63)),
    (Param("i", "integer"), -(2**63) - 1, Refused("out of the 64-bit range")),
    (Param("i", "integer"), True, Refused("must be an integer")),
    (Param("i", "integer"), 1.5, Refused("must be an integer")),
    (Param("i", "integer", min=0, max=10), 0, 0),
    (Param("i", "integer", min=0, max=10), -1, Refused("must be >= 0")),
    (Param("i", "integer", min=0, max=10), 10, 10),
    (Param("i", "integer", min=0, max=10), 11, Refused("must be <= 10")),
    (Param("n", "number", min=0.001), 0.001, 0.001),
    (Param("n", "number", min=0.001), 0.0009, Refused("must be >= 0.001")),
    (Param("u", "integer|string"), "a", "a"),
    (Param("u", "integer|string"), 3, 3),
    (Param("u", "integer|string"), [], Refused("must be an integer or a string")),
    (Param("l", "strings"), ["a", "b"], ["a", "b"]),
    (Param("l", "strings"), ["a", 1], Refused("must be a list of strings")),
    (Param("a", "any"), {"x": [1]}, {"x": [1]}),
    (Param("a", "any"), 2**64, Refused("out of the 64-bit range")),  # an "any" int still goes to SQLite
]


@pytest.mark.parametrize(("param", "value", "expected"), CASES)
def test_a_param_takes_its_kind_and_refuses_the_rest_naming_itself(param: Param, value: Any, expected: Any) -> None:
    if isinstance(expected, Refused):
        with pytest.raises(InvalidParams) as e:
            param.validate(value)
        assert expected in str(e.value) and e.value.data == {"param": param.name}
    else:
        assert param.validate(value) == expected


def test_bind_checks_names_required_and_defaults() -> None:
    m = Method(
        "m",
        lambda call, **kw: kw,
        (Param("key", "string", required=True), Param("n", "integer", default=5)),
        "read",
        "",
    )
    assert m.bind(Request("m", {"key": "k"}, 1)) == {"key": "k", "n": 5}
    assert m.bind(Request("m", ["k", 2], 1)) == {"key": "k", "n": 2}
    for params, message in (({"n": 1}, "missing param 'key'"), ({"key": "k", "x": 1}, "unknown param 'x'")):
        with pytest.raises(InvalidParams, match=message):
            m.bind(Request("m", params, 1))
    bare = Method("b", lambda call: None, (), "read", "")
    assert bare.bare and not m.bare and m.names == frozenset({"key", "n"})
