"""`ipcd.logparse`: datagrams captured from real clients, then the edge cases.

The table in `tests/data/datagrams.py` is a fixed snapshot made by
`tests/data/capture_datagrams.py` (logger, SysLogHandler, glibc syslog(3),
sendto/socat); regenerate it there, never by hand.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipcd.wire.logparse import LogEntry, parse_datagram, parse_general

DATAGRAMS: list[dict[str, Any]] = runpy.run_path(str(Path(__file__).parent / "data" / "datagrams.py"))["DATAGRAMS"]

# Captures the parser gets wrong, by client; the expectation in the table is
# what rsyslog/journald extract.  Remove an entry when the parser is fixed
# (strict xfail: an unexpected pass fails the suite).
KNOWN_BUGS: dict[str, str] = {}


def entry_fields(entry: LogEntry, keys: Any) -> dict[str, Any]:
    return {key: getattr(entry, key) for key in keys}


def table_params(rows: list[dict[str, Any]]) -> list[Any]:
    params = []
    for row in rows:
        bug = KNOWN_BUGS.get(row["client"])
        marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=bug)] if bug else []
        params.append(pytest.param(row, id=row["client"], marks=marks))
    return params


# --- the captured table --------------------------------------------------------


def test_table_is_sound() -> None:
    clients = [row["client"] for row in DATAGRAMS]
    assert len(clients) == len(set(clients)), "client names are test ids"
    formats = {row["expect"]["format"] for row in DATAGRAMS}
    assert formats == {"rfc5424", "rfc3164", "json", "plain"}
    for row in DATAGRAMS:
        assert isinstance(row["datagram"], bytes) and row["datagram"]
        assert set(row["expect"]) <= set(LogEntry._fields)


@pytest.mark.parametrize("row", table_params(DATAGRAMS))
def test_captured_datagram(row: dict[str, Any]) -> None:
    entry = parse_datagram(row["datagram"])
    assert isinstance(entry, LogEntry)
    assert entry_fields(entry, row["expect"]) == row["expect"]


@pytest.mark.parametrize("suffix", [b"\0", b"\n", b"\r\n", b"\n\0"], ids=["NUL", "LF", "CRLF", "LF-NUL"])
@pytest.mark.parametrize("row", table_params(DATAGRAMS))
def test_captured_datagram_with_trailing_bytes(row: dict[str, Any], suffix: bytes) -> None:
    # Senders differ only in a trailing NUL (SysLogHandler) or newline (socat, echo).
    entry = parse_datagram(row["datagram"] + suffix)
    assert entry_fields(entry, row["expect"]) == row["expect"]


# --- PRI -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"<999>x", b"<12", b"<abc>x", b"<013>x", b"<00>x", b"<192>x", b"<1000>x", b"<>x", b"<-1>x", b"< 13>x", b"<"],
)
def test_bad_pri_is_plain_and_malformed(data: bytes) -> None:
    entry = parse_datagram(data)
    assert entry.format == "plain"
    assert entry.malformed is True
    assert entry.message == data.decode()
    assert (entry.facility, entry.priority) == (1, 5)  # user.notice
    assert (entry.ident, entry.pid, entry.hostname, entry.timestamp) == (None, None, None, None)


def test_bad_pri_keeps_invalid_utf8_as_replacement() -> None:
    entry = parse_datagram(b"<999>caf\xe9")
    assert (entry.format, entry.malformed, entry.message) == ("plain", True, "<999>caf\ufffd")


@pytest.mark.parametrize(
    ("data", "fac", "prio"),
    [(b"<0>x", 0, 0), (b"<7>x", 0, 7), (b"<8>x", 1, 0), (b"<13>x", 1, 5), (b"<191>x", 23, 7), (b"<165>x", 20, 5)],
)
def test_pri_bounds(data: bytes, fac: int, prio: int) -> None:
    entry = parse_datagram(data)
    assert (entry.facility, entry.priority, entry.malformed, entry.message) == (fac, prio, False, "x")


def test_pri_only() -> None:
    entry = parse_datagram(b"<13>")
    assert (entry.format, entry.priority, entry.facility, entry.message) == ("rfc3164", 5, 1, "")
    assert entry.malformed is False


# --- UTF-8 and trailing bytes --------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        (b"caf\xe9 \xff\xfe", "plain", "caf\ufffd \ufffd\ufffd"),
        (b"<13>Nov 27 10:00:00 app: caf\xe9", "rfc3164", "caf\ufffd"),
        (b"<13>app[1]: \xc3(", "rfc3164", "\ufffd("),
        (b"<13>1 - - app - - - caf\xe9", "rfc5424", "caf\ufffd"),
        (b'{"message": "caf\xe9"}', "plain", '{"message": "caf\ufffd"}'),  # not valid JSON text: kept as plain
    ],
)
def test_invalid_utf8_is_kept_with_replacement(data: bytes, fmt: str, message: str) -> None:
    entry = parse_datagram(data)
    assert (entry.format, entry.message, entry.malformed) == (fmt, message, False)


@pytest.mark.parametrize("suffix", [b"\0", b"\n", b"\r\n", b"\r", b"\0\0", b"\n\n", b"\r\n\0"])
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"plain text", "plain text"),
        (b"<13>tag: msg", "msg"),
        (b"<13>Nov 27 10:00:00 tag[1]: msg", "msg"),
        (b"<13>1 - - app - - - msg", "msg"),
        (b'{"message": "msg"}', "msg"),
    ],
)
def test_trailing_nul_newline_crlf_stripped(data: bytes, message: str, suffix: bytes) -> None:
    assert parse_datagram(data + suffix).message == message


def test_inner_newlines_kept() -> None:
    assert parse_datagram(b"<13>tag: one\ntwo\n").message == "one\ntwo"
    assert parse_datagram(b"one\r\ntwo\r\n").message == "one\r\ntwo"


# --- octet counting ------------------------------------------------------------


def test_octet_count_matching_is_dropped() -> None:
    body = b"<13>1 - - app - - - hello"
    entry = parse_datagram(b"%d " % len(body) + body)
    assert (entry.format, entry.ident, entry.message) == ("rfc5424", "app", "hello")


@pytest.mark.parametrize("count", [5, 24, 26, 9999999])
def test_octet_count_not_matching_is_plain_text(count: int) -> None:
    body = b"<13>1 - - app - - - hello"  # 25 bytes
    data = b"%d " % count + body
    entry = parse_datagram(data)
    assert (entry.format, entry.malformed, entry.message) == ("plain", False, data.decode())


def test_digits_without_pri_are_plain_text() -> None:
    entry = parse_datagram(b"42 is the answer")
    assert (entry.format, entry.malformed, entry.message) == ("plain", False, "42 is the answer")


def test_octet_count_with_bad_pri_is_malformed_whole() -> None:
    data = b"6 <999>x"
    entry = parse_datagram(data)
    assert (entry.format, entry.malformed, entry.message) == ("plain", True, "6 <999>x")


# --- RFC 3164 and the local variants ---------------------------------------------


def test_rfc3164_space_padded_day() -> None:
    # glibc's "%h %e %T": a single-digit day is padded with a space.
    entry = parse_datagram(b"<30>Nov  7 01:02:03 cron[12]: job done")
    assert entry_fields(entry, ["timestamp", "ident", "pid", "hostname", "message", "facility", "priority"]) == {
        "timestamp": "Nov  7 01:02:03",
        "ident": "cron",
        "pid": 12,
        "hostname": None,
        "message": "job done",
        "facility": 3,
        "priority": 6,
    }


def test_rfc3164_colon_in_message_stays_in_message() -> None:
    entry = parse_datagram(b"<13>Nov 27 10:00:00 su: x: y")
    assert (entry.ident, entry.hostname, entry.message) == ("su", None, "x: y")
    entry = parse_datagram(b"<13>Nov 27 10:00:00 host1 su[5]: x: y")
    assert (entry.ident, entry.pid, entry.hostname, entry.message) == ("su", 5, "host1", "x: y")


def test_rfc3164_non_numeric_pid_kept_in_fields() -> None:
    entry = parse_datagram(b"<13>Nov 27 10:00:00 app[worker-3]: msg")
    assert (entry.ident, entry.pid, entry.fields, entry.message) == ("app", None, {"procid": "worker-3"}, "msg")


def test_no_timestamp_tag() -> None:
    entry = parse_datagram(b"<14>myapp[77]: started")
    assert (entry.format, entry.ident, entry.pid, entry.timestamp, entry.message) == (
        "rfc3164",
        "myapp",
        77,
        None,
        "started",
    )


def test_no_timestamp_no_tag() -> None:
    entry = parse_datagram(b"<14>disk almost full")
    assert (entry.format, entry.ident, entry.message) == ("rfc3164", None, "disk almost full")


@pytest.mark.parametrize("data", [b"<13>tag[\xc2\xb2]: x", b"<13>1 - - app \xc2\xb2 - - x"], ids=["rfc3164", "rfc5424"])
def test_unicode_digit_pid_does_not_raise(data: bytes) -> None:
    entry = parse_datagram(data)
    assert (entry.pid, entry.fields, entry.message) == (None, {"procid": "\u00b2"}, "x")


# Third-party syslog vectors: every field kept (RFC 5424 §7.2.1 repeated names, a repeated
# SD-ID, which §6.3.2 forbids but senders send), RFC 3339 stamps in a BSD header, a bare stamp.
KEEPS_EVERY_FIELD = [
    (
        b'<165>1 - - - - - [origin ip="192.0.2.1" ip="192.0.2.129"]',
        {"structured_data": {"origin": {"ip": ["192.0.2.1", "192.0.2.129"]}}, "message": ""},
    ),
    (
        b'<165>1 - - - - - [origin ip="a" software="x" ip="b" ip="c"] m',
        {"structured_data": {"origin": {"ip": ["a", "b", "c"], "software": "x"}}, "message": "m"},
    ),
    (
        b'<165>1 - - - - - [a@1 x="1"][b@2 y="2"][a@1 x="3" z="4"] msg',
        {"structured_data": {"a@1": {"x": ["1", "3"], "z": "4"}, "b@2": {"y": "2"}}, "message": "msg"},
    ),
    (
        b'<165>1 - - - - - [a@1 k="v"][a@1 k="v"]',
        {"structured_data": {"a@1": {"k": ["v", "v"]}}, "message": ""},
    ),
    (
        b"<28>2019-12-02T16:49:23+02:00 host app[23410]: Test",
        {"timestamp": "2019-12-02T16:49:23+02:00", "hostname": "host", "ident": "app", "pid": 23410, "message": "Test"},
    ),
    (
        b"<28>2019-12-02T16:49:23.123456Z app[7]: Test",
        {"timestamp": "2019-12-02T16:49:23.123456Z", "hostname": None, "ident": "app", "pid": 7, "message": "Test"},
    ),
    (
        b"<28>2019-12-02T16:49:23-05:00 host app: x: y",
        {"timestamp": "2019-12-02T16:49:23-05:00", "hostname": "host", "ident": "app", "pid": None, "message": "x: y"},
    ),
    (
        b"<14>Aug 30 23:00:05",
        {"timestamp": "Aug 30 23:00:05", "ident": None, "message": "", "format": "rfc3164"},
    ),
    (
        b"<14>2019-12-02T16:49:23Z",
        {"timestamp": "2019-12-02T16:49:23Z", "ident": None, "message": "", "format": "rfc3164"},
    ),
    (  # no zone: local time, still a stamp rather than the tag "2019-12-02T16"
        b"<14>2019-12-02T16:49:23 app: m",
        {"timestamp": "2019-12-02T16:49:23", "ident": "app", "message": "m"},
    ),
]


@pytest.mark.parametrize(("data", "expect"), KEEPS_EVERY_FIELD, ids=[d[:40].decode() for d, _ in KEEPS_EVERY_FIELD])
def test_every_field_is_kept(data: bytes, expect: dict[str, Any]) -> None:
    for suffix in (b"", b"\n", b"\0"):
        entry = parse_datagram(data + suffix)
        assert entry_fields(entry, expect) == expect
        assert entry == parse_general(data + suffix)
        json.dumps(entry.structured_data)  # stored as JSON


# --- RFC 5424 --------------------------------------------------------------------


def test_rfc5424_full() -> None:
    data = b'<165>1 2026-11-27T10:00:00.003Z mymachine.example.com evntslog 42 ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] An application event'
    entry = parse_datagram(data)
    assert entry._asdict() == {
        "priority": 5,
        "facility": 20,
        "ident": "evntslog",
        "pid": 42,
        "hostname": "mymachine.example.com",
        "msgid": "ID47",
        "timestamp": "2026-11-27T10:00:00.003Z",
        "structured_data": {"exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"}},
        "fields": None,
        "message": "An application event",
        "format": "rfc5424",
        "malformed": False,
    }


def test_rfc5424_bom_stripped() -> None:
    # RFC 5424 §6.4: the BOM says "UTF-8"; it is not part of the message.
    entry = parse_datagram(b"<13>1 - - app - - - \xef\xbb\xbfgr\xc3\xbc\xc3\x9fe")
    assert entry.message == "grüße"


def test_rfc5424_bom_after_sd_stripped() -> None:
    entry = parse_datagram(b'<13>1 - - app - - [a@1 k="v"] \xef\xbb\xbfhello')
    assert (entry.structured_data, entry.message) == ({"a@1": {"k": "v"}}, "hello")


def test_rfc5424_sd_escapes() -> None:
    # RFC 5424 §6.3.3: '"', '\' and ']' are escaped with '\'; any other '\' is kept as is.
    data = rb'<13>1 - - app - - [ex@1 q="say \"hi\"" bs="C:\\dir" br="[x\]" other="a\nb" sp="a b" empty=""] msg'
    entry = parse_datagram(data)
    assert entry.structured_data == {
        "ex@1": {"q": 'say "hi"', "bs": "C:\\dir", "br": "[x]", "other": "a\\nb", "sp": "a b", "empty": ""}
    }
    assert entry.message == "msg"


def test_rfc5424_several_sd_elements() -> None:
    data = b'<13>1 - - app - - [a@1 x="1"][b@2 y="2" z="3"][c@3] the message'
    entry = parse_datagram(data)
    assert entry.structured_data == {"a@1": {"x": "1"}, "b@2": {"y": "2", "z": "3"}, "c@3": {}}
    assert entry.message == "the message"


def test_rfc5424_sd_without_message() -> None:
    entry = parse_datagram(b'<13>1 - - app - - [a@1 x="1"]')
    assert (entry.structured_data, entry.message) == ({"a@1": {"x": "1"}}, "")


def test_rfc5424_nil_values_are_none() -> None:
    entry = parse_datagram(b"<13>1 - - - - - -")
    assert entry_fields(entry, ["ident", "pid", "hostname", "msgid", "timestamp", "structured_data", "fields"]) == {
        "ident": None,
        "pid": None,
        "hostname": None,
        "msgid": None,
        "timestamp": None,
        "structured_data": None,
        "fields": None,
    }
    assert (entry.format, entry.message, entry.priority, entry.facility) == ("rfc5424", "", 5, 1)


def test_rfc5424_nil_with_message() -> None:
    entry = parse_datagram(b"<13>1 - - - - - - only the message")
    assert (entry.format, entry.ident, entry.message) == ("rfc5424", None, "only the message")


def test_rfc5424_message_keeps_leading_and_inner_spaces() -> None:
    entry = parse_datagram(b"<13>1 - - app - - -  two  spaces")
    assert entry.message == " two  spaces"


def test_rfc5424_non_numeric_procid_kept_in_fields() -> None:
    entry = parse_datagram(b"<13>1 2026-11-27T10:00:00Z host app worker-3 - - msg")
    assert (entry.format, entry.pid, entry.fields, entry.message) == ("rfc5424", None, {"procid": "worker-3"}, "msg")


def test_rfc5424_numeric_procid_is_pid() -> None:
    entry = parse_datagram(b"<13>1 2026-11-27T10:00:00Z host app 4242 - - msg")
    assert (entry.pid, entry.fields) == (4242, None)


@pytest.mark.parametrize("data", [b"<13>1 apple", b"<13>1 a b c d e not-sd msg", b"<13>1 a b c d e [broken msg"])
def test_not_quite_rfc5424_falls_back_without_losing_text(data: bytes) -> None:
    entry = parse_datagram(data)
    assert entry.format == "rfc3164"
    assert entry.malformed is False
    assert entry.message == data[4:].decode()


# --- JSON ----------------------------------------------------------------------


def test_json_full() -> None:
    data = (
        b'{"message": "m", "priority": "err", "facility": "daemon", "ident": "app", "pid": 7, '
        b'"hostname": "h", "msgid": "M1", "timestamp": "2026-11-27T10:00:00Z", "fields": {"k": [1, 2]}}'
    )
    assert parse_datagram(data)._asdict() == {
        "priority": 3,
        "facility": 3,
        "ident": "app",
        "pid": 7,
        "hostname": "h",
        "msgid": "M1",
        "timestamp": "2026-11-27T10:00:00Z",
        "structured_data": None,
        "fields": {"k": [1, 2]},
        "message": "m",
        "format": "json",
        "malformed": False,
    }


@pytest.mark.parametrize(
    ("priority", "expected"), [(0, 0), (7, 7), ("3", 3), ("warning", 4), ("WARN", 4), ("error", 3), ("debug", 7)]
)
def test_json_priority_number_or_name(priority: Any, expected: int) -> None:
    entry = parse_datagram(json.dumps({"message": "m", "priority": priority}).encode())
    assert (entry.format, entry.priority) == ("json", expected)


@pytest.mark.parametrize(
    ("facility", "expected"), [(0, 0), (23, 23), ("19", 19), ("daemon", 3), ("LOCAL3", 19), ("security", 4)]
)
def test_json_facility_number_or_name(facility: Any, expected: int) -> None:
    entry = parse_datagram(json.dumps({"message": "m", "facility": facility}).encode())
    assert (entry.format, entry.facility) == ("json", expected)


def test_json_defaults_to_user_info() -> None:
    entry = parse_datagram(b'{"message": "m"}')
    assert (entry.format, entry.priority, entry.facility, entry.fields) == ("json", 6, 1, None)


@pytest.mark.parametrize(
    "data",
    [
        b'["message", "m"]',
        b'[{"message": "m"}]',
        b'"just a string"',
        b"null",
        b'{"priority": 3}',
        b'{"message": 42}',
        b'{"message": null}',
        b'{"message": ["m"]}',
        b'{"message": "m", "priority": 8}',
        b'{"message": "m", "priority": -1}',
        b'{"message": "m", "priority": "loud"}',
        b'{"message": "m", "priority": true}',
        b'{"message": "m", "priority": 3.0}',
        b'{"message": "m", "priority": null}',
        b'{"message": "m", "facility": 24}',
        b'{"message": "m", "facility": "local8"}',
        b'{"message": "m"',
        b'{"message": "m"} trailing',
        b"{not json}",
    ],
)
def test_json_that_is_not_a_log_entry_is_plain(data: bytes) -> None:
    entry = parse_datagram(data)
    assert (entry.format, entry.malformed, entry.message) == ("plain", False, data.decode())
    assert (entry.priority, entry.facility, entry.fields) == (5, 1, None)


def test_json_deeply_nested_is_plain() -> None:
    data = b'{"message": "m", "fields": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    entry = parse_datagram(data)
    assert (entry.format, entry.malformed) == ("plain", True)  # stored as text, counted malformed (DESIGN.md)


def test_json_extra_keys_land_in_fields() -> None:
    entry = parse_datagram(b'{"message": "m", "request_id": "r-1", "user": {"id": 3}, "fields": {"path": "/x"}}')
    assert entry.fields == {"request_id": "r-1", "user": {"id": 3}, "path": "/x"}
    entry = parse_datagram(b'{"message": "m", "request_id": "r-1"}')
    assert entry.fields == {"request_id": "r-1"}


def test_json_fields_not_an_object_is_kept() -> None:
    assert parse_datagram(b'{"message": "m", "fields": [1, 2]}').fields == {"fields": [1, 2]}
    assert parse_datagram(b'{"message": "m", "fields": null}').fields is None


@pytest.mark.parametrize("pid", [b'"42"', b"-1", b"true", b"4.2", b"2147483648", b"null"])
def test_json_bad_pid_is_none(pid: bytes) -> None:
    entry = parse_datagram(b'{"message": "m", "pid": ' + pid + b"}")
    assert (entry.format, entry.pid) == ("json", None)


def test_json_non_string_ident_is_none() -> None:
    entry = parse_datagram(b'{"message": "m", "ident": 5, "hostname": [], "msgid": {}, "timestamp": 1}')
    assert (entry.format, entry.ident, entry.hostname, entry.msgid, entry.timestamp) == ("json", None, None, None, None)


# --- property --------------------------------------------------------------------


# Arbitrary bytes, and arbitrary bytes behind the starts that steer the parser into each form.
PREFIXES = [b"<13>", b"<165>1 ", b"<13>Nov 27 10:00:00 ", b"<13>1 - - app - - [", b"25 <13>", b'{"message": "', b"{"]
DATAGRAM_BYTES = st.one_of(
    st.binary(min_size=1, max_size=512),
    st.tuples(st.sampled_from(PREFIXES), st.binary(max_size=256)).map(b"".join),
)


@settings(max_examples=2000, deadline=None)
@given(DATAGRAM_BYTES)
def test_parse_datagram_never_raises(data: bytes) -> None:
    entry = parse_datagram(data)
    assert isinstance(entry, LogEntry)
    assert isinstance(entry.message, str)
    assert 0 <= entry.priority <= 7
    assert 0 <= entry.facility <= 23
    assert entry.format in {"rfc5424", "rfc3164", "json", "plain"}


# --- the fast path agrees with the general one ---------------------------------

SYSLOG_LIKE = st.builds(
    lambda pri, ts, tag, pid, msg, tail: b"<%s>%s %s%s:%s%s" % (pri, ts, tag, pid, msg, tail),
    st.sampled_from([b"0", b"13", b"191", b"192", b"013", b"999"]),
    st.sampled_from([b"Nov 27 10:00:00", b"Jan  1 00:00:00", b"nov 27 10:00:00", b"Nov 27 10:00"]),
    st.binary(min_size=0, max_size=12) | st.text("abc-_.:[]/ \u00e9", max_size=12).map(str.encode),
    st.sampled_from([b"", b"[1]", b"[4194304]", b"[12345678901]", b"[x]", b"[]"]),
    st.binary(max_size=30) | st.text(max_size=30).map(str.encode),
    st.sampled_from([b"", b"\0", b"\n", b"\r\n"]),
)


@settings(max_examples=3000, deadline=None)
@given(SYSLOG_LIKE | DATAGRAM_BYTES)
def test_fast_path_same_as_general(data: bytes) -> None:
    assert parse_datagram(data) == parse_general(data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"message": "lone \\ud800"}',
        b'{"message": "x", "fields": {"k": "\\udfff"}}',
        b'{"message": "x", "fields": {"n": NaN}}',
        b'{"message": "x", "fields": {"n": -Infinity}}',
        b'{"message": "x", "fields": {"n": 1e999}}',
    ],
)
def test_json_that_could_not_go_out_again_is_kept_as_plain_text(data: bytes) -> None:
    entry = parse_datagram(data)
    assert (entry.format, entry.message, entry.fields) == ("plain", data.decode(), None)


def test_a_json_datagram_nested_past_64_is_plain_text_and_malformed() -> None:
    """DESIGN.md "Limits" (issue #10 item 7): 64 deep is JSON, 65 is kept as text and counted."""

    def nested(depth: int) -> bytes:
        return b'{"message": "m", "fields": {"x": ' + b"[" * (depth - 2) + b"]" * (depth - 2) + b"}}"

    ok = parse_datagram(nested(64))
    assert (ok.format, ok.malformed, ok.message) == ("json", False, "m")
    deep = parse_datagram(nested(65))
    assert (deep.format, deep.malformed) == ("plain", True)
    assert deep.message == nested(65).decode()
    far = parse_datagram(nested(5000))  # past Python's recursion limit too
    assert (far.format, far.malformed) == ("plain", True)
