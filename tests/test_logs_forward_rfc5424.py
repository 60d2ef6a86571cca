"""The forwarding formats, fed whole: RFC 5424 (with RFC 6587 framing), journald's native protocol, [[forward]] config."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import BIN

from ipcd.config import ForwardConfig, parse
from ipcd.errors import ConfigError
from ipcd.logs.forward import journald, rfc5424
from ipcd.logs.store import StoredEntry
from ipcd.wire.logparse import parse_datagram


def entry(**kw: object) -> StoredEntry:
    base: dict[str, object] = {
        "id": 7,
        "time": 1795000000.25,
        "timestamp": None,
        "priority": 3,
        "facility": 16,
        "ident": "myapp",
        "pid": 42,
        "hostname": None,
        "msgid": None,
        "structured_data": None,
        "fields": None,
        "message": "hello",
        "format": "rfc3164",
        "truncated": 0,
        "sender_pid": 4242,
        "sender_uid": 1000,
        "sender_gid": 100,
        "sender_comm": "myapp",
        "sender_unit": "myapp.service",
    }
    base.update(kw)
    return StoredEntry(**base)  # type: ignore[arg-type]


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


def test_octet_counting_frame() -> None:
    assert rfc5424.frame(b"<13>1 - - - - - - hi") == b"20 <13>1 - - - - - - hi"
    assert rfc5424.frame("é".encode()) == b"2 \xc3\xa9"  # octets, not characters


def parse_native(data: bytes) -> dict[str, str]:
    """journald's native protocol, read back (systemd's "Native Journal Protocol")."""
    out, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            out[k.decode()], i = v.decode(), nl + 1
        else:
            (n,) = struct.unpack_from("<Q", data, nl + 1)
            out[line.decode()] = data[nl + 9 : nl + 9 + n].decode()
            assert data[nl + 9 + n : nl + 10 + n] == b"\n"
            i = nl + 10 + n
    return out


def test_journald_fields_and_a_multiline_message() -> None:
    data = journald.format_entry(entry(message="line 1\nline 2", sender_unit=None))
    fields = parse_native(data)
    assert fields == {
        "MESSAGE": "line 1\nline 2",
        "PRIORITY": "3",
        "SYSLOG_FACILITY": "16",
        "SYSLOG_IDENTIFIER": "myapp",
        "SYSLOG_PID": "42",
        "IPCD_ID": "7",
        "IPCD_SENDER_UID": "1000",
        "IPCD_SENDER_GID": "100",
        "IPCD_SENDER_PID": "4242",
        "IPCD_SENDER_COMM": "myapp",
    }


# -- [[forward]] in the config file --------------------------------------------------------

GOOD = b"""\
[[forward]]
name = "central"
type = "syslog"
address = "tls://logs.example:6514"
priority = "warning"
ident = ["sshd", "myapp"]
unit = ["myapp.service"]
uid = [0, 1000]
ca_file = "/etc/ssl/ca.pem"

[[forward]]
name = "journal"
type = "journald"
"""


def test_forward_tables_parse() -> None:
    cfg = parse(GOOD, "f.toml")
    assert cfg.forward == [
        ForwardConfig(
            name="central",
            type="syslog",
            address="tls://logs.example:6514",
            priority=4,
            ident=["sshd", "myapp"],
            unit=["myapp.service"],
            uid=[0, 1000],
            ca_file="/etc/ssl/ca.pem",
        ),
        ForwardConfig(name="journal", type="journald", address="unix:///run/systemd/journal/socket"),
    ]


@pytest.mark.parametrize(
    ("second", "line", "key", "why"),
    [
        ('name = "b"\ntype = "syslog"\naddress = "http://x:1"', 8, "forward[2].address", "is not tcp://HOST:PORT"),
        ('name = "b"\ntype = "syslog"\naddress = "tcp://x:70000"', 8, "forward[2].address", "port 70000"),
        ('name = "b"\ntype = "syslog"', 5, "forward[2].address", "missing"),
        ('name = "a"\ntype = "syslog"\naddress = "tcp://x:1"', 6, "forward[2].name", "a second target named 'a'"),
        ('type = "syslog"\naddress = "tcp://x:1"', 5, "forward[2].name", "missing"),
        ('name = "b"\naddress = "tcp://x:1"', 5, "forward[2].type", "missing"),
        ('name = "b"\ntype = "kafka"', 7, "forward[2].type", "must be one of syslog, journald"),
        ('name = "b c"\ntype = "syslog"', 6, "forward[2].name", "must be 1 to 64"),
        ('name = "b"\ntype = "syslog"\naddress = "tcp://x:1"\nca_file = "/ca"', 9, "forward[2].ca_file", "tls://"),
        ('name = "b"\ntype = "journald"\naddress = "tcp://x:1"', 8, "forward[2].address", "unix:///path"),
        ('name = "b"\ntype = "syslog"\npriority = "loud"', 8, "forward[2].priority", "level name"),
        ('name = "b"\ntype = "syslog"\nuid = ["root"]', 8, "forward[2].uid", "uids (numbers)"),
        ('name = "b"\ntype = "syslog"\nmax_message_bytes = 100', 8, "forward[2].max_message_bytes", "at least 2048"),
        ('name = "b"\ntype = "syslog"\nretries = 3', 8, "forward[2].retries", "unknown key"),
    ],
)
def test_forward_errors_name_the_table_line_and_key(second: str, line: int, key: str, why: str) -> None:
    text = f'[[forward]]\nname = "a"\ntype = "journald"\n\n[[forward]]\n{second}\n'
    with pytest.raises(ConfigError) as err:
        parse(text.encode(), "/etc/ipcd/ipcd.toml")
    assert str(err.value).startswith(f"/etc/ipcd/ipcd.toml:{line}: {key}: "), str(err.value)
    assert why in str(err.value)


def test_forward_must_be_an_array_of_tables() -> None:
    with pytest.raises(ConfigError, match=r"f.toml:2: forward: must be an array of tables: \[\[forward\]\]"):
        parse(b'\n[forward]\nname = "a"\n', "f.toml")


def test_check_config_shows_forward_errors(tmp_path: Path) -> None:
    conf = tmp_path / "ipcd.toml"
    conf.write_text('[[forward]]\nname = "a"\ntype = "syslog"\naddress = "tcp://[::1]:99999"\n')
    res = subprocess.run(
        [str(BIN / "ipcd"), "--config", str(conf), "--check-config"], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 78
    assert f"{conf}:4: forward[1].address: port 99999 is not 1-65535" in res.stderr
    conf.write_text(GOOD.decode())
    res = subprocess.run(
        [str(BIN / "ipcd"), "--config", str(conf), "--check-config"], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stderr
    assert [t["name"] for t in json.loads(res.stdout)["forward"]] == ["central", "journal"]
