"""`ipcd.wire.jsonrpc`, sans-IO: bytes in, messages out; no sockets, no threads.

Codec cases are fed whole, byte by byte, in random-sized chunks and with
trailing bytes (STYLE.md "Tests").
"""

from __future__ import annotations

import json
import os
import random
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipcd.errors import InvalidParams, InvalidRequest, LimitReached, ParseError, RpcError
from ipcd.wire import jsonrpc
from ipcd.wire.jsonrpc import Invalid, LineFramer, LineTooLong, Request, encode, parse_line

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
LIMIT_REACHED = -32002

# -- LineFramer ---------------------------------------------------------------


def feed_whole(framer: LineFramer, data: bytes) -> list[bytes]:
    return framer.feed(data)


def feed_bytewise(framer: LineFramer, data: bytes) -> list[bytes]:
    lines: list[bytes] = []
    for i in range(len(data)):
        lines += framer.feed(data[i : i + 1])
    return lines


def feed_chunked(seed: int) -> Callable[[LineFramer, bytes], list[bytes]]:
    def feed(framer: LineFramer, data: bytes) -> list[bytes]:
        rng = random.Random(seed)
        lines: list[bytes] = []
        pos = 0
        while pos < len(data):
            n = rng.randint(1, 7)
            lines += framer.feed(data[pos : pos + n])
            pos += n
        return lines

    return feed


FEEDERS = {
    "whole": feed_whole,
    "bytewise": feed_bytewise,
    "chunks-1": feed_chunked(1),
    "chunks-2": feed_chunked(2),
    "chunks-3": feed_chunked(3),
}

# (stream, the lines it holds)
STREAMS = [
    (b"", []),
    (b"\n", [b""]),
    (b"\n\n\n", [b"", b"", b""]),
    (b"ping\n", [b"ping"]),
    (b"a\nbb\nccc\n", [b"a", b"bb", b"ccc"]),
    (b"a\r\nbb\r\n", [b"a", b"bb"]),  # socat crlf
    (b"\r\n", [b""]),
    (b"a\r\nb\nc\r\n", [b"a", b"b", b"c"]),  # CRLF and LF mixed
    (b"a\r\r\n", [b"a\r"]),  # only one trailing \r is dropped
    (b"a\rb\n", [b"a\rb"]),  # a \r inside a line stays
    (b"\ra\n", [b"\ra"]),
    (b"  kv.get k  \n", [b"  kv.get k  "]),  # the framer does not strip blanks
    (b"caf\xc3\xa9\n\xff\xfe\n", [b"caf\xc3\xa9", b"\xff\xfe"]),  # bytes, not text
    (
        b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n[{"jsonrpc":"2.0","method":"x"}]\n',
        [b'{"jsonrpc":"2.0","id":1,"method":"ping"}', b'[{"jsonrpc":"2.0","method":"x"}]'],
    ),
]


@pytest.mark.parametrize("how", FEEDERS)
@pytest.mark.parametrize(("stream", "expected"), STREAMS)
def test_framer_cuts_lines(stream: bytes, expected: list[bytes], how: str) -> None:
    framer = LineFramer(64)
    assert FEEDERS[how](framer, stream) == expected
    assert framer.pending == 0


@pytest.mark.parametrize("how", FEEDERS)
@pytest.mark.parametrize(
    ("stream", "expected", "tail"),
    [
        (b"abc", [], b"abc"),
        (b"a\nbc", [b"a"], b"bc"),
        (b"a\r\nb\r", [b"a"], b"b\r"),  # the \r waits for its \n
        (b"ping\n\n{", [b"ping", b""], b"{"),
        (b"one\ntwo\nthree", [b"one", b"two"], b"three"),
    ],
)
def test_framer_holds_an_unfinished_line(stream: bytes, expected: list[bytes], tail: bytes, how: str) -> None:
    framer = LineFramer(64)
    assert FEEDERS[how](framer, stream) == expected
    assert framer.pending == len(tail)
    # The held bytes are the start of the next line, not lost and not doubled.
    assert framer.feed(b"!\n") == [tail + b"!"]
    assert framer.pending == 0


def test_framer_crlf_split_across_feeds() -> None:
    framer = LineFramer(64)
    assert framer.feed(b"kv.get k\r") == []
    assert framer.pending == len(b"kv.get k\r")
    assert framer.feed(b"\nping") == [b"kv.get k"]
    assert framer.pending == 4
    assert framer.feed(b"\r\n") == [b"ping"]
    assert framer.pending == 0


def test_framer_an_empty_feed_changes_nothing() -> None:
    framer = LineFramer(64)
    assert framer.feed(b"ab") == []
    assert framer.feed(b"") == []
    assert framer.pending == 2
    assert framer.feed(b"\n") == [b"ab"]


