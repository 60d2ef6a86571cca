"""`ipcd.logs.forward.rfc5424`: entries formatted as RFC 5424 with RFC 6587 framing, fed whole."""

from __future__ import annotations

import json

import pytest
from helpers_forward import entry

from ipcd.logs.forward import rfc5424
from ipcd.wire.logparse import parse_datagram


def test_rfc5424_header_and_trusted_structured_data() -> None:
    msg = rfc5424.format_entry(entry(), "host1", 8192)
    assert msg == (
        b'<131>1 2026-11-18T11:06:40.250000Z host1 myapp 42 - [ipcd@32473 id="7" uid="1000" gid="100" pid="4242" '
        b'comm="myapp" unit="myapp.service"] hello'
    )
    parsed = parse_datagram(msg)  # ipcd's own parser reads it back
    assert (parsed.format, parsed.priority, parsed.facility, parsed.ident, parsed.pid) == (
        "rfc5424",
        3,
        16,
        "myapp",
        42,
    )
    assert parsed.structured_data == {
        "ipcd@32473": {"id": "7", "uid": "1000", "gid": "100", "pid": "4242", "comm": "myapp", "unit": "myapp.service"}
    }
    assert parsed.message == "hello"


def test_rfc5424_escapes_param_values_and_keeps_the_senders_structured_data() -> None:
    sd = json.dumps({"ex@1": {"a": 'x"y]z\\w'}, "ipcd@32473": {"uid": "0"}})  # a forged ipcd element is dropped
    msg = rfc5424.format_entry(entry(sender_comm='a"b]c\\', sender_unit=None, structured_data=sd), "h", 8192)
    assert b'comm="a\\"b\\]c\\\\"]' in msg  # RFC 5424 6.3.3: '"', '\' and ']' escaped
    assert b"unit=" not in msg  # no unit: no param
    assert b'[ex@1 a="x\\"y\\]z\\\\w"]' in msg
    assert msg.count(b"[ipcd@32473") == 1
    parsed = parse_datagram(msg)
    assert parsed.structured_data is not None
    assert parsed.structured_data["ex@1"] == {"a": 'x"y]z\\w'}
    assert parsed.structured_data["ipcd@32473"]["comm"] == 'a"b]c\\'


def test_rfc5424_header_fields_are_printable_ascii_and_bounded() -> None:
    msg = rfc5424.format_entry(entry(ident="my app\u00e9" + "x" * 60, msgid="", hostname="h\tost"), "h", 8192)
    head = msg.split(b" [", 1)[0].split(b" ")
    assert head[2] == b"h_ost"
    assert head[3] == (b"my_app_" + b"x" * 60)[:48]  # APP-NAME: 48 at most
    assert head[5] == b"-"  # empty MSGID is the NILVALUE


@pytest.mark.parametrize(
    ("claimed", "expected"),
    [
        (None, "2026-11-18T11:06:40.250000Z"),
        ("2026-11-27T10:00:00.5+01:00", "2026-11-27T10:00:00.500000+01:00"),
        ("2026-11-27T10:00:00Z", "2026-11-27T10:00:00.000000+00:00"),
        ("Nov 27 10:00:00", "2026-11-18T11:06:40.250000Z"),  # RFC 3164 has no year or zone: the received time
        ("2026-11-27T10:00:00", "2026-11-18T11:06:40.250000Z"),  # no zone: the received time
    ],
)
def test_rfc5424_timestamp(claimed: str | None, expected: str) -> None:
    assert rfc5424.timestamp(claimed, 1795000000.25) == expected


def test_rfc5424_cuts_the_message_at_a_character_boundary() -> None:
    msg = rfc5424.format_entry(entry(message="\u00e9" * 5000), "h", 2048)
    assert len(msg) <= 2048
    msg.decode("utf-8")  # never half a character
    assert len(msg) >= 2046


def test_a_cut_is_counted_once_at_its_edge() -> None:
    cuts: list[int] = []

    def fmt(**fields: object) -> bytes:
        return rfc5424.format_entry(entry(**fields), "h", 2048, lambda: cuts.append(1))

    head = len(fmt(message=""))
    exact = fmt(message="x" * (2048 - head - 1))  # the MSG fills max_message_bytes to the byte
    assert len(exact) == 2048 and not cuts
    assert len(fmt(message="x" * (2048 - head))) == 2048 and len(cuts) == 1  # one byte more: cut
    sd = json.dumps({"ex@1": {"a": "v" * 3000}})
    assert b"ex@1" not in fmt(message="short", structured_data=sd) and len(cuts) == 2  # left out whole
    assert len(fmt(message="y" * 5000, structured_data=sd)) == 2048 and len(cuts) == 3  # both: once


def test_octet_counting_frame() -> None:
    assert rfc5424.frame(b"<13>1 - - - - - - hi") == b"20 <13>1 - - - - - - hi"
    assert rfc5424.frame("é".encode()) == b"2 \xc3\xa9"  # octets, not characters
