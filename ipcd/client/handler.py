"""The log socket from Python: `LogHandler` for `logging`, `send_datagram` for bytes.

Both send datagrams to the log socket as any program may (DESIGN.md "Log
socket"), after checking that the path to it is trusted (`trust`);
`LogHandler` writes the JSON form, with a record's `extra` fields as the
entry's `fields`.
"""

from __future__ import annotations

import json
import logging
import socket
import struct

from ipcd.client.errors import IpcdError
from ipcd.client.resolve import explain, resolve_log_socket
from ipcd.client.trust import check_socket_path
from ipcd.wire.priority import severity

DEFAULT_TIMEOUT_S = 0.5


class LogHandler(logging.Handler):
    """Send `logging` records to ipcd's log socket as JSON datagrams.

    A record's `extra` fields go to the entry's `fields`.  It never raises
    into the program: not when it is made with no daemon running (the
    socket is found at the first record, and again after a failure), not
    when a record cannot be sent, not at close.  Each send waits at most
    `timeout_s` (0.5 s) for room in the socket's queue, so a burst is not
    lost while ipcd keeps up, and a stuck ipcd costs a program at most that
    per record (`timeout_s=None`: wait as long as it takes; 0: never wait).
    A record that cannot be sent is counted in `dropped`; the first of a
    run of failures goes to `handleError` (logging's usual report on
    stderr), the rest only to the count, until a send succeeds again.
    """

    _STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}
    # logging's levels as syslog severities; a level between two takes the lower one's.
    _SEVERITIES = (
        (logging.CRITICAL, severity("crit")),
        (logging.ERROR, severity("err")),
        (logging.WARNING, severity("warning")),
        (logging.INFO, severity("info")),
    )

    def __init__(
        self, path: str | None = None, ident: str | None = None, timeout_s: float | None = DEFAULT_TIMEOUT_S
    ) -> None:
        super().__init__()
        self._given = path
        self.path: str | None = path  # None until found ($IPCD_LOG_SOCKET, else beside the control socket)
        if path is None:
            try:
                self.path = resolve_log_socket(None)
            except IpcdError:
                pass  # no daemon yet: found at the first record
        self.ident = ident
        self.timeout_s = timeout_s
        self.dropped = 0
        self._sock: socket.socket | None = None
        self._failing = False
        self._checked = False

    def _priority(self, levelno: int) -> int:
        return next((sev for level, sev in self._SEVERITIES if levelno >= level), severity("debug"))

    def _encode(self, record: logging.LogRecord) -> bytes:
        fields = {k: v for k, v in vars(record).items() if k not in self._STANDARD}
        doc = {
            "message": self.format(record),
            "priority": self._priority(record.levelno),
            "ident": self.ident or record.name,
            "pid": record.process,
            "fields": {"logger": record.name, **fields},
        }
        return json.dumps(doc, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass")

    def _target(self) -> str:
        """The log socket, found again and its path checked again after a failure."""
        if self.path is None or self._failing or not self._checked:
            self.path = resolve_log_socket(self._given)
            check_socket_path(self.path)
            self._checked = True
        return self.path

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = self._encode(record)
            path = self._target()
            if self._sock is None:
                self._sock = _datagram_socket(self.timeout_s)
            try:
                self._sock.sendto(data, path)
            except OSError as e:
                raise explain(e, path) from None
            self._failing = False
        except (IpcdError, OSError, ValueError, TypeError, RecursionError):
            self.dropped += 1
            if not self._failing:
                self._failing = True
                self.handleError(record)
        except Exception:
            self.dropped += 1
            self.handleError(record)

    def close(self) -> None:
        try:
            sock, self._sock = self._sock, None
            if sock is not None:
                sock.close()
        finally:
            super().close()


def _datagram_socket(timeout_s: float | None) -> socket.socket:
    """A blocking datagram socket whose sends wait at most `timeout_s` (SO_SNDTIMEO; None: no limit).

    SO_SNDTIMEO, not Python's timeout: the kernel then waits on the
    receiver's queue, where poll(2) on an unconnected AF_UNIX datagram
    socket would say "writable" at once and Python would spin.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    if timeout_s == 0:
        sock.setblocking(False)
    elif timeout_s is not None:
        sec = int(timeout_s)
        usec = max(1, int((timeout_s - sec) * 1e6)) if sec == 0 else int((timeout_s - sec) * 1e6)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("@ll", sec, usec))
    return sock


def send_datagram(data: bytes, path: str) -> None:
    """One datagram to the log socket (blocking, like glibc's syslog), once its path is trusted."""
    try:
        check_socket_path(path)
    except OSError as e:
        raise explain(e, path) from None
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.sendto(data, path)
        except OSError as e:
            raise explain(e, path) from None