@pytest.mark.parametrize("seed", range(12))
def test_framer_random_chunks(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = b'abc {}[]":,\\\r\t\xc3\xa9\x00'
    lines = [bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(200)]
    ends = [rng.choice([b"\n", b"\r\n"]) for _ in lines]
    stream = b"".join(line + end for line, end in zip(lines, ends, strict=True))
    tail = b"unfinished"
    stream += tail
    # Of a bare-\n line, a trailing \r is dropped; of a CRLF line, only the CR of the CRLF.
    expected = [
        line[:-1] if end == b"\n" and line.endswith(b"\r") else line for line, end in zip(lines, ends, strict=True)
    ]
    # A line of 40 bytes plus a dropped \r is 41: the limit is not hit.
    framer = LineFramer(41)
    got: list[bytes] = []
    pos = 0
    while pos < len(stream):
        n = rng.randint(1, 97)
        got += framer.feed(stream[pos : pos + n])
        pos += n
    assert got == expected
    assert framer.pending == len(tail)


# -- the line limit ---------------------------------------------------------

MAX = 16


@pytest.mark.parametrize("how", FEEDERS)
def test_line_of_exactly_the_limit_is_accepted(how: str) -> None:
    framer = LineFramer(MAX)
    line = b"x" * MAX
    assert FEEDERS[how](framer, line + b"\n") == [line]
    assert framer.pending == 0


@pytest.mark.parametrize("how", FEEDERS)
def test_line_one_byte_over_the_limit_raises(how: str) -> None:
    framer = LineFramer(MAX)
    with pytest.raises(LineTooLong):
        FEEDERS[how](framer, b"x" * (MAX + 1) + b"\n")


def test_crlf_line_whose_content_fits_is_accepted() -> None:
    # MAX - 1 bytes + \r: within the limit whether or not \r counts.
    framer = LineFramer(MAX)
    assert framer.feed(b"y" * (MAX - 1) + b"\r\n") == [b"y" * (MAX - 1)]


def test_unfinished_line_at_the_limit_is_held_then_one_more_byte_raises() -> None:
    framer = LineFramer(MAX)
    assert framer.feed(b"x" * MAX) == []
    assert framer.pending == MAX
    with pytest.raises(LineTooLong):
        framer.feed(b"x")


def test_limit_raises_even_when_the_newline_never_comes() -> None:
    framer = LineFramer(MAX)
    with pytest.raises(LineTooLong):
        framer.feed(b"x" * (MAX + 1))


def test_limit_raises_when_the_newline_never_comes_byte_by_byte() -> None:
    framer = LineFramer(MAX)
    for _ in range(MAX):
        assert framer.feed(b"z") == []
    assert framer.pending == MAX
    with pytest.raises(LineTooLong):
        framer.feed(b"z")


def test_limit_is_per_line_not_per_feed() -> None:
    framer = LineFramer(MAX)
    a, b, c = b"a" * MAX, b"b" * MAX, b"c" * MAX
    assert framer.feed(a + b"\n" + b + b"\n" + c) == [a, b]
    assert framer.pending == MAX  # the held line alone is measured
    assert framer.feed(b"\n") == [c]


def test_limit_checks_the_tail_after_complete_lines() -> None:
    framer = LineFramer(MAX)
    with pytest.raises(LineTooLong):
        framer.feed(b"ok\n" + b"x" * (MAX + 1))


def test_limit_counts_bytes_held_over_several_feeds() -> None:
    framer = LineFramer(MAX)
    assert framer.feed(b"x" * (MAX - 3)) == []
    assert framer.feed(b"xxx") == []
    with pytest.raises(LineTooLong):
        framer.feed(b"x\n")


def test_line_too_long_is_a_limit_reached_error() -> None:
    err = LineTooLong(1024)
    assert isinstance(err, LimitReached)
    assert err.code == LIMIT_REACHED
    assert err.limit == "max_request_bytes"
    assert err.to_json() == {
        "code": LIMIT_REACHED,
        "message": "request line longer than 1024 bytes",
        "data": {"limit": "max_request_bytes", "value": 1024},
    }


# -- parse_line: valid requests -----------------------------------------------

VALID = [
    (b'{"jsonrpc":"2.0","id":1,"method":"ping"}', Request("ping", None, 1)),
    (b'{"jsonrpc":"2.0","id":0,"method":"ping"}', Request("ping", None, 0)),
    (b'{"jsonrpc":"2.0","id":-7,"method":"ping"}', Request("ping", None, -7)),
    (b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', Request("ping", None, 1.5)),
    (b'{"jsonrpc":"2.0","id":"abc","method":"ping"}', Request("ping", None, "abc")),
    (b'{"jsonrpc":"2.0","id":"","method":"ping"}', Request("ping", None, "")),
    (
        b'{"jsonrpc":"2.0","id":2,"method":"kv.get","params":{"key":"k"}}',
        Request("kv.get", {"key": "k"}, 2),
    ),
    (
        b'{"jsonrpc":"2.0","id":3,"method":"kv.set","params":["k",42]}',
        Request("kv.set", ["k", 42], 3),
    ),
    (b'{"jsonrpc":"2.0","id":4,"method":"m","params":[]}', Request("m", [], 4)),
    (b'{"jsonrpc":"2.0","id":5,"method":"m","params":{}}', Request("m", {}, 5)),
    (b'{"method":"ping","id":6,"jsonrpc":"2.0"}', Request("ping", None, 6)),  # any member order
    # id null is a call with id None, not a notification
    (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', Request("ping", None, None, notification=False)),
    # no "id": a notification
    (b'{"jsonrpc":"2.0","method":"ping"}', Request("ping", None, None, notification=True)),
    (
        b'{"jsonrpc":"2.0","method":"publish","params":{"channel":"c","message":[1,2]}}',
        Request("publish", {"channel": "c", "message": [1, 2]}, None, notification=True),
    ),
    # blanks around the object, as socat or a human may send them
    (b'  \t{"jsonrpc":"2.0","id":7,"method":"ping"}  \r', Request("ping", None, 7)),
    (b'{ "jsonrpc" : "2.0" , "id" : 8 , "method" : "ping" }', Request("ping", None, 8)),
    # UTF-8 and escapes decode to text
    ('{"jsonrpc":"2.0","id":9,"method":"kv.set","params":["clé","☃"]}'.encode(), Request("kv.set", ["clé", "☃"], 9)),
    (b'{"jsonrpc":"2.0","id":10,"method":"m","params":["\\u00e9\\n"]}', Request("m", ["é\n"], 10)),
    # a lone surrogate escape is valid JSON text; it decodes to a str
    (b'{"jsonrpc":"2.0","id":11,"method":"m","params":["\\ud83d\\ude00"]}', Request("m", ["\U0001f600"], 11)),
    # large but finite numbers are fine
    (b'{"jsonrpc":"2.0","id":12,"method":"m","params":[1e308,-1e-400]}', Request("m", [1e308, -0.0], 12)),
]


@pytest.mark.parametrize(("line", "expected"), VALID)
def test_parse_valid_request(line: bytes, expected: Request) -> None:
    msg = parse_line(line)
    assert type(msg) is Request
    assert msg == expected
    assert msg.plain is False
    assert msg.raw_args == ()


def test_notification_flag_tracks_the_id_member_not_its_value() -> None:
    call = parse_line(b'{"jsonrpc":"2.0","id":null,"method":"ping"}')
    note = parse_line(b'{"jsonrpc":"2.0","method":"ping"}')
    assert isinstance(call, Request) and isinstance(note, Request)
    assert call.id is None and call.notification is False
    assert note.id is None and note.notification is True


# -- parse_line: invalid requests (-32600) -------------------------------------

INVALID = [
    # (line, the id the error reply carries)
    (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', 1),
    (b'{"jsonrpc":"2","id":2,"method":"ping"}', 2),
    (b'{"jsonrpc":2.0,"id":3,"method":"ping"}', 3),
    (b'{"jsonrpc":null,"id":4,"method":"ping"}', 4),
    (b'{"id":5,"method":"ping"}', 5),  # no "jsonrpc"
    (b'{"jsonrpc":"1.0","method":"ping"}', None),  # a bad notification
    (b'{"jsonrpc":"2.0","id":6}', 6),  # no "method"
    (b'{"jsonrpc":"2.0","id":7,"method":1}', 7),
    (b'{"jsonrpc":"2.0","id":8,"method":null}', 8),
    (b'{"jsonrpc":"2.0","id":9,"method":["ping"]}', 9),
    (b'{"jsonrpc":"2.0","id":10,"method":{"name":"ping"}}', 10),
    (b'{"jsonrpc":"2.0","id":"s","method":true}', "s"),
    (b'{"jsonrpc":"2.0","id":11,"method":"m","params":1}', 11),
    (b'{"jsonrpc":"2.0","id":12,"method":"m","params":"k"}', 12),
    (b'{"jsonrpc":"2.0","id":13,"method":"m","params":true}', 13),
    (b'{"jsonrpc":"2.0","id":14,"method":"m","params":null}', 14),
    (b'{"jsonrpc":"2.0","id":15,"method":"m","params":1.5}', 15),
    (b'{"jsonrpc":"2.0","method":"m","params":3}', None),
    # an id that is not a string, number or null is not echoed back
    (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', None),
    (b'{"jsonrpc":"2.0","id":false,"method":"ping"}', None),
    (b'{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}', None),
    (b'{"jsonrpc":"2.0","id":{},"method":"ping"}', None),
    (b'{"jsonrpc":"2.0","id":[1],"method":"ping"}', None),
    (b'{"jsonrpc":"1.0","id":true,"method":"ping"}', None),
    (b"{}", None),
    (b"[]", None),  # an empty batch
    (b"[ ]", None),
]


@pytest.mark.parametrize(("line", "req_id"), INVALID)
def test_parse_invalid_request(line: bytes, req_id: Any) -> None:
    msg = parse_line(line)
    assert type(msg) is Invalid
    assert type(msg.error) is InvalidRequest
    assert msg.error.code == INVALID_REQUEST
    assert msg.error.message.startswith("invalid request: ")
    assert msg.id == req_id
    assert jsonrpc.error(msg.id, msg.error) == {
        "jsonrpc": "2.0",
        "id": req_id,
        "error": {"code": INVALID_REQUEST, "message": msg.error.message},
    }


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', '"jsonrpc" must be "2.0"'),
        (b'{"jsonrpc":"2.0","id":1,"method":1}', '"method" must be a string'),
        (b'{"jsonrpc":"2.0","id":1,"method":"m","params":1}', '"params" must be an object or an array'),
        (b'{"jsonrpc":"2.0","id":true,"method":"m"}', "id must be"),
        (b"[]", "empty batch"),
    ],
)
def test_invalid_request_says_why(line: bytes, fragment: str) -> None:
    msg = parse_line(line)
    assert isinstance(msg, Invalid)
    assert fragment in msg.error.message


# -- parse_line: parse errors (-32700) ----------------------------------------

DEEP = 100_000
PARSE_ERRORS = [
    b"{",
    b"[",
    b"{]",
    b'{"jsonrpc":"2.0","id":1,"method":"ping"',
    b'{"jsonrpc":"2.0","id":1,"method":"ping",}',
    b'[{"jsonrpc":"2.0","id":1,"method":"ping"},]',
    b"{'jsonrpc':'2.0','id':1,'method':'ping'}",
    b'{"jsonrpc":"2.0","id":1,"method":"ping"} trailing',
    b'{"jsonrpc":"2.0","id":1,"method":"ping"}{"jsonrpc":"2.0","id":2,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":01,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"method":"pi\x01ng"}',  # raw control character
    # not UTF-8
    b'{"jsonrpc":"2.0","id":1,"method":"\xff"}',
    b'{"jsonrpc":"2.0","id":1,"method":"caf\xe9"}',  # Latin-1
    b'{"jsonrpc":"2.0","id":1,"method":"\xc0\xaf"}',  # overlong
    b'{"jsonrpc":"2.0","id":1,"method":"\xed\xa0\x80"}',  # an encoded surrogate
    b'{"jsonrpc":"2.0","id":1,"method":"\xe2\x98"}',  # truncated sequence
    b'{"jsonrpc":"2.0","id":1,"method":"ping"}\xff',  # a stray byte after the object
    # NaN and Infinity are not JSON
    b'{"jsonrpc":"2.0","id":1,"method":"m","params":[NaN]}',
    b'{"jsonrpc":"2.0","id":1,"method":"m","params":[Infinity]}',
    b'{"jsonrpc":"2.0","id":1,"method":"m","params":[-Infinity]}',
    b'{"jsonrpc":"2.0","id":NaN,"method":"m"}',
    # numbers that overflow a float
    b'{"jsonrpc":"2.0","id":1,"method":"m","params":[1e400]}',
    b'{"jsonrpc":"2.0","id":1,"method":"m","params":[-1e400]}',
    b'{"jsonrpc":"2.0","id":1e999,"method":"m"}',
    b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"x":' + b"9" * 400 + b".5}}",
    # nesting beyond any recursion limit
    b"[" * DEEP + b"]" * DEEP,
    b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    b'{"jsonrpc":"2.0","id":1,"method":"m","params":' + b"[" * DEEP + b"]" * DEEP + b"}",
    b"[" * DEEP,
]


def _short_repr(line: bytes) -> str:
    return repr(line if len(line) <= 60 else line[:40] + b"..." + line[-10:])


@pytest.mark.parametrize("line", PARSE_ERRORS, ids=_short_repr)
def test_parse_error(line: bytes) -> None:
    msg = parse_line(line)
    assert type(msg) is Invalid
    assert type(msg.error) is ParseError
    assert msg.error.code == PARSE_ERROR
    assert msg.error.message.startswith("parse error")
    assert msg.id is None  # the id cannot be trusted when the JSON is broken
    assert jsonrpc.error(msg.id, msg.error)["error"]["code"] == PARSE_ERROR


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"\xff"}', "not UTF-8"),
        (b"[" * DEEP + b"]" * DEEP, "nesting too deep"),
        (b'{"jsonrpc":"2.0","id":1,"method":"m","params":[NaN]}', "NaN is not JSON"),
        (b'{"jsonrpc":"2.0","id":1,"method":"m","params":[Infinity]}', "Infinity is not JSON"),
        (b'{"jsonrpc":"2.0","id":1,"method":"m","params":[1e400]}', "out of range"),
    ],
)
def test_parse_error_says_why(line: bytes, fragment: str) -> None:
    msg = parse_line(line)
    assert isinstance(msg, Invalid)
    assert fragment in msg.error.message


