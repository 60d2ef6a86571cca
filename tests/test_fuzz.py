"""Property tests (hypothesis) for the sans-IO cores: only declared errors may escape.

The datagram parser has its own in tests/test_wire_logparse.py.  Budgets are
bounded (max_examples) so that the suite stays fast; raise them locally with
HYPOTHESIS_PROFILE=deep.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipcd.errors import RpcError
from ipcd.wire import jsonrpc
from ipcd.wire.jsonrpc import Invalid, LineFramer, LineTooLong, Request, parse_line

FUZZ = settings(
    max_examples=100_000 if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else 1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)

REQUESTISH = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2.0, None]),
        "id": st.none() | st.integers() | st.text(max_size=5) | st.booleans() | st.lists(st.integers(), max_size=2),
        "method": st.text(max_size=12) | st.integers(),
        "params": JSON,
    },
)


def check_parsed(parsed: Any) -> None:
    items = parsed if isinstance(parsed, list) else [parsed]
    for item in items:
        assert isinstance(item, (Request, Invalid))
        if isinstance(item, Invalid):
            assert isinstance(item.error, RpcError)
            assert item.error.code in (-32700, -32600)
        # Every answer must be encodable, whatever came in.
        reply = (
            jsonrpc.error(item.id, item.error) if isinstance(item, Invalid) else jsonrpc.result(item.id, item.params)
        )
        assert jsonrpc.encode(reply).endswith(b"\n")


@FUZZ
@given(st.binary(max_size=2000))
def test_parse_line_never_raises_on_bytes(data: bytes) -> None:
    parsed = parse_line(data)
    if parsed is not None:
        check_parsed(parsed)


@FUZZ
@given(REQUESTISH | st.lists(REQUESTISH, max_size=4) | JSON)
def test_parse_line_on_json_documents(doc: Any) -> None:
    parsed = parse_line(json.dumps(doc).encode())
    if parsed is not None:
        check_parsed(parsed)


@FUZZ
@given(st.text(max_size=300))
def test_plain_commands_never_raise(text: str) -> None:
    line = text.replace("\n", " ").encode("utf-8", "surrogatepass")
    parsed = parse_line(line)
    if parsed is not None:
        check_parsed(parsed)


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=30), st.integers(min_value=1, max_value=400))
def test_framer_only_raises_line_too_long(chunks: list[bytes], limit: int) -> None:
    framer = LineFramer(limit)
    got: list[bytes] = []
    for chunk in chunks:
        try:
            got += framer.feed(chunk)
        except LineTooLong as e:
            got += e.lines
            return
        assert framer.pending <= limit + 1
    joined = b"".join(chunks)
    complete = joined[: joined.rfind(b"\n") + 1].split(b"\n")[:-1] if b"\n" in joined else []
    assert got == [line[:-1] if line.endswith(b"\r") else line for line in complete]


@FUZZ
@given(JSON)
def test_encode_round_trip(value: Any) -> None:
    line = jsonrpc.encode(jsonrpc.result(1, value))
    assert line.count(b"\n") == 1
    assert jsonrpc.loads(line)["result"] == value
