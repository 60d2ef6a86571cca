"""`ipcd.logs.forward.journald`: entries in journald's native protocol, read back."""

from __future__ import annotations

from helpers_forward import entry, parse_native

from ipcd.logs.forward import journald


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