@pytest.fixture
def int_digit_limit() -> int:
    limit = sys.get_int_max_str_digits()
    if limit == 0:
        pytest.skip("the int-string conversion limit is off in this interpreter")
    return limit


@pytest.mark.parametrize(
    "template",
    [
        b'{"jsonrpc":"2.0","id":1,"method":"m","params":[%s]}',
        b'{"jsonrpc":"2.0","id":%s,"method":"m"}',
        b"[%s]",
    ],
)
def test_integer_beyond_the_int_string_limit_is_a_parse_error(template: bytes, int_digit_limit: int) -> None:
    digits = b"7" * (int_digit_limit + 1)
    msg = parse_line(template % digits)
    assert type(msg) is Invalid
    assert type(msg.error) is ParseError
    assert msg.error.code == PARSE_ERROR
    assert msg.id is None
    assert len(msg.error.message) < 300  # the message is cut short, not echoed


def test_integer_at_the_int_string_limit_is_accepted(int_digit_limit: int) -> None:
    digits = "7" * int_digit_limit
    msg = parse_line(b'{"jsonrpc":"2.0","id":1,"method":"m","params":[%s]}' % digits.encode())
    assert msg == Request("m", [int(digits)], 1)


# -- parse_line: batches -------------------------------------------------------


def test_batch_of_mixed_items() -> None:
    line = (
        b"["
        b'{"jsonrpc":"2.0","id":1,"method":"ping"},'
        b'{"jsonrpc":"2.0","method":"publish","params":{"channel":"c"}},'
        b"1,"
        b'{"jsonrpc":"1.0","id":2,"method":"ping"},'
        b'{"jsonrpc":"2.0","id":true,"method":"ping"},'
        b'{"jsonrpc":"2.0","id":"x","method":"kv.set","params":["k",1]},'
        b'"ping",'
        b"[],"
        b'{"jsonrpc":"2.0","id":3,"method":"m","params":7}'
        b"]"
    )
    batch = parse_line(line)
    assert isinstance(batch, list)
    assert len(batch) == 9
    assert batch[0] == Request("ping", None, 1)
    assert batch[1] == Request("publish", {"channel": "c"}, None, notification=True)
    assert batch[5] == Request("kv.set", ["k", 1], "x")
    invalid = {i: m for i, m in enumerate(batch) if isinstance(m, Invalid)}
    assert sorted(invalid) == [2, 3, 4, 6, 7, 8]
    assert {i: (type(m.error), m.error.code, m.id) for i, m in invalid.items()} == {
        2: (InvalidRequest, INVALID_REQUEST, None),
        3: (InvalidRequest, INVALID_REQUEST, 2),
        4: (InvalidRequest, INVALID_REQUEST, None),
        6: (InvalidRequest, INVALID_REQUEST, None),  # a string is not a plain command here
        7: (InvalidRequest, INVALID_REQUEST, None),  # a nested array is not a batch
        8: (InvalidRequest, INVALID_REQUEST, 3),
    }


