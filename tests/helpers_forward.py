"""A stored entry to format, and journald's native protocol read back, for the forwarding tests."""

from __future__ import annotations

import struct

from ipcd.logs.store import StoredEntry


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
