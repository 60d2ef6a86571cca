"""`ipcd.errors`: each RPC error's code, and the way back from a reply to the class.

The client raises the server's classes (STYLE.md "Errors"): a JSON-RPC error
object rebuilds the error that made it, whatever its constructor takes.
"""

from __future__ import annotations

from typing import Any

import pytest

from ipcd import client, errors
from ipcd.errors import (
    Conflict,
    InvalidParams,
    LimitReached,
    MethodNotFound,
    NotFound,
    PermissionDenied,
    ReloadFailed,
    RpcError,
)

# The codes as DESIGN.md "Control protocol" and README's table give them, written out.
CODES = {
    errors.ParseError: -32700,
    errors.InvalidRequest: -32600,
    MethodNotFound: -32601,
    InvalidParams: -32602,
    errors.InternalError: -32603,
    PermissionDenied: -32001,
    LimitReached: -32002,
    NotFound: -32003,
    Conflict: -32004,
    ReloadFailed: -32005,
}

RAISED = [
    errors.ParseError("parse error: x"),
    errors.InvalidRequest("not a request"),
    MethodNotFound("no method 'x'"),
    InvalidParams("invalid param 'key'", "key"),
    InvalidParams("bad params"),
    errors.InternalError("internal error in x"),
    PermissionDenied("kv.set needs the write role", "write"),
    LimitReached("value too big", "max_value_bytes", 64),
    LimitReached("too many connections", "max_connections"),
    NotFound("no key 'k'", {"key": "k"}),
    Conflict("key 'k' is at version 2", {"key": "k", "version": 2, "if_version": 1}),
    ReloadFailed("reload failed, old config kept: x", {"config": "/etc/ipcd/ipcd.toml"}),
]


def test_every_code_has_its_class() -> None:
    assert {cls: cls.code for cls in CODES} == CODES
    assert {code: cls for cls, code in CODES.items()} == errors.RPC_ERRORS


@pytest.mark.parametrize("err", RAISED, ids=lambda e: f"{type(e).__name__}")
def test_a_reply_rebuilds_the_error_that_made_it(err: RpcError) -> None:
    back = RpcError.from_json(err.to_json())
    assert type(back) is type(err)
    assert (back.code, back.message, back.data, str(back)) == (err.code, err.message, err.data, str(err))
    assert back.to_json() == err.to_json()
    for attr in ("param", "required_role", "limit"):
        assert getattr(back, attr, None) == getattr(err, attr, None)


def test_constructor_arguments_are_attributes() -> None:
    assert InvalidParams("x", "key").param == "key" and InvalidParams("x").param is None
    assert PermissionDenied("x", "admin").required_role == "admin"
    assert LimitReached("x", "max_batch", 100).limit == "max_batch"


def test_an_unknown_code_keeps_its_number() -> None:
    back = RpcError.from_json({"code": -32099, "message": "from a newer ipcd", "data": [1, 2]})
    assert type(back) is RpcError and back.code == -32099 and back.data == [1, 2]
    assert str(back) == "from a newer ipcd (-32099)"
    assert RpcError.code == -32603  # the instance's code, not the class's


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({}, (errors.InternalError, -32603, "error", None)),
        ({"code": "-32003", "message": "m"}, (errors.InternalError, -32603, "m", None)),
        ({"code": True, "message": "m"}, (errors.InternalError, -32603, "m", None)),
        ({"code": -32003, "message": 42}, (NotFound, -32003, "42", None)),
    ],
)
def test_a_malformed_error_object_is_still_an_error(obj: dict[str, Any], expected: tuple[Any, ...]) -> None:
    back = RpcError.from_json(obj)
    assert (type(back), back.code, back.message, back.data) == expected


@pytest.mark.parametrize(
    ("data", "attr"),
    [(None, "param"), ("text", "param"), ({"param": 3}, "param"), ([], "required_role"), ({"limit": None}, "limit")],
)
def test_odd_data_from_a_reply_reads_as_none(data: Any, attr: str) -> None:
    code = {"param": -32602, "required_role": -32001, "limit": -32002}[attr]
    back = RpcError.from_json({"code": code, "message": "m", "data": data})
    assert getattr(back, attr) is None and back.data == data


def test_the_client_names_are_the_servers() -> None:
    for name in ("Conflict", "InvalidParams", "LimitReached", "MethodNotFound", "NotFound", "PermissionDenied"):
        assert getattr(client, name) is getattr(errors, name)
    assert client.RemoteError is RpcError and client.ReloadFailed is ReloadFailed
    assert issubclass(client.Unreachable, errors.IpcdError) and issubclass(client.AccessDenied, errors.IpcdError)