@pytest.mark.parametrize(
    ("line", "count"),
    [(b"[1]", 1), (b"[1,2,3]", 3), (b"[null]", 1), (b'["a",true,{}]', 3), (b"[[]]", 1), (b"[[1,2]]", 1)],
)
def test_batch_of_non_requests_gives_one_invalid_each(line: bytes, count: int) -> None:
    batch = parse_line(line)
    assert isinstance(batch, list)
    assert len(batch) == count
    for item in batch:
        assert type(item) is Invalid
        assert item.error.code == INVALID_REQUEST
        assert item.id is None


def test_batch_of_notifications_only() -> None:
    batch = parse_line(b'[{"jsonrpc":"2.0","method":"a"},{"jsonrpc":"2.0","method":"b","params":[1]}]')
    assert batch == [
        Request("a", None, None, notification=True),
        Request("b", [1], None, notification=True),
    ]


def test_batch_of_one() -> None:
    assert parse_line(b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]') == [Request("ping", None, 1)]


def test_empty_batch_is_one_invalid_not_a_list() -> None:
    msg = parse_line(b"[]")
    assert type(msg) is Invalid
    assert type(msg.error) is InvalidRequest
    assert msg.error.code == INVALID_REQUEST
    assert msg.id is None


def test_broken_batch_is_one_parse_error() -> None:
    msg = parse_line(b'[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method"]')
    assert type(msg) is Invalid
    assert msg.error.code == PARSE_ERROR
    assert msg.id is None


