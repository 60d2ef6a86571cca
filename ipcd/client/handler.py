"""The log socket from Python: `LogHandler` for `logging`, `send_datagram` for bytes.

Both send datagrams to the log socket as any program may (DESIGN.md "Log
socket"); `LogHandler` writes the JSON form, with a record's `extra` fields
as the entry's `fields`.
"""

from __future__ import annotations

import json
import logging
import socket

from ipcd.client.resolve import explain, resolve_log_socket
from ipcd.wire.priority import severity


class LogHandler(logging.Handler):
    """Send `logging` records to ipcd's log socket as JSON datagrams.

    A record's `extra` fields go to the entry's `fields`.  The datagram is
    sent non-blocking: if ipcd is down or its queue is full, the record is
    handed to `handleError` (logging's usual path), never blocking the program.
    """

    _STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}
    # logging's levels as syslog severities; a level between two takes the lower one's.
    _SEVERITIES = (
        (logging.CRITICAL, severity("crit")),
        (logging.ERROR, severity("err")),
        (logging.WARNING, severity("warning")),
        (logging.INFO, severity("info")),
    )

    def __init__(self, path: str | None = None, ident: str | None = None, block: bool = False) -> None:
        super().__init__()
        self.path = resolve_log_socket(path)
        self.ident = ident
        self.block = block
        self._sock: socket.socket | None = None

    def _priority(self, levelno: int) -> int:
        return next((sev for level, sev in self._SEVERITIES if levelno >= level), severity("debug"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {k: v for k, v in vars(record).items() if k not in self._STANDARD}
            doc = {
                "message": self.format(record),
                "priority": self._priority(record.levelno),
                "ident": self.ident or record.name,
                "pid": record.process,
                "fields": {"logger": record.name, **fields},
            }
            data = json.dumps(doc, default=str, ensure_ascii=False).encode()
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(self.block)
            self._sock.sendto(data, self.path)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        super().close()


def send_datagram(data: bytes, path: str) -> None:
    """One datagram to the log socket (blocking, like glibc's syslog)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.sendto(data, path)
        except OSError as e:
            raise explain(e, path) from None
