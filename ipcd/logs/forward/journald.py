"""A stored entry in journald's native protocol, and sending it as sd_journal_send does.

The native protocol (systemd.journal-fields(7), "Native Protocol" in
systemd's docs): one datagram per entry on /run/systemd/journal/socket, a
field per line, `NAME=value\\n`, or for a value holding a newline
`NAME\\n` + its length as 64-bit little endian + the value + `\\n`.  An
entry too big for one datagram goes in a sealed memfd passed with
SCM_RIGHTS, as `sd_journal_sendv(3)` does.  Claimed fields go as
`SYSLOG_IDENTIFIER`, `SYSLOG_PID`, `SYSLOG_FACILITY`, `PRIORITY`; the
trusted ones as `IPCD_SENDER_UID/GID/PID/COMM/UNIT` (journald adds its own
`_PID`, `_UID`... for ipcd itself), and `IPCD_ID` is the entry's id.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from typing import Any

from ipcd.logs.store import StoredEntry

# fcntl(2) file seals; in the fcntl module only from Python 3.12 on.
F_ADD_SEALS = getattr(fcntl, "F_ADD_SEALS", 1033)
SEALS = 0x1 | 0x2 | 0x4 | 0x8  # F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE


def _field(name: str, value: Any) -> bytes:
    data = str(value).encode("utf-8", "replace")
    if b"\n" in data:
        return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return name.encode() + b"=" + data + b"\n"


def format_entry(e: StoredEntry) -> bytes:
    fields: list[tuple[str, Any]] = [
        ("MESSAGE", e.message),
        ("PRIORITY", e.priority),
        ("SYSLOG_FACILITY", e.facility),
        ("SYSLOG_IDENTIFIER", e.ident),
        ("SYSLOG_PID", e.pid),
        ("SYSLOG_HOSTNAME", e.hostname),
        ("SYSLOG_TIMESTAMP", e.timestamp),
        ("IPCD_ID", e.id),
        ("IPCD_SENDER_UID", e.sender_uid),
        ("IPCD_SENDER_GID", e.sender_gid),
        ("IPCD_SENDER_PID", e.sender_pid),
        ("IPCD_SENDER_COMM", e.sender_comm),
        ("IPCD_SENDER_UNIT", e.sender_unit),
    ]
    return b"".join(_field(k, v) for k, v in fields if v is not None and v != "")


def send(sock: socket.socket, data: bytes) -> None:
    """Send one entry on a connected datagram socket; a big one through a memfd.

    Raises BlockingIOError when journald's queue is full (try again when the
    socket is writable) and OSError when the journal is not there.
    """
    try:
        sock.send(data)
        return
    except OSError as e:
        if e.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
            raise
    fd = os.memfd_create("journal-data", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, data)  # a memfd takes it whole
        fcntl.fcntl(fd, F_ADD_SEALS, SEALS)  # journald takes only a sealed memfd
        sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])
    finally:
        os.close(fd)