# -- parse_line: plain-text commands -------------------------------------------


def plain(method: str, *raw: str, params: list[Any]) -> Request:
    return Request(method, params, None, notification=False, plain=True, raw_args=raw)


PLAIN = [
    (b"ping", plain("ping", params=[])),
    (b"status", plain("status", params=[])),
    (b"kv.get greeting", plain("kv.get", "greeting", params=["greeting"])),
    (b"kv.set k 42", plain("kv.set", "k", "42", params=["k", 42])),
    (b"kv.set k -1.5", plain("kv.set", "k", "-1.5", params=["k", -1.5])),
    (b"kv.set k 007", plain("kv.set", "k", "007", params=["k", "007"])),  # not JSON: kept as typed
    (b"kv.set name alice", plain("kv.set", "name", "alice", params=["name", "alice"])),
    (b"kv.set k true", plain("kv.set", "k", "true", params=["k", True])),
    (b"kv.set k null", plain("kv.set", "k", "null", params=["k", None])),
    (b"kv.set k 'hello world'", plain("kv.set", "k", "hello world", params=["k", "hello world"])),
    (b'kv.set k "hello world"', plain("kv.set", "k", "hello world", params=["k", "hello world"])),
    (b"kv.set k hello\\ world", plain("kv.set", "k", "hello world", params=["k", "hello world"])),
    (b"kv.set k '\"42\"'", plain("kv.set", "k", '"42"', params=["k", "42"])),  # a JSON string
    (
        b"kv.set k '{\"a\": [1, 2]}'",
        plain("kv.set", "k", '{"a": [1, 2]}', params=["k", {"a": [1, 2]}]),
    ),
    (b"kv.set k [1,2]", plain("kv.set", "k", "[1,2]", params=["k", [1, 2]])),
    (b"kv.set k ''", plain("kv.set", "k", "", params=["k", ""])),
    (b"kv.set k {", plain("kv.set", "k", "{", params=["k", "{"])),
    # strict JSON for args too: these stay strings
    (b"kv.set k NaN", plain("kv.set", "k", "NaN", params=["k", "NaN"])),
    (b"kv.set k Infinity", plain("kv.set", "k", "Infinity", params=["k", "Infinity"])),
    (b"kv.set k -Infinity", plain("kv.set", "k", "-Infinity", params=["k", "-Infinity"])),
    (b"kv.set k 1e400", plain("kv.set", "k", "1e400", params=["k", "1e400"])),
    # blanks: tabs and runs of spaces separate, the line is stripped
    (b"  kv.get\t k  \r", plain("kv.get", "k", params=["k"])),
    ("kv.set clé café".encode(), plain("kv.set", "clé", "café", params=["clé", "café"])),
]


@pytest.mark.parametrize(("line", "expected"), PLAIN)
def test_parse_plain_command(line: bytes, expected: Request) -> None:
    msg = parse_line(line)
    assert type(msg) is Request
    assert msg == expected
    # a plain command is always answered, with "id": null
    assert msg.id is None
    assert msg.notification is False
    assert msg.plain is True


def test_plain_kv_set_number() -> None:
    msg = parse_line(b"kv.set k 42")
    assert isinstance(msg, Request)
    assert msg.method == "kv.set"
    assert msg.params == ["k", 42]
    assert type(msg.params[1]) is int
    assert msg.raw_args == ("k", "42")


def test_plain_arg_at_the_limits_is_json() -> None:
    msg = parse_line(b"kv.set k " + b"[" * 64 + b"]" * 64 + b" '\"\\ud83d\\ude00\"'")  # 64 deep, a surrogate pair
    assert isinstance(msg, Request) and msg.params[2] == "\U0001f600"
    assert depth(msg.params[1]) == 64


def test_plain_arg_nested_too_deep_stays_a_string() -> None:
    word = "[" * DEEP
    msg = parse_line(b"kv.set k " + word.encode())
    assert isinstance(msg, Request)
    assert msg.params == ["k", word]
    assert msg.raw_args == ("k", word)


def depth(value: Any) -> int:
    """The reference: how deep arrays and objects nest in a decoded value."""
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def chain(n: int, leaf: Any = None) -> Any:
    for i in range(n):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


@pytest.mark.parametrize("n", [0, 1, 2, 63, 64, 65, 200])
def test_too_deep_at_its_edge_read_from_the_text(n: int) -> None:
    # Brackets inside strings and escaped quotes around a chain n deep: only the chain counts.
    text = json.dumps([chain(n - 1, '"[{\\"]]]}'), *range(100), '[[[[ "{{']) if n else '"[[[["'
    assert depth(json.loads(text)) == n
    assert jsonrpc.too_deep(text) is (n > jsonrpc.MAX_DEPTH)
    assert jsonrpc.too_deep(text.encode(), n) is False and (n == 0 or jsonrpc.too_deep(text, n - 1))


def test_too_deep_on_wide_values() -> None:
    assert jsonrpc.too_deep(json.dumps([{}] * 100_000), 1) and not jsonrpc.too_deep(json.dumps([{}] * 100_000), 2)
    assert not jsonrpc.too_deep(json.dumps([[chain(62)] * 3] * 3))
    assert jsonrpc.too_deep(json.dumps([[chain(62)] * 3, [chain(63)]]))


def test_a_request_64_deep_is_parsed_and_65_is_a_parse_error() -> None:
    line = b'{"jsonrpc":"2.0","id":1,"method":"m","params":%s}' % json.dumps(chain(63)).encode()
    assert isinstance(parse_line(line), Request)
    line = b'{"jsonrpc":"2.0","id":1,"method":"m","params":%s}' % json.dumps(chain(64)).encode()
    parsed = parse_line(line)
    assert isinstance(parsed, Invalid) and "nested more than 64 deep" in parsed.error.message


def test_plain_arg_beyond_the_int_string_limit_stays_a_string(int_digit_limit: int) -> None:
    word = "9" * (int_digit_limit + 1)
    msg = parse_line(b"kv.set k " + word.encode())
    assert isinstance(msg, Request)
    assert msg.params == ["k", word]


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (b'kv.set k "abc', "No closing quotation"),
        (b"kv.set k 'abc", "No closing quotation"),
        (b"'ping", "No closing quotation"),
        (b"kv.set k abc\\", "No escaped character"),
        (b"kv.get \xff", "not UTF-8"),
        (b"caf\xe9", "not UTF-8"),
        # A plain argument that is JSON is held to a JSON line's limits.
        (b"publish ch " + b"[" * 65 + b"]" * 65, "argument nested more than 64 deep"),
        (b"kv.set k '\"\\ud800\"'", "argument has a lone surrogate"),
        (b'kv.set k \'["ok", {"x": "\\udfff"}]\'', "argument has a lone surrogate"),
    ],
)
def test_plain_command_parse_error(line: bytes, fragment: str) -> None:
    msg = parse_line(line)
    assert type(msg) is Invalid
    assert type(msg.error) is ParseError
    assert msg.error.code == PARSE_ERROR
    assert msg.error.message.startswith("parse error: ")
    assert fragment in msg.error.message
    assert msg.id is None


@pytest.mark.parametrize("line", [b"", b" ", b"\t", b"\r", b"\n", b"  \t \r", b"\x0b\x0c"])
def test_blank_line_is_none(line: bytes) -> None:
    assert parse_line(line) is None


# -- encode ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (
            {"jsonrpc": "2.0", "id": 1, "result": {"pong": True, "time": 1.5}},
            b'{"jsonrpc":"2.0","id":1,"result":{"pong":true,"time":1.5}}\n',
        ),
        ({"a": [1, 2, {"b": None}], "c": "d"}, b'{"a":[1,2,{"b":null}],"c":"d"}\n'),
        ([{"jsonrpc": "2.0", "id": 1, "result": 0}], b'[{"jsonrpc":"2.0","id":1,"result":0}]\n'),
        ({"s": "line1\nline2\r\n"}, b'{"s":"line1\\nline2\\r\\n"}\n'),
        ({"s": 'q"b\\'}, b'{"s":"q\\"b\\\\"}\n'),
        ({"s": "\x00\x1f"}, b'{"s":"\\u0000\\u001f"}\n'),
        ({"s": "café ☃ 😀"}, '{"s":"café ☃ 😀"}\n'.encode()),  # UTF-8, not \u escapes
        ({"clé": "é"}, b'{"cl\xc3\xa9":"\xc3\xa9"}\n'),
        ({"s": "\u2028\u2029\x85"}, '{"s":"\u2028\u2029\x85"}\n'.encode()),
        ({}, b"{}\n"),
        ([], b"[]\n"),
        (None, b"null\n"),
    ],
)
def test_encode_exact_bytes(message: Any, wire: bytes) -> None:
    out = encode(message)
    assert out == wire
    assert out.count(b"\n") == 1
    assert out.endswith(b"\n")


@pytest.mark.parametrize(
    "message",
    [
        {"s": "\ud800"},
        {"s": "\udfff tail"},
        {"\udc80": "key"},
        {"s": "\ud800", "t": "café", "u": "😀"},
        ["\ud83d", {"nested": ["\ude00"]}],
    ],
)
def test_encode_lone_surrogate_is_still_valid_utf8_json(message: Any) -> None:
    out = encode(message)
    assert out.endswith(b"\n")
    assert out.count(b"\n") == 1
    text = out.decode("utf-8")  # strict: raises if not UTF-8
    assert json.loads(text) == message
    assert b"\xed" not in out  # no CESU/WTF-8 encoded surrogate slipped out
    assert b", " not in out and b": " not in out  # still compact


def test_encoded_lines_frame_and_parse_back() -> None:
    msgs = [
        jsonrpc.request("kv.set", ["k", "a\nb"], 1),
        jsonrpc.request("publish", {"channel": "c", "message": "café\u2028"}),
        jsonrpc.request("ping", req_id="x"),
    ]
    framer = LineFramer(1024)
    lines = framer.feed(b"".join(encode(m) for m in msgs))
    assert framer.pending == 0
    assert [parse_line(line) for line in lines] == [
        Request("kv.set", ["k", "a\nb"], 1),
        Request("publish", {"channel": "c", "message": "café\u2028"}, None, notification=True),
        Request("ping", None, "x"),
    ]


def test_encode_refuses_nan() -> None:
    with pytest.raises(ValueError):
        encode(jsonrpc.result(1, float("nan")))
    with pytest.raises(ValueError):
        encode(jsonrpc.result(1, float("inf")))


# -- reply and request helpers ---------------------------------------------------


def test_result() -> None:
    assert jsonrpc.result(7, {"pong": True}) == {"jsonrpc": "2.0", "id": 7, "result": {"pong": True}}
    assert jsonrpc.result("a", [1]) == {"jsonrpc": "2.0", "id": "a", "result": [1]}
    # id null and result null are both present, as JSON-RPC requires
    assert jsonrpc.result(None, None) == {"jsonrpc": "2.0", "id": None, "result": None}
    assert encode(jsonrpc.result(None, None)) == b'{"jsonrpc":"2.0","id":null,"result":null}\n'


def test_error() -> None:
    assert jsonrpc.error(3, InvalidParams("bad key", "key")) == {
        "jsonrpc": "2.0",
        "id": 3,
        "error": {"code": -32602, "message": "bad key", "data": {"param": "key"}},
    }
    # no data: no "data" member
    assert jsonrpc.error(None, ParseError("parse error: x")) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": PARSE_ERROR, "message": "parse error: x"},
    }
    assert jsonrpc.error(9, LineTooLong(64)) == {
        "jsonrpc": "2.0",
        "id": 9,
        "error": {
            "code": LIMIT_REACHED,
            "message": "request line longer than 64 bytes",
            "data": {"limit": "max_request_bytes", "value": 64},
        },
    }
    assert encode(jsonrpc.error(None, InvalidRequest("invalid request: empty batch"))) == (
        b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: empty batch"}}\n'
    )


def test_notification() -> None:
    note = jsonrpc.notification("logs.entry", {"id": 1, "message": "hi"})
    assert note == {"jsonrpc": "2.0", "method": "logs.entry", "params": {"id": 1, "message": "hi"}}
    assert "id" not in note
    assert encode(jsonrpc.notification("message", {"channel": "c", "message": None})) == (
        b'{"jsonrpc":"2.0","method":"message","params":{"channel":"c","message":null}}\n'
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        (("ping",), {}, {"jsonrpc": "2.0", "method": "ping"}),
        (("kv.get", {"key": "k"}, 5), {}, {"jsonrpc": "2.0", "method": "kv.get", "params": {"key": "k"}, "id": 5}),
        (("kv.set", ["k", 1]), {}, {"jsonrpc": "2.0", "method": "kv.set", "params": ["k", 1]}),
        (("ping",), {"req_id": "abc"}, {"jsonrpc": "2.0", "method": "ping", "id": "abc"}),
        # falsy ids and params are kept: only None leaves them out
        (("ping",), {"req_id": 0}, {"jsonrpc": "2.0", "method": "ping", "id": 0}),
        (("m", []), {"req_id": ""}, {"jsonrpc": "2.0", "method": "m", "params": [], "id": ""}),
        (("m", {}), {}, {"jsonrpc": "2.0", "method": "m", "params": {}}),
    ],
)
def test_request(args: tuple[Any, ...], kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    assert jsonrpc.request(*args, **kwargs) == expected


def test_request_without_id_is_a_notification_on_the_wire() -> None:
    msg = jsonrpc.request("publish", {"channel": "c"})
    assert "id" not in msg
    parsed = parse_line(encode(msg).rstrip(b"\n"))
    assert parsed == Request("publish", {"channel": "c"}, None, notification=True)


def test_request_with_id_round_trips() -> None:
    parsed = parse_line(encode(jsonrpc.request("kv.get", {"key": "k"}, 41)).rstrip(b"\n"))
    assert parsed == Request("kv.get", {"key": "k"}, 41, notification=False)


def test_crlf_line_of_exactly_the_limit_is_accepted() -> None:
    framer = LineFramer(8)
    assert framer.feed(b"12345678\r\n") == [b"12345678"]
    framer = LineFramer(8)
    assert framer.feed(b"12345678\r") == []  # the "\r" may be the start of a CRLF
    assert framer.feed(b"\n") == [b"12345678"]
    with pytest.raises(LineTooLong):
        LineFramer(8).feed(b"123456789\r\n")


def test_lines_before_a_long_one_ride_on_the_error() -> None:
    framer = LineFramer(8)
    with pytest.raises(LineTooLong) as info:
        framer.feed(b"ping\nstatus\n" + b"x" * 9)
    assert info.value.lines == [b"ping", b"status"]
    with pytest.raises(LineTooLong) as info:
        LineFramer(8).feed(b"ping\n" + b"y" * 9 + b"\nafter\n")
    assert info.value.lines == [b"ping"]


@pytest.mark.parametrize(
    "line",
    [
        b'{"jsonrpc":"2.0","id":1,"method":"m","params":["\\ud800"]}',
        b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"\\udfff":1}}',
        b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":[{"b":"x\\uDC00y"}]}}',
        b'[{"jsonrpc":"2.0","id":1,"method":"\\ud800"}]',
    ],
)
def test_lone_surrogates_are_parse_errors(line: bytes) -> None:
    parsed = parse_line(line)
    assert isinstance(parsed, Invalid)
    assert parsed.error.code == -32700 and "surrogate" in parsed.error.message


# -- property tests (hypothesis): only declared errors may escape ---------------------------------


# Budgets are bounded (max_examples) so that the suite stays fast; raise them
# locally with HYPOTHESIS_PROFILE=deep.  The datagram parser has its own in
# tests/test_wire_logparse.py.


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
@given(JSON)
def test_too_deep_agrees_with_the_depth_of_the_value(doc: Any) -> None:
    text = json.dumps(doc, ensure_ascii=False)
    for limit in (0, 1, 2, 3):
        assert jsonrpc.too_deep(text, limit) is (depth(doc) > limit)


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


@FUZZ
@given(st.none() | st.integers() | st.text(max_size=8) | st.floats(allow_nan=False, allow_infinity=False), JSON)
def test_result_line_is_the_whole_reply_encoded(req_id: Any, value: Any) -> None:
    """The envelope is written as text, the id and the result encoded: the same text as the whole reply's."""
    assert jsonrpc.result_line(req_id, value) == jsonrpc.dumps({"jsonrpc": "2.0", "id": req_id, "result": value})
    raw = jsonrpc.Raw(jsonrpc.dumps(value))
    assert jsonrpc.result_line(req_id, raw) == jsonrpc.dumps({"jsonrpc": "2.0", "id": req_id, "result": value})


def test_a_plain_command_takes_at_most_max_plain_args_arguments() -> None:
    msg = parse_line(b"subscribe" + b" c" * jsonrpc.MAX_PLAIN_ARGS)
    assert isinstance(msg, Request) and len(msg.params) == jsonrpc.MAX_PLAIN_ARGS
    over = parse_line(b"subscribe" + b" c" * (jsonrpc.MAX_PLAIN_ARGS + 1))
    assert isinstance(over, Invalid) and over.error.code == PARSE_ERROR
    assert f"at most {jsonrpc.MAX_PLAIN_ARGS} arguments" in over.error.message


def test_too_deep_costs_no_memory_per_escape() -> None:
    data = b"[" + b"[]," * 70 + b'"' + b"\\n" * (1 << 19) + b'"]'  # brackets enough to be read: 2 deep
    tracemalloc.start()
    try:
        assert jsonrpc.too_deep(data) is False
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
